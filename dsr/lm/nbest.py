"""Read the ``nbest.jsonl`` files written by ``dsr decode`` for n-best methods.

One JSON object per utterance, hypotheses best-first::

    {"utt_id": "u1", "ref": "TURN ON THE LIGHTS",
     "hyps": [{"text": "TURN ON THE LIGHTS", "tokens": [5, 9], "am_score": -1.2,
               "ctc_score": -3.4, "context_score": 0.0, "timestamps": [3, 7]}, ...]}

``ctc_score`` may be null (no CTC head); ``source`` (absent: ``"search"``) says what
added a hypothesis after the search (``"lexicon"``: ``dsr decode --expand-lexicon``, appended
after the search's own); ``attention_score`` (the attention decoder's
log-probability, written by the attention-rescoring methods) may be null or absent;
``rank_norm`` (absent: 1) is what the first pass divided its score by to rank (a
Whisper-decoder beam ranks by ``am_score / length ** length_penalty``); the other fields are
required.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsr.errors import DsrUserError


@dataclass(frozen=True)
class Hyp:
    text: str
    tokens: list[int]
    am_score: float
    ctc_score: float | None
    context_score: float
    timestamps: list[int]
    attention_score: float | None = None
    source: str = "search"
    lm_score: float = 0.0  # shallow fusion's weighted n-gram score (0 without --ngram-lm)
    rank_norm: float = 1.0  # the first pass ranked by first_pass_score / rank_norm

    @property
    def num_words(self) -> int:
        return len(self.text.split())

    @property
    def first_pass_score(self) -> float:
        """The search's total: acoustic score plus the hotword bonus and the fused LM's score."""
        return self.am_score + self.context_score + self.lm_score

    @property
    def rank_score(self) -> float:
        """What the first pass ranked by: :attr:`first_pass_score` over :attr:`rank_norm`."""
        return self.first_pass_score / self.rank_norm


@dataclass(frozen=True)
class NbestUtt:
    utt_id: str
    ref: str
    hyps: list[Hyp]  # best-first, as the first pass ranked them


def _hyp(obj: dict, where: str) -> Hyp:
    try:
        ctc, att = obj.get("ctc_score"), obj.get("attention_score")
        return Hyp(
            text=str(obj["text"]),
            tokens=[int(t) for t in obj["tokens"]],
            am_score=float(obj["am_score"]),
            ctc_score=None if ctc is None else float(ctc),
            context_score=float(obj["context_score"]),
            timestamps=[int(t) for t in obj["timestamps"]],
            attention_score=None if att is None else float(att),
            source=str(obj.get("source", "search")),
            lm_score=float(obj.get("lm_score", 0.0)),
            rank_norm=_rank_norm(obj.get("rank_norm", 1.0)),
        )
    except KeyError as e:
        raise DsrUserError(f"{where}: hypothesis has no {e.args[0]!r} field; re-run dsr decode to rewrite it") from e
    except (TypeError, ValueError) as e:
        raise DsrUserError(f"{where}: malformed hypothesis ({e}); re-run dsr decode to rewrite it") from e


def _rank_norm(value: Any) -> float:
    norm = float(value)  # a bad type raises TypeError, which _hyp reports as malformed
    if not (math.isfinite(norm) and norm > 0):
        raise ValueError(f"rank_norm must be a positive number, got {value!r}")
    return norm


def read_nbest(path: Path | str) -> list[NbestUtt]:
    """All utterances of an ``nbest.jsonl`` file, in file order.

    Raises :class:`DsrUserError` naming the file and line for a missing file, bad JSON,
    a missing field or a repeated ``utt_id``.
    """
    path = Path(path)
    if not path.is_file():
        raise DsrUserError(f"{path}: no such n-best file; write it with dsr decode using an n-best method")
    utts: list[NbestUtt] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
                utt_id, ref, hyps = str(obj["utt_id"]), str(obj["ref"]), obj["hyps"]
            except json.JSONDecodeError as e:
                raise DsrUserError(
                    f"{where}: not valid JSON ({e.msg}); the file is truncated or not an n-best file"
                ) from e
            except (KeyError, TypeError) as e:
                raise DsrUserError(
                    f"{where}: needs utt_id, ref and hyps fields; re-run dsr decode to rewrite it"
                ) from e
            if utt_id in seen:
                raise DsrUserError(f"{where}: utterance {utt_id!r} appears twice; each utt_id must be unique")
            seen.add(utt_id)
            utts.append(NbestUtt(utt_id, ref, [_hyp(h, where) for h in hyps]))
    if not utts:
        raise DsrUserError(f"{path}: has no utterances; decode a non-empty cuts manifest first")
    return utts
