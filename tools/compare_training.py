"""Do two checkouts of dsr train bit-identically?  Runs the same tiny `dsr train` jobs with each
and compares the logged losses, the saved config.yaml and every tensor of every checkpoint.

Usage:
    OMP_NUM_THREADS=1 python tools/compare_training.py --before <checkout of the old commit> --after . --work <scratch-dir>
    OMP_NUM_THREADS=1 python tools/compare_training.py --before <checkout of the old commit> --after . --work <scratch-dir> --reuse

Each checkout is put first on PYTHONPATH and runs `python -m dsr.cli.main train` (one thread,
CPU, fixed seed) on the tests' tiny corpus (tests/tiny_corpus.py of --after: random features,
so every loss is finite, nothing is learnt) in three jobs that between them take most of the
trainer's paths:
  * full:   2 epochs, SortaGrad for the first, SpecAugment, gain and frequency-warp perturbation,
            validation, attention-decoder head, step checkpoints (keep-last-k), running average;
  * resume: the same job stopped by --max-steps, then resumed from its mid-epoch step checkpoint;
  * warmup: CTC-only encoder warm-up, feature cache off, no dev set, no transducer averaging.
Prints one line per compared item and exits 1 on any difference.  --reuse keeps an existing
--work/before (the reference runs) and reruns only --after.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

JOBS: dict[str, list[str]] = {
    "full": [
        "--num-epochs",
        "2",
        "--sortagrad-epochs",
        "1",
        "--spec-augment",
        "--gain-db",
        "6",
        "--freq-warp",
        "0.1",
        "--attention-decoder-layers",
        "1",
        "--attention-decoder-dim",
        "32",
        "--attention-decoder-ffn-dim",
        "64",
        "--save-every-n",
        "3",
        "--keep-last-k",
        "2",
        "--average-period",
        "2",
    ],
    "warmup": [
        "--num-epochs",
        "1",
        "--ctc-encoder-warmup-steps",
        "3",
        "--feature-cache-mb",
        "0",
        "--dev-cuts",
        "",
        "--average-period",
        "0",
        "--num-buckets",
        "2",
    ],
}
# The resume job: the "full" job cut after RESUME_AT updates, then resumed from its last step checkpoint
# (mid-epoch) to the end.
RESUME_AT = 5
TINY = [
    "--encoder-dim",
    "32",
    "--num-encoder-layers",
    "2",
    "--num-heads",
    "2",
    "--ffn-dim",
    "64",
    "--conv-kernel-size",
    "5",
    "--decoder-dim",
    "32",
    "--joiner-dim",
    "32",
    "--dropout",
    "0.1",
    "--max-duration",
    "4",
    "--num-buckets",
    "1",
    "--warmup-steps",
    "2",
    "--model-warm-step",
    "4",
    "--log-interval",
    "1",
    "--num-threads",
    "1",
    "--device",
    "cpu",
    "--seed",
    "7",
]
# Log-line parts that differ between runs of the same computation.
_VOLATILE = re.compile(r"^\S+ \S+ |, [\d.]+ min elapsed| in [\d.]+ min")


def _train(root: Path, corpus: dict[str, str], exp: Path, extra: list[str]) -> None:
    args = [
        sys.executable,
        "-m",
        "dsr.cli.main",
        "train",
        "--train-cuts",
        corpus["train_cuts"],
        "--dev-cuts",
        corpus["dev_cuts"],
        "--lang-dir",
        corpus["lang_dir"],
        "--exp-dir",
        str(exp),
        *TINY,
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, env=env, cwd=exp.parent, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{root}: dsr train failed:\n{proc.stderr[-3000:]}")


def run_all(root: Path, corpus: dict[str, str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, extra in JOBS.items():
        _train(root, corpus, out / name, extra)
    _train(root, corpus, out / "resume", JOBS["full"] + ["--max-steps", str(RESUME_AT)])
    # --max-steps ends its epoch with epoch-1.pt; without it the newest is the step checkpoint
    # checkpoint-3.pt, as after a kill in the middle of epoch 1.
    for path in (out / "resume").glob("epoch-*.pt"):
        path.unlink()
    _train(root, corpus, out / "resume", JOBS["full"])


def loss_lines(exp: Path) -> list[str]:
    lines = []
    for log in sorted((exp / "log").glob("log-train-*.txt")):
        lines += [_VOLATILE.sub("", x) for x in log.read_text().splitlines() if " loss " in x]
    return lines


def _tensors(obj, prefix: str = ""):
    """(name, tensor) of every tensor in a nested checkpoint."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def compare(before: Path, after: Path) -> list[str]:
    """Differences between two runs of one job (empty when identical)."""
    diffs = []
    a_lines, b_lines = loss_lines(before), loss_lines(after)
    if a_lines != b_lines:
        first = next((i for i, (x, y) in enumerate(zip(a_lines, b_lines)) if x != y), min(len(a_lines), len(b_lines)))
        diffs.append(
            f"loss lines differ from line {first}: {a_lines[first : first + 1]} vs {b_lines[first : first + 1]}"
        )
    a_conf, b_conf = (
        [x for x in (d / "config.yaml").read_text().splitlines() if not x.startswith("exp-dir:")]
        for d in (before, after)
    )
    if a_conf != b_conf:
        diffs.append(f"config.yaml differs: {sorted(set(a_conf) ^ set(b_conf))[:4]}")
    a_ckpts = sorted(p.name for p in before.glob("*.pt"))
    b_ckpts = sorted(p.name for p in after.glob("*.pt"))
    if a_ckpts != b_ckpts:
        diffs.append(f"checkpoints differ: {a_ckpts} vs {b_ckpts}")
    for name in sorted(set(a_ckpts) & set(b_ckpts)):
        a_ckpt = torch.load(before / name, map_location="cpu", weights_only=False)
        b_ckpt = torch.load(after / name, map_location="cpu", weights_only=False)
        for key in ("model_config", "train_config", "epoch", "global_step", "batch_in_epoch"):
            a_val, b_val = a_ckpt.get(key), b_ckpt.get(key)
            if key == "train_config":  # the runs' own directories differ
                a_val, b_val = ({k: v for k, v in d.items() if k != "exp_dir"} for d in (a_val, b_val))
            if a_val != b_val:
                diffs.append(f"{name}: {key} differs: {a_val} vs {b_val}")
        a, b = dict(_tensors(a_ckpt)), dict(_tensors(b_ckpt))
        if a.keys() != b.keys():
            diffs.append(f"{name}: tensor names differ ({sorted(set(a) ^ set(b))[:5]})")
        bad = [k for k in a.keys() & b.keys() if not torch.equal(a[k], b[k])]
        if bad:
            diffs.append(f"{name}: {len(bad)} tensors differ, e.g. {sorted(bad)[:3]}")
    print(f"  {len(a_lines)} loss lines, {len(a_ckpts)} checkpoints compared")
    return diffs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="checkout giving the reference runs")
    p.add_argument("--after", type=Path, required=True, help="checkout under test")
    p.add_argument("--work", type=Path, required=True, help="scratch directory")
    p.add_argument("--reuse", action="store_true", help="keep --work/before from an earlier call")
    args = p.parse_args()
    after_root = args.after.resolve()
    sys.path.insert(0, str(after_root / "tests"))
    from tiny_corpus import make_tiny_corpus

    corpus_dir = args.work / "corpus"
    if not (args.reuse and corpus_dir.exists()):
        shutil.rmtree(corpus_dir, ignore_errors=True)
        make_tiny_corpus(corpus_dir, num_train=40, num_dev=6)
    corpus = {
        "train_cuts": str(corpus_dir / "cuts_train.jsonl.gz"),
        "dev_cuts": str(corpus_dir / "cuts_dev.jsonl.gz"),
        "lang_dir": str(corpus_dir / "lang"),
    }
    runs = [("before", args.before.resolve()), ("after", after_root)]
    for tag, root in runs:
        if tag == "before" and args.reuse and (args.work / "before").exists():
            continue
        shutil.rmtree(args.work / tag, ignore_errors=True)
        t0 = time.time()
        run_all(root, corpus, args.work / tag)
        print(f"{tag} ({root}): {time.time() - t0:.0f} s")
    failed = False
    for job in [*JOBS, "resume"]:
        print(f"{job}:")
        diffs = compare(args.work / "before" / job, args.work / "after" / job)
        for d in diffs:
            print(f"  DIFF {d}")
        print("  identical" if not diffs else "  DIFFERENT")
        failed |= bool(diffs)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
