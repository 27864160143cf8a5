"""Pictures of an experiment: training curves and the WER table, as PNGs next to ``results.md``.

Usage (the CLI writes both after the table)::

    dsr results --exp-dir exp/conformer            # plots when matplotlib is installed
    dsr results --exp-dir exp/conformer --no-plot  # the table only

or from Python::

    from dsr.evaluation.plots import write_plots
    write_plots(Path("exp/conformer"), rows)

The numbers come from what ``dsr train`` already writes: its tensorboard event files
(``EXP/tensorboard``: the loss of every logged update, its parts and the valid loss at the end
of each epoch) or, without them, its text logs (``EXP/log/log-train-*.txt``).  matplotlib is
optional (extra ``plot``); a picture without data is skipped with a logged reason.
"""

from __future__ import annotations

import glob
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsr.utils import atomic_path

logger = logging.getLogger("dsr")

INSTALL_HINT = "pip install 'dsr[plot]' (or: pip install matplotlib; tools/setup.sh --plot)"

# The trainer's --log-interval and end-of-epoch lines (dsr.training.trainer._log_step / end_epoch).
_STEP_RE = re.compile(r"epoch (\d+) step (\d+): loss (\S+) \(([^)]*)\) lr")
_EPOCH_RE = re.compile(r"epoch (\d+) done: train loss ([^,\s]+)(?:, valid loss ([^,\s]+))?")


@dataclass
class TrainingCurves:
    """Loss curves of one training run.

    ``train``: name ("loss", "simple_loss", "pruned_loss", "ctc_loss", "attention_loss", ...) ->
    [(update, value)], sorted by update; ``valid``: [(epoch, valid loss)], sorted by epoch.
    ``source`` says where they were read ("tensorboard" or "log").
    """

    train: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    valid: list[tuple[int, float]] = field(default_factory=list)
    source: str = ""

    def empty(self) -> bool:
        return not any(self.train.values()) and not self.valid


def _last_per_step(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    # A resumed run logs its updates again from the checkpoint on: the later value wins.
    return sorted(dict(points).items())


def _from_tensorboard(tb_dir: Path) -> TrainingCurves:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves = TrainingCurves(source="tensorboard")
    # One accumulator per event file, oldest first (a resumed run writes a new file), so that
    # the newer values of repeated steps win in _last_per_step.
    scalars: dict[str, list[tuple[int, float]]] = {}
    valid_events: list[tuple[float, int, float]] = []
    for path in sorted(tb_dir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0: keep every point
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            events = acc.Scalars(tag)
            if tag == "valid/loss":
                valid_events += [(e.wall_time, e.step, e.value) for e in events]
            elif tag.startswith("train/") and tag != "train/lr":
                scalars.setdefault(tag.removeprefix("train/"), []).extend((e.step, e.value) for e in events)
    curves.train = {k: _last_per_step(v) for k, v in scalars.items()}
    # Validation runs once per epoch, in order; the events carry the update, not the epoch, so the
    # epoch is the validation's rank (repeats of the same update after a resume count once).
    by_step = _last_per_step([(step, value) for _, step, value in sorted(valid_events)])
    curves.valid = [(i + 1, value) for i, (_, value) in enumerate(by_step)]
    return curves


def _from_logs(log_dir: Path) -> TrainingCurves:
    curves = TrainingCurves(source="log")
    scalars: dict[str, list[tuple[int, float]]] = {}
    valid: list[tuple[int, float]] = []
    # Log files are named by their start time, so the name order is the time order.
    for path in sorted(Path(p) for p in glob.glob(str(log_dir / "log-train-*.txt"))):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if m := _STEP_RE.search(line):
                step = int(m.group(2))
                # The logged loss is the epoch's running mean; the parts are this update's.
                scalars.setdefault("loss", []).append((step, float(m.group(3))))
                words = m.group(4).split()
                for name, value in zip(words[::2], words[1::2]):
                    scalars.setdefault(name, []).append((step, float(value)))
            elif (m := _EPOCH_RE.search(line)) and m.group(3) is not None:
                valid.append((int(m.group(1)), float(m.group(3))))
    curves.train = {k: _last_per_step(v) for k, v in scalars.items()}
    curves.valid = _last_per_step(valid)
    return curves


def read_training_curves(exp_dir: Path) -> TrainingCurves:
    """The loss curves of ``exp_dir`` from its tensorboard events, else from its text logs
    (empty :class:`TrainingCurves` when neither has any)."""
    exp_dir = Path(exp_dir)
    tb_dir = exp_dir / "tensorboard"
    if tb_dir.is_dir():
        try:
            curves = _from_tensorboard(tb_dir)
        except ImportError:  # tensorboard is a dependency, but a stripped install may lack it
            logger.info("tensorboard not importable; reading the training curves from the text logs")
        else:
            if not curves.empty():
                return curves
    return _from_logs(exp_dir / "log")


def _figure(width: float, height: float) -> Any:
    # A bare Figure on the Agg canvas, not pyplot: no display needed, no global figure registry to
    # leak into, and the caller's own pyplot backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def plot_training_curves(curves: TrainingCurves, path: Path, title: str = "") -> Path:
    """Draw train losses against update (left) and valid loss against epoch (right) into ``path``."""
    fig = _figure(12, 4.5)
    left, right = fig.subplots(1, 2)
    for name, points in curves.train.items():
        if points:
            steps, values = zip(*points)
            # The total (thick) against its parts (thin): the parts explain the total.
            left.plot(steps, values, label=name, linewidth=2.0 if name == "loss" else 1.0, marker=".", markersize=3)
    left.set(xlabel="update", ylabel="loss", title="training loss")
    left.grid(alpha=0.3)
    if curves.train:
        left.legend(fontsize="small")
    if curves.valid:
        epochs, values = zip(*curves.valid)
        right.plot(epochs, values, marker="o", color="tab:red")
        right.set_xticks(epochs)
    else:
        right.text(0.5, 0.5, "no validation", ha="center", va="center", transform=right.transAxes)
    right.set(xlabel="epoch", ylabel="loss", title="valid loss")
    right.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_wer(rows: list[dict], path: Path, title: str = "") -> Path:
    """A grouped bar chart of the WER of ``rows`` (``result.json`` dicts): one group per
    decoding method (per exp dir and method for rows of several exp dirs), one bar per split,
    the value written on each bar."""
    from dsr.evaluation.report import row_label

    labels = [row_label(r, rows) for r in rows]  # "exp: method" for rows of several exp dirs
    methods = sorted(set(labels))
    splits = sorted({r["split"] for r in rows})
    wer = {(label, r["split"]): float(r["wer"]) for label, r in zip(labels, rows)}
    width = 0.8 / len(splits)
    fig = _figure(max(6.0, 1.2 * len(methods) * len(splits) + 2), 4.5)
    ax = fig.subplots()
    for i, split in enumerate(splits):
        xs = [m + (i - (len(splits) - 1) / 2) * width for m in range(len(methods))]
        heights = [wer.get((method, split), 0.0) for method in methods]
        present = [(x, h) for x, h, method in zip(xs, heights, methods) if (method, split) in wer]
        if present:
            bars = ax.bar(*zip(*present), width=width, label=split)
            ax.bar_label(bars, fmt="%.2f", fontsize="small")
    ax.set_xticks(range(len(methods)), methods, rotation=20 if len(methods) > 4 else 0)
    ax.set(ylabel="WER %", title=title or "WER by decoding method and split")
    ax.legend(title="split", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return path


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_plots(exp_dir: Path, rows: list[dict]) -> list[Path]:
    """Write ``training_curves.png`` and ``wer.png`` into ``exp_dir`` (next to results.md); a
    picture without data is skipped with a logged reason.  Returns the paths written.
    Needs matplotlib (check :func:`matplotlib_available` first)."""
    exp_dir = Path(exp_dir)
    written = []
    curves = read_training_curves(exp_dir)
    if curves.empty():
        logger.info(
            "no training curves: neither %s nor %s has loss values; training_curves.png skipped",
            exp_dir / "tensorboard",
            exp_dir / "log",
        )
    else:
        written.append(plot_training_curves(curves, exp_dir / "training_curves.png", title=str(exp_dir)))
    if not rows:
        logger.info("no decoding results under %s; wer.png skipped", exp_dir / "decode")
    else:
        written.append(plot_wer(rows, exp_dir / "wer.png", title=f"WER % ({exp_dir})"))
    return written
