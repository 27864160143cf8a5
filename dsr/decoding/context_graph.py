"""Aho-Corasick context graph for hotword biasing (icefall's ``ContextGraph`` semantics).

A trie of the hotword token sequences with failure links.  Decoding walks it one
token at a time; every token that extends a partial match earns a bonus, a partial
match that breaks gives its bonus back, and a completed phrase keeps its bonus.

Score invariant (what :meth:`ContextGraph.forward_one_step` maintains): after
tokens ``x_1..x_k`` the accumulated context score is

    sum of the rewards of every phrase occurrence ending at or before k
    + ``node_score`` of the current state (the pending partial-match bonus),

and :meth:`ContextGraph.finalize` subtracts the pending part, so a finished
hypothesis keeps exactly the rewards of the phrases it contains (overlapping
occurrences all count, e.g. "SHE" also rewards "HE").  While a phrase that is a
prefix of a longer one ("HE" in "HERS") has just been matched, its bonus is counted
twice (reward + pending); the pending half is returned if the longer phrase fails.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dsr.errors import DsrUserError


@dataclass(frozen=True)
class Phrase:
    """A hotword: its text (for logs), token ids and per-token bonus."""

    text: str
    tokens: tuple[int, ...]
    score: float


class ContextState:
    """A trie node.  ``node_score``: bonus accumulated from the root to here;
    ``output_score``: total reward of the phrases that end here, including those
    that are proper suffixes (reached through ``output``)."""

    __slots__ = ("token", "depth", "token_score", "node_score", "output_score", "phrase", "next", "fail", "output")

    def __init__(self, token: int, depth: int, token_score: float, node_score: float) -> None:
        self.token = token
        self.depth = depth
        self.token_score = token_score
        self.node_score = node_score
        self.output_score = 0.0
        self.phrase: Phrase | None = None  # set when a phrase ends at this node
        self.next: dict[int, ContextState] = {}
        self.fail: ContextState = self
        self.output: ContextState | None = None  # longest proper suffix that ends a phrase

    @property
    def is_end(self) -> bool:
        return self.phrase is not None

    def __repr__(self) -> str:
        return f"ContextState(token={self.token}, depth={self.depth}, node_score={self.node_score})"


class ContextGraph:
    """Hotword trie with failure links.

    Args:
        phrases: token-id sequences, one per hotword (non-empty, ids >= 0).
        scores: per-phrase bonus per token, None entries (or no list) mean ``default_score``.
            Where phrases share a prefix, each shared token gets the larger bonus (as icefall).
        texts: phrase texts, only used in the returned :class:`Phrase` objects.
        default_score: bonus per matched token (icefall's ``--context-score``).
    """

    def __init__(
        self,
        phrases: Sequence[Sequence[int]],
        scores: Sequence[float | None] | None = None,
        texts: Sequence[str] | None = None,
        default_score: float = 2.0,
    ) -> None:
        if scores is not None and len(scores) != len(phrases):
            raise ValueError(f"got {len(scores)} scores for {len(phrases)} phrases")
        if texts is not None and len(texts) != len(phrases):
            raise ValueError(f"got {len(texts)} texts for {len(phrases)} phrases")
        self.default_score = default_score
        self.root = ContextState(token=-1, depth=0, token_score=0.0, node_score=0.0)
        self.phrases: list[Phrase] = []
        for i, tokens in enumerate(phrases):
            given = scores[i] if scores is not None else None
            score = default_score if given is None else float(given)
            text = texts[i] if texts is not None else " ".join(map(str, tokens))
            self._insert(Phrase(text, tuple(int(t) for t in tokens), score))
        self._fill_fail_links()
        self._deltas: dict[ContextState, tuple[float, dict[int, float]]] = {}

    def _insert(self, phrase: Phrase) -> None:
        if not phrase.tokens:
            raise ValueError(f"hotword {phrase.text!r} has no tokens")
        if min(phrase.tokens) < 0:
            raise ValueError(f"hotword {phrase.text!r} has negative token ids {phrase.tokens}")
        node = self.root
        for tok in phrase.tokens:
            child = node.next.get(tok)
            if child is None:
                child = ContextState(tok, node.depth + 1, phrase.score, node.node_score + phrase.score)
                node.next[tok] = child
            elif phrase.score > child.token_score:
                # A shared prefix takes the larger bonus; node scores below are recomputed
                # in _fill_fail_links, because they depend on every phrase inserted.
                child.token_score = phrase.score
            node = child
        if node.phrase is None or phrase.score > node.phrase.score:
            node.phrase = phrase
        self.phrases.append(phrase)

    def _fill_fail_links(self) -> None:
        """Breadth-first: node scores, failure links (longest proper suffix in the trie),
        output links and output scores (a node's suffixes are shallower, so done first)."""
        queue: deque[ContextState] = deque()
        for child in self.root.next.values():
            child.node_score = child.token_score
            child.fail = self.root
            queue.append(child)
        while queue:
            node = queue.popleft()
            node.output = node.fail if node.fail.is_end else node.fail.output
            own = node.node_score if node.is_end else 0.0
            node.output_score = own + (node.output.output_score if node.output is not None else 0.0)
            for tok, child in node.next.items():
                child.node_score = node.node_score + child.token_score
                child.fail = self._goto(node.fail, tok)
                queue.append(child)

    def _goto(self, state: ContextState, token: int) -> ContextState:
        """Aho-Corasick transition: follow failure links until ``token`` extends a match."""
        while token not in state.next and state is not self.root:
            state = state.fail
        return state.next.get(token, self.root)

    def forward_one_step(self, state: ContextState, token: int) -> tuple[float, ContextState, Phrase | None]:
        """Consume ``token`` from ``state``.

        Returns:
            ``(score_delta, new_state, matched)``: the change of the hypothesis's context
            score (token bonus, minus the bonus of a broken partial match, plus the
            rewards of completed phrases); the new state; the longest phrase completed
            by this token, or None.
        """
        new = self._goto(state, token)
        delta = new.node_score - state.node_score + new.output_score
        matched = new.phrase if new.is_end else (new.output.phrase if new.output is not None else None)
        return delta, new, matched

    def token_deltas(self, state: ContextState) -> tuple[float, dict[int, float]]:
        """The ``score_delta`` of :meth:`forward_one_step` for every token at once, for ranking.

        Returns ``(default, special)``: ``special[token]`` for the tokens that extend a
        match (children along the failure chain, which ends at the root), ``default``
        (``-node_score``: the pending bonus is given back) for every other token.
        Cached per state; a search asks for the same few states every frame.
        """
        cached = self._deltas.get(state)
        if cached is None:
            tokens: set[int] = set()
            s = state
            while True:
                tokens.update(s.next)
                if s is self.root:
                    break
                s = s.fail
            cached = (-state.node_score, {t: self.forward_one_step(state, t)[0] for t in tokens})
            self._deltas[state] = cached
        return cached

    def finalize(self, state: ContextState) -> float:
        """Score change at the end of a hypothesis: give back the pending partial-match bonus."""
        return -state.node_score

    def sentence_score(self, tokens: Sequence[int]) -> float:
        """The finalised ``context_score`` a search gives a hypothesis of ``tokens``."""
        score, state = 0.0, self.root
        for tok in tokens:
            delta, state, _ = self.forward_one_step(state, tok)
            score += delta
        return score + self.finalize(state)

    def __len__(self) -> int:
        return len(self.phrases)


def read_hotwords(path: Path) -> list[tuple[str, float | None]]:
    """Parse a hotwords file: one phrase per line, optionally ``<TAB>score``.

    Blank lines and lines starting with ``#`` are skipped.  Raises DsrUserError
    naming the file and line for an unreadable score.
    """
    path = Path(path)
    if not path.is_file():
        raise DsrUserError(f"hotwords file {path} does not exist")
    out: list[tuple[str, float | None]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        text, sep, score_str = line.partition("\t")
        score: float | None = None
        if sep:
            try:
                score = float(score_str)
            except ValueError:
                raise DsrUserError(
                    f"{path}:{lineno}: score {score_str!r} is not a number (format: PHRASE<TAB>SCORE)"
                ) from None
        if not text.strip():
            raise DsrUserError(f"{path}:{lineno}: empty phrase before the tab")
        out.append((text.strip(), score))
    return out


def load_context_graph(path: Path, encode: Callable[[str], list[int]], default_score: float = 2.0) -> ContextGraph:
    """Build a :class:`ContextGraph` from a hotwords file, tokenising each phrase with ``encode``."""
    entries = read_hotwords(path)
    if not entries:
        raise DsrUserError(f"hotwords file {path} has no phrases")
    token_ids = []
    for text, _ in entries:
        ids = encode(text)
        if not ids:
            raise DsrUserError(f"hotword {text!r} in {path} tokenises to nothing; remove it")
        token_ids.append(ids)
    return ContextGraph(token_ids, [s for _, s in entries], [t for t, _ in entries], default_score=default_score)
