"""Data-parallel training: two gloo processes on the CPU run `dsr.training.trainer.train` as torchrun would.

Each worker process sets torchrun's environment variables (WORLD_SIZE, RANK,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and calls the library's ``train``; spies on
the trainer's writers record which rank wrote what, and each rank saves its final
weights for the test to compare.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from dsr.errors import DsrUserError
from tiny_corpus import make_tiny_corpus, tiny_train_options

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, options: dict[str, Any], out_dir: Path, nan_on_call: int) -> None:
    """One rank: train with spies on; rank 1 gets a NaN loss on its ``nan_on_call``-th batch (0 = never)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD_SIZE),
                      RANK=str(rank), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    from dsr.training import trainer
    from dsr.training.config import TrainConfig

    written: list[str] = []
    for name in ("save_checkpoint", "save_config", "mark_done", "_tensorboard"):
        real = getattr(trainer, name)
        setattr(trainer, name, lambda *a, _real=real, _name=name, **k: written.append(_name) or _real(*a, **k))
    models = []

    def build_model(mcfg):
        models.append(real_build(mcfg))
        # Checkpoints do not carry random-number states, so an exact resume needs no random draws:
        # the tiny config has dropout 0 and no SpecAugment; this is the CTC head's fixed dropout.
        models[-1].ctc_output[0].p = 0.0
        return models[-1]

    real_build, trainer.build_model = trainer.build_model, build_model
    real_loss, calls = trainer.compute_loss, [0]

    def flaky_loss(*args, **kwargs):
        loss, parts = real_loss(*args, **kwargs)
        calls[0] += 1
        if rank == 1 and calls[0] == nan_on_call:
            loss = loss * float("nan")
        return loss, parts

    trainer.compute_loss = flaky_loss
    result = trainer.train(TrainConfig(**options))
    torch.save({"model": models[0].state_dict(), "written": written, "result": dataclasses.asdict(result)},
               out_dir / f"rank{rank}.pt")  # fmt: skip


def run_two_ranks(options: dict[str, Any], out_dir: Path, nan_on_call: int = 0, timeout: float = 120) -> list[dict]:
    """Train with 2 processes; returns what each rank saved.  A hang (e.g. one rank skipping a step) fails."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = mp.spawn(_worker, args=(_free_port(), options, out_dir, nan_on_call), nprocs=WORLD_SIZE, join=False)
    try:
        deadline = time.time() + timeout
        while not ctx.join(timeout=1):
            assert time.time() < deadline, "the ranks did not finish: a collective is waiting for ever"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Any]:
    return make_tiny_corpus(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def full_run(corpus, tmp_path_factory) -> tuple[Path, list[dict]]:
    """One epoch on 2 ranks, checkpoints every 2 steps, a NaN loss on rank 1's second batch."""
    work = tmp_path_factory.mktemp("ddp")
    exp = work / "exp"
    return exp, run_two_ranks(tiny_train_options(corpus, exp, max_duration=3.0, save_every_n=2, keep_last_k=10),
                              work / "out", nan_on_call=2)  # fmt: skip


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_ranks_stay_identical_skip_together_and_only_rank0_writes(full_run):
    exp, ranks = full_run
    _assert_same_weights(ranks[0]["model"], ranks[1]["model"])
    final = torch.load(exp / "epoch-1.pt", weights_only=False)
    _assert_same_weights(final["model"], ranks[0]["model"])
    early = torch.load(exp / "checkpoint-2.pt", weights_only=False)["model"]
    assert not torch.equal(early["encoder.layers.0.attn.qkv.weight"], final["model"]["encoder.layers.0.attn.qkv.weight"])

    r0, r1 = ranks[0]["result"], ranks[1]["result"]
    # Rank 1's NaN batch was skipped by both ranks: same step count, one skip each.
    assert r0["skipped_batches"] == r1["skipped_batches"] == 1 == final["skipped_batches"]
    assert r0["global_step"] == r1["global_step"] == final["global_step"] >= 3
    # Losses are reduced over the ranks (validation over each rank's share of the dev set).
    assert r0["last_valid_loss"] == r1["last_valid_loss"] and r0["last_valid_loss"] > 0
    assert r0["last_train_loss"] == r1["last_train_loss"]
    assert final["world_size"] == 2

    assert ranks[1]["written"] == []
    assert {"save_config", "_tensorboard", "save_checkpoint", "mark_done"} <= set(ranks[0]["written"])
    assert (exp / "config.yaml").is_file() and (exp / ".done.train").is_file()


def test_resume_mid_epoch_with_two_ranks_continues_exactly(corpus, full_run, tmp_path):
    """Resumed from the full run's checkpoint-2.pt, a new job ends with the full run's weights."""
    full_exp, full = full_run
    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(full_exp / "checkpoint-2.pt", exp)  # as if the job had been killed after writing it
    state = torch.load(exp / "checkpoint-2.pt", weights_only=False)
    assert state["epoch_finished"] is False and state["batch_in_epoch"] == 3  # 2 steps + the skipped batch

    # The rest of the epoch's batches depend on how they were dealt to 2 ranks: 1 process must refuse.
    from dsr.training.config import TrainConfig
    from dsr.training.trainer import train

    with pytest.raises(DsrUserError, match="by 2 training process.*resume with 2"):
        train(TrainConfig(**tiny_train_options(corpus, exp, max_duration=3.0)))

    resumed = run_two_ranks(tiny_train_options(corpus, exp, max_duration=3.0), tmp_path / "out")
    assert resumed[0]["result"]["global_step"] == full[0]["result"]["global_step"]
    assert resumed[0]["result"]["skipped_batches"] == 1  # counted before the checkpoint
    for r in range(WORLD_SIZE):
        for k, v in full[r]["model"].items():
            torch.testing.assert_close(resumed[r]["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
