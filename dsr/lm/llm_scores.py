"""LLM scores of every hypothesis of an n-best file, kept in ``llm_scores.jsonl``.

Scoring is the slow part of rescoring; weight tuning and re-runs only recombine
scores.  Saved scores are reused only when the scorer's signature (model, dtype,
text transform, BOS/EOS) is the one that produced them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from dsr.errors import DsrUserError
from dsr.lm.nbest import NbestUtt
from dsr.lm.scorer import LlmScorer
from dsr.utils import write_text_atomic

logger = logging.getLogger("dsr")

LLM_SCORES_FILE = "llm_scores.jsonl"


def load_cached_scores(path: Path, scorer: LlmScorer) -> int:
    """Put the scores saved in ``path`` into ``scorer.cache``; returns how many were new there.

    A file written under another signature is ignored (the scores would be wrong).
    """
    if not path.is_file():
        return 0
    added = 0
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                obj = json.loads(line)
                if obj["llm"] != scorer.signature:
                    logger.info("%s was scored by %s, not %s: rescoring", path, obj["llm"], scorer.signature)
                    return added
                for text, s in zip(obj["texts"], obj["llm_scores"], strict=True):
                    key = scorer.prepare(text)
                    added += key not in scorer.cache
                    scorer.cache[key] = float(s)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise DsrUserError(
                    f"{path}:{lineno}: unreadable saved LLM scores ({e}); delete the file to rescore"
                ) from e
    return added


def score_nbest(
    utts: list[NbestUtt], scorer: LlmScorer, batch_size: int, cache_file: Path | None = None
) -> list[list[float]]:
    """LLM log-probability of each hypothesis: ``result[u][i]`` for ``utts[u].hyps[i]``.

    Reuses and then rewrites ``cache_file`` (one line per utterance) when given.
    """
    if cache_file is not None:
        n = load_cached_scores(cache_file, scorer)
        if n:
            logger.info("reusing %d saved LLM scores from %s", n, cache_file)
    texts = [h.text for u in utts for h in u.hyps]
    flat = scorer.score(texts, batch_size=batch_size)
    out: list[list[float]] = []
    pos = 0
    for u in utts:
        out.append(flat[pos : pos + len(u.hyps)])
        pos += len(u.hyps)
    if cache_file is not None:
        write_llm_scores(cache_file, utts, out, scorer.signature)
    return out


def write_llm_scores(path: Path, utts: list[NbestUtt], scores: list[list[float]], signature: str) -> None:
    """One line per utterance: ``{"utt_id", "llm", "texts", "num_words", "llm_scores"}``."""
    lines = [
        json.dumps(
            {
                "utt_id": u.utt_id,
                "llm": signature,
                "texts": [h.text for h in u.hyps],
                "num_words": [h.num_words for h in u.hyps],
                "llm_scores": s,
            },
            ensure_ascii=False,
        )
        for u, s in zip(utts, scores, strict=True)
    ]
    write_text_atomic(path, "\n".join(lines) + "\n")
