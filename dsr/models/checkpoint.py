"""Checkpoints for inference: find, load and average the weights a decode reads.

Training writes ``epoch-<E>.pt`` at the end of epoch E (1-based) and ``checkpoint-<step>.pt``
every ``save_every_n`` steps (:mod:`dsr.training.checkpoint`); both hold the model's
weights and config, and may hold the trainer's running model average (``model_avg``,
written by :class:`dsr.training.model_average.ModelAverager`).  Reading them lives here,
beside the models, so decoding and transcription never import training code.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from dsr.errors import DsrUserError, OptionError
from dsr.utils import atomic_path

logger = logging.getLogger("dsr")

_EPOCH = re.compile(r"^epoch-(\d+)\.pt$")
_STEP = re.compile(r"^checkpoint-(\d+)\.pt$")


def _numbered(exp_dir: Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
    if not exp_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in exp_dir.iterdir() if (m := pattern.match(p.name))]
    return sorted(found)


def epoch_checkpoints(exp_dir: Path) -> list[tuple[int, Path]]:
    return _numbered(Path(exp_dir), _EPOCH)


def step_checkpoints(exp_dir: Path) -> list[tuple[int, Path]]:
    return _numbered(Path(exp_dir), _STEP)


def latest_checkpoint(exp_dir: Path) -> Path | None:
    """The checkpoint with the largest global step, whichever kind it is."""
    best: tuple[int, Path] | None = None
    for _, p in epoch_checkpoints(exp_dir) + step_checkpoints(exp_dir):
        try:
            step = torch.load(p, map_location="cpu", weights_only=False)["global_step"]
        except Exception as e:  # a checkpoint cut short by a crash is skipped, not fatal
            logger.warning("ignoring unreadable checkpoint %s: %s", p, e)
            continue
        if best is None or step > best[0]:
            best = (step, p)
    return best[1] if best else None


def load_checkpoint(path: Path | str, option: str | None = None) -> dict[str, Any]:
    """The checkpoint at ``path``; ``option`` is the option or argument that named it
    (``checkpoint``, ``teacher``): a missing file is an :class:`~dsr.errors.OptionError` naming it,
    which each command shows as its flag."""
    path = Path(path)
    if not path.is_file():
        if option is None:
            raise DsrUserError(f"checkpoint {path} does not exist; train first")
        raise OptionError(f"{{{option}}} {path} does not exist; train first or give another {{{option}}}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise DsrUserError(f"checkpoint {path} is unreadable ({e}); delete it and use another") from e


def average_checkpoints(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the models' floating-point parameters (integers from the last)."""
    if not paths:
        raise ValueError("average_checkpoints needs at least one checkpoint")
    avg: dict[str, torch.Tensor] | None = None
    sd: dict[str, torch.Tensor] = {}
    for p in paths:
        sd = load_checkpoint(p)["model"]
        if avg is None:
            avg = {k: v.clone().double() if v.is_floating_point() else v.clone() for k, v in sd.items()}
        else:
            for k, v in sd.items():
                if v.is_floating_point():
                    avg[k] += v.double()
                else:
                    avg[k] = v.clone()
    assert avg is not None
    n = len(paths)
    # ``sd`` is the last checkpoint's weights: the reference for the output dtypes.
    return {k: (v / n).to(sd[k].dtype) if sd[k].is_floating_point() else v for k, v in avg.items()}


def resolve_model_checkpoint(
    exp_dir: Path, epoch: int = 0, avg: int = 1, use_averaged_model: bool = True
) -> tuple[dict[str, Any], str]:
    """Model weights for decoding: epoch E averaged over ``avg`` epochs, or the newest.

    With ``use_averaged_model`` (and checkpoints that carry the trainer's running
    model average, see :class:`dsr.training.model_average.ModelAverager`) the weights are the mean
    of every model sampled during epochs E-avg+1..E, which needs ``epoch-<E-avg>.pt``
    (none when E-avg is 0); otherwise the mean of the ``avg`` epoch-end checkpoints.

    Returns (checkpoint dict with averaged ``model``, a short description like
    ``epoch-10-avg-3`` or ``epoch-10-avg-3-averaged-model``).
    """
    exp_dir = Path(exp_dir)
    epochs = dict(epoch_checkpoints(exp_dir))
    if avg < 1:
        raise OptionError("avg", f"must be >= 1 (got {avg})")
    if epoch <= 0:
        if not epochs:
            latest = latest_checkpoint(exp_dir)
            if latest is None:
                raise DsrUserError(f"no checkpoints in {exp_dir}; run dsr train first")
            return load_checkpoint(latest), latest.stem
        epoch = max(epochs)
    if epoch not in epochs:
        raise OptionError(f"{{epoch}} {epoch} needs epoch-{epoch}.pt in {exp_dir}")
    if avg > epoch:
        raise OptionError(f"{{avg}} {avg} is more than the {epoch} epochs up to {{epoch}} {epoch}")
    ckpt = load_checkpoint(epochs[epoch])
    if use_averaged_model:
        averaged = _averaged_model(ckpt, epochs, epoch - avg, exp_dir)
        if averaged is not None:
            ckpt["model"] = averaged
            return ckpt, f"epoch-{epoch}-avg-{avg}-averaged-model"
    wanted = list(range(epoch - avg + 1, epoch + 1))
    missing = [e for e in wanted if e not in epochs]
    if missing:
        raise OptionError(
            f"{{epoch}} {epoch} {{avg}} {avg} needs {', '.join(f'epoch-{e}.pt' for e in missing)} in {exp_dir}"
        )
    if avg > 1:
        ckpt["model"] = average_checkpoints([epochs[e] for e in wanted])
    return ckpt, f"epoch-{epoch}-avg-{avg}"


def _averaged_model(
    end: dict[str, Any], epochs: dict[int, Path], start_epoch: int, exp_dir: Path
) -> dict[str, torch.Tensor] | None:
    """The running-average weights over epochs (start_epoch, end], or None (with the reason logged)."""
    if "model_avg" not in end:
        logger.warning(
            "%s has no running model average (trained with --average-period 0 or an older dsr); "
            "averaging epoch-end checkpoints instead",
            exp_dir,
        )
        return None
    start = None
    if start_epoch >= 1:
        if start_epoch not in epochs:
            raise OptionError(
                f"the averaged model over the last epochs needs epoch-{start_epoch}.pt in {exp_dir} "
                "(or pass {not:use_averaged_model})"
            )
        start = load_checkpoint(epochs[start_epoch]).get("model_avg")
        if start is None:
            logger.warning(
                "epoch-%d.pt in %s has no running model average; averaging epoch-end checkpoints instead",
                start_epoch,
                exp_dir,
            )
            return None
    n_start = 0 if start is None else start["num_averaged"]
    if end["model_avg"]["num_averaged"] <= n_start:
        logger.warning(
            "no model was sampled for the running average during the epochs asked for in %s "
            "(fewer steps than --average-period); averaging epoch-end checkpoints instead",
            exp_dir,
        )
        return None
    try:
        return average_between(start, end["model_avg"], end["model"])
    except ValueError as e:
        raise DsrUserError(f"cannot average the models in {exp_dir}: {e}") from e


def average_between(
    start: dict[str, Any] | None, end: dict[str, Any], reference: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Mean of the models sampled after ``start`` and up to ``end`` (two :meth:`ModelAverager.state_dict`).

    ``start=None`` means the beginning of training.  ``reference`` is a model state
    dict (usually ``end``'s checkpoint's) that supplies the non-float entries and
    the output dtypes.
    """
    n_end = int(end["num_averaged"])
    n_start = 0 if start is None else int(start["num_averaged"])
    if start is not None and start["period"] != end["period"]:
        raise ValueError(f"model averages sampled every {start['period']} and {end['period']} steps cannot be combined")
    if n_end <= n_start:
        raise ValueError(
            f"no model was sampled between the two checkpoints ({n_start} and {n_end} samples); "
            "train longer or with a smaller dsr train --average-period"
        )
    out = dict(reference)
    for k, avg_end in end["weights"].items():
        total = avg_end * n_end
        if start is not None:
            total = total - start["weights"][k] * n_start
        out[k] = (total / (n_end - n_start)).to(reference[k].dtype)
    return out


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a reader never sees half a file)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
