"""N-best rescoring with an LLM: combine scores, pick the best hypothesis, tune weights.

Each hypothesis gets::

    total = (am_score + context_score + lm_score + lm_weight * llm_score + length_bonus * num_words
             [+ ctc_weight * ctc_score] [+ attention_weight * attention_score]) / rank_norm

(the first three terms are what the first pass ranked by: ``context_score`` is the hotword
bonus, ``lm_score`` the weighted n-gram score of a search with shallow fusion, ``dsr decode
--ngram-lm``; ``rank_norm`` is 1 except for a Whisper-decoder beam, which ranks by the
length-normalised score; the CTC and attention terms only when the hypothesis has those
scores: an attention decoder's log-probability is in the n-best of the attention-rescoring
methods).  The highest total wins;
ties go to the hypothesis the first pass ranked higher, so all-zero weights give back
the first-pass 1-best exactly.  ``length_bonus`` offsets the LLM's per-word cost, which
would otherwise favour deletions.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import kaldialign
import numpy as np

from dsr.data.normalize import normalize_for_scoring
from dsr.errors import DsrUserError, OptionError
from dsr.evaluation.wer import score, write_errs, write_recogs
from dsr.lm.llm_scores import LLM_SCORES_FILE, score_nbest
from dsr.lm.nbest import Hyp, NbestUtt, read_nbest
from dsr.lm.options import RescoreOptions, output_dir
from dsr.lm.scorer import DEFAULT_BATCH, LlmScorer
from dsr.utils import write_json_atomic, write_text_atomic

logger = logging.getLogger("dsr")

WEIGHTS_FILE = "weights.json"
WITHOUT_LLM = "without_llm"  # weights.json: the tuned weights with lm_weight fixed at 0
# LLM sentence log-probs are tens of nats while n-best AM scores differ by a few,
# so useful LM weights are well below 1; the bonus makes up for ~lm_weight * 3-6 nats per word.
DEFAULT_LM_WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
DEFAULT_LENGTH_BONUSES = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)

_EMPTY = Hyp(text="", tokens=[], am_score=0.0, ctc_score=None, context_score=0.0, timestamps=[])


@dataclass(frozen=True)
class Weights:
    lm_weight: float = 0.0
    length_bonus: float = 0.0
    ctc_weight: float = 0.0
    attention_weight: float = 0.0

    def tag(self) -> str:
        tag = f"lm_weight={self.lm_weight:g}_length_bonus={self.length_bonus:g}_ctc_weight={self.ctc_weight:g}"
        return tag + (f"_attention_weight={self.attention_weight:g}" if self.attention_weight else "")

    @classmethod
    def load(cls, path: Path | str) -> Weights:
        """Read a ``weights.json`` written by :func:`tune`."""
        return cls._load(path)[0]

    @classmethod
    def load_without_llm(cls, path: Path | str) -> Weights | None:
        """The best weights with ``lm_weight`` 0 that :func:`tune` saved beside the chosen ones (None if absent)."""
        return cls._load(path)[1]

    @classmethod
    def _load(cls, path: Path | str) -> tuple[Weights, Weights | None]:
        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
            att = float(obj.get("attention_weight", 0.0))
            chosen = cls(float(obj["lm_weight"]), float(obj["length_bonus"]), float(obj.get("ctc_weight", 0.0)), att)
            no_llm = obj.get(WITHOUT_LLM)
            if not isinstance(no_llm, dict):
                return chosen, None
            return chosen, cls(0.0, float(no_llm.get("length_bonus", 0.0)), float(no_llm.get("ctc_weight", 0.0)), att)
        except FileNotFoundError as e:
            raise OptionError(f"{{weights}} {path}: no such weights file; write one with {{tune_on}} DEV_NBEST") from e
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DsrUserError(f"{path}: not a weights file (needs lm_weight and length_bonus numbers): {e}") from e


@dataclass
class NbestTable:
    """Per-hypothesis features padded to ``(U, N)``: U utterances, at most N hypotheses each.

    Padding cells have ``valid == False``; an utterance without hypotheses gets one empty one.
    """

    utts: list[NbestUtt]
    texts: list[list[str]]
    am: np.ndarray  # (U, N) float64, the first pass's total (Hyp.first_pass_score)
    norm: np.ndarray  # (U, N) float64, Hyp.rank_norm (1 in padding cells)
    llm: np.ndarray  # (U, N) float64
    ctc: np.ndarray  # (U, N) float64, 0 where absent
    att: np.ndarray  # (U, N) float64, attention-decoder log-prob, 0 where absent
    num_words: np.ndarray  # (U, N) float64
    errors: np.ndarray  # (U, N) int64, word edit distance to the reference
    valid: np.ndarray  # (U, N) bool
    ref_words: int
    searched: np.ndarray  # (U, N) bool: found by the first-pass search (not added by an n-best expansion)

    @classmethod
    def build(cls, utts: list[NbestUtt], llm: list[list[float]]) -> NbestTable:
        n = max(max(len(u.hyps) for u in utts), 1)
        shape = (len(utts), n)
        am, lm, ctc, att, nw = (np.zeros(shape) for _ in range(5))
        norm = np.ones(shape)
        errors = np.zeros(shape, dtype=np.int64)
        valid = np.zeros(shape, dtype=bool)
        searched = np.zeros(shape, dtype=bool)
        texts: list[list[str]] = []
        ref_words = 0
        for u, (utt, scores) in enumerate(zip(utts, llm, strict=True)):
            ref = normalize_for_scoring(utt.ref).split()
            ref_words += len(ref)
            hyps, scores = (utt.hyps, scores) if utt.hyps else ([_EMPTY], [0.0])
            texts.append([h.text for h in hyps])
            for i, (h, s) in enumerate(zip(hyps, scores, strict=True)):
                am[u, i], lm[u, i], nw[u, i], norm[u, i] = h.first_pass_score, s, h.num_words, h.rank_norm
                ctc[u, i] = h.ctc_score if h.ctc_score is not None else 0.0
                att[u, i] = h.attention_score if h.attention_score is not None else 0.0
                errors[u, i] = kaldialign.edit_distance(ref, normalize_for_scoring(h.text).split())["total"]
                valid[u, i] = True
                searched[u, i] = h.source == "search"
        return cls(utts, texts, am, norm, lm, ctc, att, nw, errors, valid, ref_words, searched)

    def choose(self, w: Weights, top_n: int | None = None) -> np.ndarray:
        """Index of the best hypothesis of each utterance, shape (U,); ties go to the lower index."""
        total = self.am + w.lm_weight * self.llm + w.length_bonus * self.num_words
        if w.ctc_weight:  # skipped at 0 so that an infinite CTC score cannot turn into NaN
            total = total + w.ctc_weight * self.ctc
        if w.attention_weight:
            total = total + w.attention_weight * self.att
        total = total / self.norm
        allowed = self.valid if top_n is None else self.valid & (np.arange(self.valid.shape[1]) < top_n)
        return np.argmax(np.where(allowed, total, -np.inf), axis=1)  # argmax returns the first maximum

    def wer(self, chosen: np.ndarray) -> float:
        return 100.0 * int(self.errors[np.arange(len(chosen)), chosen].sum()) / max(self.ref_words, 1)

    def oracle_wer(self, top_n: int | None = None, searched_only: bool = False) -> float:
        cols = self.errors if top_n is None else self.errors[:, :top_n]
        ok = (self.valid & self.searched) if searched_only else self.valid
        ok = ok if top_n is None else ok[:, :top_n]
        return 100.0 * int(np.where(ok, cols, np.iinfo(np.int64).max).min(axis=1).sum()) / max(self.ref_words, 1)


def _grid(values: tuple[float, ...] | list[float], name: str) -> list[float]:
    if not values:
        raise ValueError(f"{name} grid is empty")
    # 0 is always tried: it is the baseline that the tuned weights must not lose to.
    return sorted({0.0, *map(float, values)})


def tune(
    dev_nbest: Path | str,
    scorer: LlmScorer,
    out_dir: Path | str,
    lm_weights: tuple[float, ...] | list[float] = DEFAULT_LM_WEIGHTS,
    length_bonuses: tuple[float, ...] | list[float] = DEFAULT_LENGTH_BONUSES,
    ctc_weight: float = 0.0,
    batch_size: int = DEFAULT_BATCH,
    attention_weight: float = 0.0,
    ctc_weights: tuple[float, ...] | list[float] | None = None,
) -> Weights:
    """Grid-search ``(lm_weight, length_bonus[, ctc_weight])`` minimising WER on ``dev_nbest``.

    Ties go to the smaller ``|lm_weight|``, then the smaller ``|length_bonus|``, then the
    smaller ``|ctc_weight|``.  0 is added to every grid, so the result is never worse on
    dev than all-zero weights.  ``ctc_weight`` is fixed unless a ``ctc_weights`` grid is
    given; ``attention_weight`` is fixed.  Writes ``weights.json``, ``tune.json`` (WER of
    every grid point) and ``llm_scores.jsonl`` into ``out_dir``; returns the weights.
    """
    lams, betas = _grid(lm_weights, "lm_weights"), _grid(length_bonuses, "length_bonuses")
    ctcs = [float(ctc_weight)] if ctc_weights is None else _grid(ctc_weights, "ctc_weights")
    out = Path(out_dir)
    utts = read_nbest(dev_nbest)
    table = NbestTable.build(utts, score_nbest(utts, scorer, batch_size, out / LLM_SCORES_FILE))
    grid = []
    for lam in lams:
        for beta in betas:
            for ctc in ctcs:
                chosen = table.choose(Weights(lam, beta, ctc, attention_weight))
                errors = int(table.errors[np.arange(len(chosen)), chosen].sum())
                grid.append(
                    {
                        "lm_weight": lam,
                        "length_bonus": beta,
                        "ctc_weight": ctc,
                        "errors": errors,
                        "wer": table.wer(chosen),
                    }
                )

    def order(g: dict) -> tuple:
        return (
            g["errors"],
            abs(g["lm_weight"]),
            abs(g["length_bonus"]),
            abs(g["ctc_weight"]),
            g["lm_weight"],
            g["length_bonus"],
            g["ctc_weight"],
        )

    best = min(grid, key=order)
    # The best point without the LLM, so that a report can tell the LLM's share of the gain
    # from what re-ranking by length and CTC alone does.
    no_llm = min((g for g in grid if g["lm_weight"] == 0), key=order)
    weights = Weights(best["lm_weight"], best["length_bonus"], best["ctc_weight"], attention_weight)
    write_json_atomic(
        out / WEIGHTS_FILE,
        {
            **asdict(weights),
            "dev_wer": best["wer"],
            "dev_nbest": str(dev_nbest),
            "llm": scorer.signature,
            WITHOUT_LLM: {
                "length_bonus": no_llm["length_bonus"],
                "ctc_weight": no_llm["ctc_weight"],
                "dev_wer": no_llm["wer"],
            },
        },
    )
    write_json_atomic(
        out / "tune.json",
        {
            "dev_nbest": str(dev_nbest),
            "llm": scorer.signature,
            "ref_words": table.ref_words,
            "first_pass_wer": table.wer(np.zeros(len(utts), dtype=np.int64)),
            "oracle_wer": table.oracle_wer(),
            "grid": grid,
        },
    )
    logger.info("tuned on %s: %s, dev WER %.2f%%", dev_nbest, weights.tag(), best["wer"])
    return weights


def _warn_if_not_best_first(nbest: Path, utts: list[NbestUtt]) -> None:
    """Zero weights give the first-pass 1-best only if the first pass ranked by
    :attr:`Hyp.rank_score` (hypotheses an n-best expansion appended are not ranked against
    the search's)."""
    bad = 0
    for u in utts:
        hyps = [h for h in u.hyps if h.source == "search"]
        bad += any(a.rank_score < b.rank_score for a, b in zip(hyps, hyps[1:], strict=False))
    if bad:
        logger.warning(
            "%s: %d utterances list hypotheses not in decreasing (am_score + context_score + lm_score) / rank_norm order; "
            "rescoring ranks by that score, not by the list's order",
            nbest,
            bad,
        )


def _first_pass_info(nbest: Path) -> dict[str, Any]:
    """``result.json`` that ``dsr decode`` wrote next to the n-best file, or ``{}``."""
    p = nbest.parent / "result.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


def _sizes(n: int) -> list[int]:
    """1, 2, 4, ... up to and including n: the n-best depths reported in result.json."""
    sizes = [1]
    while sizes[-1] * 2 < n:
        sizes.append(sizes[-1] * 2)
    return sizes + ([n] if n > 1 else [])


def _by_nbest_size(
    table: NbestTable, scorer: LlmScorer, weights: Weights, per_text: float | None
) -> list[dict[str, Any]]:
    """WERs and LLM cost when only the top-n hypotheses are kept, for n = 1, 2, 4, ..., N.

    The LLM cost grows with the number of distinct texts; ``est_llm_seconds`` applies
    the cost per text measured in this run (None when every score came from the cache).
    """
    rows = []
    for n in _sizes(table.valid.shape[1]):
        unique = len({scorer.prepare(t) for row in table.texts for t in row[:n]})
        rows.append(
            {
                "n": n,
                "num_hyps": sum(min(len(u.hyps), n) for u in table.utts),
                "unique_texts": unique,
                "oracle_wer": table.oracle_wer(n),
                "rescored_wer": table.wer(table.choose(weights, n)),
                "est_llm_seconds": None if per_text is None else per_text * unique,
            }
        )
    return rows


def rescore(
    nbest: Path | str,
    scorer: LlmScorer,
    out_dir: Path | str,
    weights: Weights,
    batch_size: int = DEFAULT_BATCH,
    without_llm: Weights | None = None,
    method: str | None = None,
) -> dict[str, Any]:
    """Rescore one n-best file; writes recogs/errs/wer.txt, result.json, llm_scores.jsonl into ``out_dir``.

    ``without_llm`` (weights with ``lm_weight`` 0, e.g. :meth:`Weights.load_without_llm`)
    adds the WER they give (``without_llm_wer``): the gain of re-ranking without the LLM.
    ``method`` names the result in reports (default: the first pass's method + ``+llm``).

    Returns the ``result.json`` content: first-pass, oracle and rescored WER, the
    weights, and LLM time against the number of hypotheses (``by_nbest_size``).
    """
    nbest, out = Path(nbest).resolve(), Path(out_dir)
    utts = read_nbest(nbest)
    _warn_if_not_best_first(nbest, utts)
    seconds0, scored0 = scorer.seconds, scorer.num_scored
    llm = score_nbest(utts, scorer, batch_size, out / LLM_SCORES_FILE)
    llm_seconds, fresh = scorer.seconds - seconds0, scorer.num_scored - scored0
    table = NbestTable.build(utts, llm)
    chosen = table.choose(weights)
    triples = [(u.utt_id, u.ref, table.texts[i][c]) for i, (u, c) in enumerate(zip(utts, chosen, strict=True))]
    stats = score(triples)
    first = score([(u.utt_id, u.ref, u.hyps[0].text if u.hyps else "") for u in utts])
    write_recogs(out / "recogs.txt", triples)
    write_errs(out / "errs.txt", stats)
    write_text_atomic(out / "wer.txt", f"{weights.tag()}\t{stats.summary()}\n")
    by_size = _by_nbest_size(table, scorer, weights, llm_seconds / fresh if fresh else None)
    info = _first_pass_info(nbest)
    audio, decode_s = info.get("audio_seconds"), info.get("decode_seconds")
    result = {
        "method": method or f"{info.get('method', nbest.parent.parent.name)}+llm",
        "split": info.get("split", nbest.parent.name),
        "checkpoint": info.get("checkpoint", "unknown"),
        "wer": stats.wer,
        "errors": stats.errors,
        "ref_words": stats.ref_words,
        "num_utts": stats.num_sents,
        # first-pass decoding plus LLM time per second of audio; NaN when decode left no timing
        "rtf": (decode_s + llm_seconds) / audio if audio and decode_s is not None else math.nan,
        "nbest": str(nbest),
        "llm": scorer.signature,
        "weights": asdict(weights),
        "first_pass_wer": first.wer,
        "oracle_wer": table.oracle_wer(),
        "rescored_wer": stats.wer,
        # without the hypotheses an n-best expansion added (equal to oracle_wer when there are none)
        "search_oracle_wer": table.oracle_wer(searched_only=True),
        "num_hyps": sum(len(u.hyps) for u in utts),
        "llm_texts_scored": fresh,
        "llm_seconds": llm_seconds,
        "decode_seconds": decode_s,
        "audio_seconds": audio,
        "llm_texts_per_second": fresh / llm_seconds if fresh and llm_seconds > 0 else None,
        "by_nbest_size": by_size,
        "without_llm_wer": None if without_llm is None else table.wer(table.choose(without_llm)),
        "without_llm_weights": None if without_llm is None else asdict(without_llm),
    }
    write_json_atomic(out / "result.json", result)
    logger.info(
        "%s: WER %.2f%% -> %.2f%% (oracle %.2f%%) with %s",
        nbest,
        first.wer,
        stats.wer,
        result["oracle_wer"],
        weights.tag(),
    )
    return result


# The stage (``dsr rescore``) in three steps, so that a front end can report between them.


def check_nbest_files(options: RescoreOptions) -> None:
    """DsrUserError naming the first of ``options.nbest`` (and ``tune_on``) that is not a file."""
    for n in options.nbest + ((options.tune_on,) if options.tune_on is not None else ()):
        if not n.is_file():
            raise DsrUserError(f"{n}: no such n-best file; write it with dsr decode using an n-best method")


def load_scorer(options: RescoreOptions) -> LlmScorer:
    """The LLM of ``options`` (default: :func:`dsr.lm.load.default_llm_path`), with torch's
    CPU threads set first when ``options.num_threads`` asks for it."""
    import torch

    from dsr.lm.load import default_llm_path

    if options.num_threads > 0:
        torch.set_num_threads(options.num_threads)
    return LlmScorer.from_path(
        options.llm if options.llm is not None else default_llm_path(),
        dtype=options.dtype,
        device=options.device,
        text_transform=options.text_transform,
        bos_token=options.bos_token,
        eos_token=options.eos_token,
    )


def choose_weights(options: RescoreOptions, scorer: LlmScorer) -> tuple[Weights, Weights | None]:
    """(weights, the same without the LLM or None): tuned on ``options.tune_on`` (written to
    its ``weights.json``), read from ``options.weights``, or the options' own weights."""
    if options.tune_on is not None:
        lm_weights, length_bonuses, ctc_weights = options.grids()
        tune_dir = output_dir(options.tune_on, options.out_dir)
        chosen = tune(
            options.tune_on,
            scorer,
            tune_dir,
            lm_weights,
            length_bonuses,
            options.ctc_weight,
            options.batch_size,
            options.attention_weight,
            ctc_weights=ctc_weights,
        )
        return chosen, Weights.load_without_llm(tune_dir / WEIGHTS_FILE)
    if options.weights is not None:
        return Weights.load(options.weights), Weights.load_without_llm(options.weights)
    return Weights(options.lm_weight, options.length_bonus, options.ctc_weight, options.attention_weight), None


def rescore_all(
    options: RescoreOptions, scorer: LlmScorer, weights: Weights, without_llm: Weights | None = None
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(output directory, :func:`rescore`'s result) of each of ``options.nbest``, in order."""
    for n, out in zip(options.nbest, options.output_dirs(), strict=True):
        # named after its directory, so that rescorings of one n-best by two LLMs stay apart in dsr results
        yield out, rescore(n, scorer, out, weights, options.batch_size, without_llm, method=out.parent.name)
