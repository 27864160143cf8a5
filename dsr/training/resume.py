"""Resuming a run: which checkpoint, and restoring the parts whose fit must be checked.

A checkpoint resumes exactly: the model, optimiser, scheduler, grad scaler, running
average and counters are restored, and a mid-epoch checkpoint's epoch goes on
after the batches it had seen (the trainer replays the sampler, see
:class:`dsr.training.datamodule.ResumableSampler`).  Every rank's random-number
states are saved too, so dropout and SpecAugment (in the main process) draw the
masks they would have drawn without the interruption: a resumed float32 run on
the CPU ends with the same weights as an uninterrupted one (tests/test_ddp.py).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsr.errors import DsrUserError
from dsr.models.checkpoint import latest_checkpoint, load_checkpoint
from dsr.training import distributed
from dsr.training.config import TrainConfig
from dsr.training.distributed import DistInfo
from dsr.training.init import split_patterns
from dsr.training.model_average import ModelAverager

logger = logging.getLogger("dsr")


def find_resume_state(cfg: TrainConfig, exp_dir: Path, info: DistInfo) -> tuple[dict[str, Any], Path] | None:
    """The checkpoint to resume from, and its path.  Rank 0 picks it, so every rank loads the same one."""
    if cfg.start_epoch == 0:
        # Only rank 0 scans: finding the newest checkpoint reads every checkpoint in exp-dir.
        path = latest_checkpoint(exp_dir) if info.is_main else None
    elif cfg.start_epoch == 1:
        path = None
    else:
        path = exp_dir / f"epoch-{cfg.start_epoch - 1}.pt"
        if not path.is_file():
            raise DsrUserError(f"--start-epoch {cfg.start_epoch} needs {path}; it does not exist")
    path = distributed.broadcast_from_main(path, info)
    if path is None:
        return None
    if not path.is_file():
        raise DsrUserError(
            f"rank {info.rank} cannot see {path}: with several nodes, --exp-dir must be on a filesystem they all share"
        )
    logger.info("resuming from %s", path)
    return load_checkpoint(path), path


def restore_average(averager: ModelAverager, state: dict[str, Any]) -> None:
    if "model_avg" not in state:
        logger.warning(
            "the checkpoint has no running model average; it starts afresh at step %d, so "
            "decoding with --use-averaged-model needs epochs trained from here on",
            state["global_step"],
        )
        return
    try:
        averager.load_state_dict(state["model_avg"])
    except ValueError as e:
        raise DsrUserError(str(e)) from e


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Load the optimiser state, which only fits if the same parameters are trainable as when it was saved."""
    saved_freeze = state.get("train_config", {}).get("freeze", "")
    if split_patterns(saved_freeze) != split_patterns(cfg.freeze):
        raise DsrUserError(
            f"{path} was trained with --freeze {saved_freeze!r}, this run has --freeze {cfg.freeze!r}; resume with the "
            "same --freeze, or start a new --exp-dir with --init-from to change what is trained"
        )
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as e:
        raise DsrUserError(f"the optimizer state in {path} does not fit this model ({e}); use a new --exp-dir") from e


def check_mid_epoch_resume(state: dict[str, Any], path: Path, info: DistInfo) -> None:
    """A mid-epoch checkpoint can only be continued by as many processes as wrote it.

    Which batches remain in the epoch depends on how lhotse dealt them to the ranks;
    epoch-end checkpoints have no such state and resume with any number of processes.
    """
    saved = state.get("world_size", 1)
    if saved != info.world_size:
        epoch = state["epoch"]
        raise DsrUserError(
            f"{path} was written in the middle of epoch {epoch} by {saved} training process(es), this run has "
            f"{info.world_size}: resume with {saved}, or restart epoch {epoch} from its start with --start-epoch {epoch}"
        )


def random_states(device: torch.device) -> dict[str, Any]:
    """This process's random-number generator states (Python, NumPy, torch CPU and, on a GPU, CUDA)."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_random_states(saved: list[dict[str, Any]] | None, device: torch.device, info: DistInfo) -> None:
    """Set this rank's generators to the states it had at the checkpoint (``saved`` has one entry per rank)."""
    if not saved or len(saved) != info.world_size:
        logger.info(
            "random-number states not restored (the checkpoint has %s for %d processes): "
            "dropout and SpecAugment masks will differ from an uninterrupted run",
            len(saved) if saved else "none",
            info.world_size,
        )
        return
    states = saved[info.rank]
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)
