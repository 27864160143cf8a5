"""Data-parallel training (DDP) under torchrun: process group, device per rank, and the trainer's collectives.

``torchrun --nproc-per-node N -m dsr.cli.main train ...`` starts N copies of
``dsr train`` and tells each its place through ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` (plus ``MASTER_ADDR``/``MASTER_PORT``).  Every process builds the
same model from the same seed, takes its own share of the batches (lhotse's
samplers give rank r every N-th batch and the same number of batches to every
rank), and :class:`~torch.nn.parallel.DistributedDataParallel` averages the
gradients.  Without those variables (a plain ``dsr train``) every helper here is
a no-op, so the single-process path is unchanged.

The collectives are few and small: one per step (frame count + a non-finite
flag, see :func:`step_sync`), one per log line, one per validation, one per
checkpoint (the ranks' random-number states).  They are
always reached by every rank at the same step, because the ranks see the same
number of batches and make every skip decision together.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from dsr.errors import DsrUserError, OptionError

logger = logging.getLogger("dsr")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly one-process) training job."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, TensorBoard events, config.yaml and the done marker."""
        return self.rank == 0


def env_info() -> DistInfo:
    """This process's place in a torchrun job, read from its environment (one process when not under torchrun)."""
    values = {}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        raw = os.environ.get(var, "")
        try:
            values[var] = int(raw) if raw else None
        except ValueError:
            raise DsrUserError(f"environment variable {var}={raw!r} is not an integer; launch with torchrun") from None
    world_size = values["WORLD_SIZE"] or 1
    rank = values["RANK"] or 0
    local_rank = values["LOCAL_RANK"] if values["LOCAL_RANK"] is not None else rank
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise DsrUserError(
            f"WORLD_SIZE={world_size}, RANK={rank}, LOCAL_RANK={local_rank} are inconsistent; launch with torchrun"
        )
    return DistInfo(world_size, rank, local_rank)


def device_for_rank(device: torch.device, requested: str, info: DistInfo) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` on GPUs (one process per GPU), else ``device``.

    ``requested`` is the user's ``--device`` string, used to refuse ``cuda:N``: every
    rank would then share GPU N, which NCCL does not allow.
    """
    if not info.is_distributed or device.type != "cuda":
        return device
    if ":" in requested:
        raise OptionError(
            f"{{device}} {requested} pins every torchrun process to one GPU; use {{device}} cuda (or auto): "
            "each process takes cuda:LOCAL_RANK"
        )
    if info.local_rank >= torch.cuda.device_count():
        raise DsrUserError(
            f"LOCAL_RANK {info.local_rank} needs GPU {info.local_rank} but this node has {torch.cuda.device_count()}; "
            "lower torchrun's --nproc-per-node"
        )
    return torch.device("cuda", info.local_rank)


@contextlib.contextmanager
def process_group(info: DistInfo, device: torch.device) -> Iterator[None]:
    """Join the job's process group (NCCL on CUDA, gloo on CPU) for the duration of the block.

    A group that the caller already initialised is used as it is and left open.
    """
    if not info.is_distributed or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
    logger.info("joined a %d-process %s group as rank %d", info.world_size, backend, info.rank)
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap_model(
    model: torch.nn.Module, device: torch.device, info: DistInfo, find_unused_parameters: bool
) -> torch.nn.Module:
    """``model`` wrapped in DDP (which also copies rank 0's weights to every rank); ``model`` itself with one process.

    ``forward_sync_buffers=False``: the model's buffers (feature statistics, rotary
    tables) are copied from rank 0 once, at wrapping, and never change in training;
    syncing them again would add a collective to every forward pass.
    ``find_unused_parameters`` is needed when some parameters take no part in the
    loss (e.g. the CTC head with ``--ctc-loss-scale 0``); it costs a graph traversal
    per step, so it is off otherwise.
    """
    if not info.is_distributed:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=False,
        find_unused_parameters=find_unused_parameters,
    )


def step_sync(local_frames: int, loss_is_finite: bool, device: torch.device, info: DistInfo) -> tuple[float, bool]:
    """One all-reduce per step: this rank's loss weight, and whether every rank's loss is finite.

    The trainer's loss is summed over the batch and divided by the batch's encoder
    frames.  DDP then *averages* the ranks' gradients, which would weigh every rank
    equally whatever its number of frames.  Scaling rank r's loss by
    ``W * F_r / sum(F)`` makes the averaged gradient exactly that of the loss of
    the union of the ranks' batches divided by its frames, as one process with a
    W-times larger batch would compute.

    If any rank's loss is not finite, every rank must skip the batch: a rank that
    skips ``backward()`` while the others run it leaves them waiting in DDP's
    gradient all-reduce for ever.

    Returns (weight, all finite); (1.0, loss_is_finite) with one process.
    """
    if not info.is_distributed:
        return 1.0, loss_is_finite
    buf = torch.tensor([float(local_frames), 0.0 if loss_is_finite else 1.0], dtype=torch.float64, device=device)
    dist.all_reduce(buf)
    total_frames, num_non_finite = buf.tolist()
    return info.world_size * local_frames / max(total_frames, 1.0), num_non_finite == 0


def sum_across_ranks(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (``values`` itself with one process)."""
    if not info.is_distributed:
        return list(values)
    buf = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(buf)
    return buf.tolist()


def mean_across_ranks(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    return [v / info.world_size for v in sum_across_ranks(values, device, info)]


def broadcast_from_main(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (a small picklable object, e.g. a path)."""
    if not info.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_all(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (small and picklable), in rank order, on every rank; ``[obj]`` with one process."""
    if not info.is_distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(device: torch.device, info: DistInfo) -> None:
    if info.is_distributed:
        dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)
