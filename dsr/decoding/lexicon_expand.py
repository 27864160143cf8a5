"""N-best expansion with a word list: respelled variants of out-of-lexicon words.

A small BPE model trained on little speech spells many words it has heard right but
never seen written: ``STRAMING``, ``CROUSHED``, ``CHIEFULY``.  Its beam search then
keeps variants of the same misspelling, so no n-best entry holds the real word and
no language model can pick it.  This module takes each out-of-lexicon word of the
search's best few hypotheses and proposes the lexicon words within a few character edits
(``STREAMING``, ``CROUCHED``), its splits into two words and its joins with a neighbour;
it scores every variant with the acoustic model itself, keeps the ones the audio supports,
and appends them (and their combinations) to the n-best list, where an LLM
(:mod:`dsr.lm.rescore`) can choose among them.

Scores stay comparable with the first pass: a variant's ``am_score`` is its parent's
search score plus the exact change in acoustic log-likelihood (full-sum RNN-T, or CTC
for a CTC-only search) that the respelling causes.  The first-pass hypotheses are kept
first and unchanged, so the 1-best (and its WER) does not move.

The lexicon is any word list, one word per line (e.g. ``/usr/share/dict/american-english``
from Debian's ``wamerican``, installed by ``tools/setup.sh --lm``): a list of English
words, not text, so it holds no evaluation sentence.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from dsr.decoding.beam_search import Hypothesis
from dsr.decoding.ctc_prefix import ctc_log_likelihood
from dsr.decoding.methods import EXPANDABLE_METHODS
from dsr.decoding.options import ExpandOptions
from dsr.errors import DsrUserError, OptionError
from dsr.lang.bpe import Tokenizer
from dsr.losses.mutual_information import mutual_information_recursion
from dsr.models.transducer import HybridTransducer

DEFAULT_LEXICON = Path("/usr/share/dict/american-english")
_WORD = re.compile(r"^[A-Z][A-Z']*$")


class Lexicon:
    """A set of upper-cased words with fuzzy lookup by character edit distance.

    Args:
        words: the words; case is folded to upper, entries that are not a single word of
            letters (and apostrophes) are skipped.
    """

    def __init__(self, words: Iterable[str]) -> None:
        self._words = sorted({w for w in (x.strip().upper() for x in words) if _WORD.match(w)})
        if not self._words:
            raise ValueError("the lexicon has no words (one word of letters per line expected)")
        self._set = frozenset(self._words)
        self._by_length: dict[int, list[str]] = {}
        for w in self._words:
            self._by_length.setdefault(len(w), []).append(w)

    @classmethod
    def from_file(cls, path: Path | str) -> Lexicon:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError as e:
            hint = (
                " (Debian: apt-get install wamerican, or bash tools/setup.sh --lm)" if path == DEFAULT_LEXICON else ""
            )
            raise OptionError(
                f"{path}: no such word list{hint}; pass {{expand_lexicon}} FILE, one word per line"
            ) from e
        try:
            return cls(text.splitlines())
        except ValueError as e:
            raise DsrUserError(f"{path}: {e}") from e

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: str) -> bool:
        return word in self._set

    def neighbours(self, word: str, max_edits: int) -> list[tuple[str, int]]:
        """Lexicon words within ``max_edits`` character edits (Levenshtein) of ``word``,
        closest first (ties alphabetical), ``word`` itself excluded."""
        if max_edits < 0:
            raise ValueError(f"max_edits must be >= 0 (got {max_edits})")
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        found: list[tuple[str, int]] = []
        n = len(word)
        for length in range(max(1, n - max_edits), n + max_edits + 1):
            choices = self._by_length.get(length)
            if choices:
                hits = process.extract(word, choices, scorer=Levenshtein.distance, score_cutoff=max_edits, limit=None)
                found += [(w, int(d)) for w, d, _ in hits if w != word]
        return sorted(found, key=lambda x: (x[1], x[0]))


@torch.no_grad()
def transducer_log_likelihood(
    model: HybridTransducer,
    encoder_out: torch.Tensor,
    token_seqs: Sequence[Sequence[int]],
    batch_size: int = 64,
    contexts_per_chunk: int = 256,
) -> list[float]:
    """Full-sum RNN-T log-likelihood ``log P(y | x)`` of each token sequence for one utterance.

    The predictor is stateless: its output at a lattice row depends only on the last
    ``context_size`` tokens.  Respellings of one hypothesis share almost all of those
    contexts, so the joiner runs once per distinct context and frame, (C, T, V), instead
    of once per sequence, row and frame, (B, T, U+1, V): 20-40x less work on ARCTIC
    n-best expansions.  The lattice recursion then runs on gathered scores.

    Args:
        model: a model with a transducer.
        encoder_out: (T, D) encoder output of the utterance (its valid frames only).
        token_seqs: token id sequences (blank excluded).
        batch_size: sequences per lattice recursion.
        contexts_per_chunk: contexts per joiner call; memory is contexts_per_chunk * T * V floats.

    Returns:
        One float per sequence (``-inf`` when it cannot be aligned).
    """
    if model.predictor is None or model.joiner is None:
        raise ValueError("transducer_log_likelihood needs a model with a transducer")
    if encoder_out.dim() != 2:
        raise ValueError(f"encoder_out must be (T, D), got {tuple(encoder_out.shape)}")
    if not token_seqs:
        return []
    device, blank, k = encoder_out.device, model.blank_id, model.predictor.context_size
    seqs = [list(s) for s in token_seqs]
    # Distinct (context, next symbol) pairs: the context of row u is the k tokens before it.
    contexts: dict[tuple[int, ...], int] = {}
    pairs: dict[tuple[int, int], int] = {}  # (context index, symbol) -> row of sym_lp
    rows: list[list[int]] = []  # per sequence: the context index of each lattice row
    sym_rows: list[list[int]] = []  # per sequence: the sym_lp row of each symbol
    for seq in seqs:
        padded = [blank] * k + seq
        ctx = [contexts.setdefault(tuple(padded[u : u + k]), len(contexts)) for u in range(len(seq) + 1)]
        sym_rows.append([pairs.setdefault((ctx[u], sym), len(pairs)) for u, sym in enumerate(seq)])
        rows.append(ctx)
    ctx_ids = torch.tensor(list(contexts), dtype=torch.int64, device=device)  # (C, k)
    dec = model.joiner.decoder_proj(model.predictor(ctx_ids, need_pad=False)[:, 0])  # (C, J)
    enc = model.joiner.encoder_proj(encoder_out)  # (T, J)
    t_len = encoder_out.size(0)
    blank_lp = torch.empty(len(contexts), t_len, device=device)
    sym_lp = torch.empty(len(pairs), t_len, device=device)
    pair_ctx = torch.tensor([c for c, _ in pairs], dtype=torch.int64, device=device)
    pair_sym = torch.tensor([s for _, s in pairs], dtype=torch.int64, device=device)
    for c0 in range(0, len(contexts), contexts_per_chunk):
        c1 = min(c0 + contexts_per_chunk, len(contexts))
        logp = model.joiner(enc.unsqueeze(0), dec[c0:c1].unsqueeze(1), project_input=False).float().log_softmax(-1)
        blank_lp[c0:c1] = logp[:, :, blank]  # logp: (c1 - c0, T, V)
        mine = ((pair_ctx >= c0) & (pair_ctx < c1)).nonzero().squeeze(1)
        sym_lp[mine] = logp[pair_ctx[mine] - c0, :, pair_sym[mine]]
    out: list[float] = []
    for b0 in range(0, len(seqs), batch_size):
        batch = seqs[b0 : b0 + batch_size]
        s_max = max(len(s) for s in batch)
        px = torch.full((len(batch), s_max, t_len + 1), float("-inf"), device=device)
        py = torch.zeros((len(batch), s_max + 1, t_len), device=device)
        boundary = torch.zeros((len(batch), 4), dtype=torch.int64, device=device)
        for i, (ctx, syms) in enumerate(zip(rows[b0 : b0 + batch_size], sym_rows[b0 : b0 + batch_size])):
            py[i, : len(ctx)] = blank_lp[ctx]
            if syms:
                px[i, : len(syms), :t_len] = sym_lp[syms]
            boundary[i, 2], boundary[i, 3] = len(syms), t_len
        scores = mutual_information_recursion(px, py, boundary)
        assert isinstance(scores, torch.Tensor)  # without return_grad: the (B,) scores alone
        out += scores.tolist()
    return out


def _acoustic_scorer(model: HybridTransducer, method: str) -> Callable[[torch.Tensor, list[list[int]]], list[float]]:
    if method == "modified-beam-search":
        return lambda enc, seqs: transducer_log_likelihood(model, enc, seqs)
    if method == "ctc-prefix-beam-search":

        def ctc(enc: torch.Tensor, seqs: list[list[int]]) -> list[float]:
            lens = torch.tensor([enc.size(0)], device=enc.device)
            return ctc_log_likelihood(model.ctc_log_probs(enc.unsqueeze(0)), lens, [seqs], blank=model.blank_id)[0]

        return ctc
    raise OptionError("expand_lexicon", f"works with {' and '.join(EXPANDABLE_METHODS)} (got {method})")


@dataclass(frozen=True)
class Edit:
    """Replace ``words[start:end]`` of a hypothesis by ``text`` (one or two words)."""

    start: int
    end: int
    text: str

    def apply(self, words: list[str]) -> list[str]:
        return words[: self.start] + self.text.split() + words[self.end :]


def candidate_edits(words: list[str], lexicon: Lexicon, opts: ExpandOptions) -> list[Edit]:
    """Edits that turn an out-of-lexicon word of ``words`` into lexicon words.

    For each such word: its respellings (lexicon words within :meth:`ExpandOptions.edits_for`
    character edits), its splits into two lexicon words (``SHEHAD`` -> ``SHE HAD``), and
    the respellings of it joined with the word before or after it (``PER HAP`` -> ``PERHAPS``):
    a small model often misplaces word boundaries.
    """
    edits: set[Edit] = set()
    for i, w in enumerate(words):
        if w in lexicon:  # respelling known words too tripled the cost for 3 % fewer oracle errors (ARCTIC)
            continue
        edits.update(Edit(i, i + 1, c) for c, _ in lexicon.neighbours(w, opts.edits_for(w)))
        edits.update(
            Edit(i, i + 1, f"{w[:k]} {w[k:]}") for k in range(1, len(w)) if w[:k] in lexicon and w[k:] in lexicon
        )
        for a, b in ((i - 1, i + 1), (i, i + 2)):
            if a >= 0 and b <= len(words):
                joined = "".join(words[a:b])
                if joined in lexicon:
                    edits.add(Edit(a, b, joined))
                edits.update(Edit(a, b, c) for c, _ in lexicon.neighbours(joined, opts.edits_for(joined)))
    return sorted(edits, key=lambda e: (e.start, e.end, e.text))


def expand_hypothesis(
    parent: Hypothesis,
    words: list[str],
    lexicon: Lexicon,
    encode: Callable[[str], list[int] | None],
    acoustic: Callable[[list[list[int]]], list[float]],
    opts: ExpandOptions,
    existing: AbstractSet[str] = frozenset(),
) -> list[Hypothesis]:
    """Variants of ``parent`` (whose text is ``words``) made of :func:`candidate_edits`.

    ``encode`` maps a text to token ids (None: the model cannot spell it); ``acoustic``
    maps token sequences to their exact acoustic log-likelihoods for this utterance;
    texts in ``existing`` are not returned.
    Each edit is first scored alone against the parent; the best ``per_word`` per span
    within ``max_am_drop`` are combined (non-overlapping, best summed change first), and
    the ``max_hyps`` combinations are scored exactly.  Returns the new hypotheses only,
    best acoustic score first, with ``am_score`` = the parent's + the exact change.
    """
    if not words:
        return []
    spellable = [(e, toks) for e in candidate_edits(words, lexicon, opts) if (toks := encode(" ".join(e.apply(words))))]
    if not spellable:
        return []
    # 1. One edit at a time, each scored exactly against the parent.
    scores = acoustic([list(parent.tokens)] + [toks for _, toks in spellable])
    base = scores[0]  # the parent's exact score
    by_span: dict[tuple[int, int], list[tuple[float, Edit]]] = {}
    for (e, _), sc in zip(spellable, scores[1:]):
        if sc - base >= -opts.max_am_drop:
            by_span.setdefault((e.start, e.end), []).append((sc - base, e))
    # 2. Non-overlapping combinations, best summed change first (a beam over the spans).
    beam: list[tuple[float, int, tuple[Edit, ...]]] = [(0.0, 0, ())]
    for span in sorted(by_span):
        best = heapq.nlargest(opts.per_word, by_span[span], key=lambda x: x[0])
        grown = [(sc + d, e.end, chosen + (e,)) for sc, end, chosen in beam if end <= span[0] for d, e in best]
        beam = heapq.nlargest(opts.max_hyps + 1, beam + grown, key=lambda x: x[0])
    seen = {" ".join(words)} | set(existing)
    new_texts: list[str] = []
    for _, _, chosen in beam:
        w = list(words)
        for e in reversed(chosen):  # right to left, so earlier spans keep their indices
            w = e.apply(w)
        text = " ".join(w)
        if chosen and text not in seen:
            seen.add(text)
            new_texts.append(text)
    new_tokens = [toks for toks in map(encode, new_texts[: opts.max_hyps]) if toks]
    exact = acoustic(new_tokens) if new_tokens else []
    added = [
        Hypothesis(toks, parent.am_score + (sc - base), timestamps=[], source="lexicon")
        for toks, sc in zip(new_tokens, exact)
        if sc - base >= -opts.max_am_drop
    ]
    return sorted(added, key=lambda h: -h.am_score)


def expand_nbest(
    model: HybridTransducer,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor,
    nbests: list[list[Hypothesis]],
    tokenizer: Tokenizer,
    lexicon: Lexicon,
    method: str,
    opts: ExpandOptions,
) -> list[list[Hypothesis]]:
    """:func:`expand_hypothesis` of the ``opts.parents`` best of each list, for a batch: (N, T, D) encoder output, (N,) lengths, N n-best lists.

    Lexicon words the BPE model can only spell with its unknown token are skipped.  Added
    hypotheses get the model's CTC score too when it has a CTC head.
    """
    scorer = _acoustic_scorer(model, method)

    def encode(text: str) -> list[int] | None:
        tokens = tokenizer.encode(text)
        return None if tokenizer.unk_id in tokens else tokens

    out: list[list[Hypothesis]] = []
    for n, hyps in enumerate(nbests):
        enc = encoder_out[n, : int(encoder_lens[n])]
        texts = {tokenizer.decode(h.tokens) for h in hyps}
        added: list[Hypothesis] = []
        for parent in hyps[: opts.parents]:
            words = tokenizer.decode(parent.tokens).split()
            more = expand_hypothesis(parent, words, lexicon, encode, partial(scorer, enc), opts, texts)
            texts |= {tokenizer.decode(h.tokens) for h in more}
            added += more
        added.sort(key=lambda h: -h.am_score)
        if added and model.ctc_output is not None:
            lens = encoder_lens[n : n + 1]
            ctc = ctc_log_likelihood(
                model.ctc_log_probs(encoder_out[n : n + 1]), lens, [[h.tokens for h in added]], blank=model.blank_id
            )[0]
            added = [replace(h, ctc_score=c) for h, c in zip(added, ctc)]
        out.append(hyps + added)
    return out
