"""Data-parallel training: two gloo processes on the CPU.

The first run spawns two workers that set torchrun's environment variables
(WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and call the library's
``train``, with spies on the trainer's writers (which rank wrote what) and on the
model (each rank's final weights).  The resume test runs the real command line,
``torchrun --nproc-per-node 2 -m dsr.cli.main train``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from tiny_corpus import make_tiny_corpus, tiny_train_options

from dsr.errors import DsrUserError

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
    for name in ("write_checkpoint", "save_config", "mark_done", "_tensorboard"):
        real = getattr(trainer, name)
        setattr(trainer, name, lambda *a, _real=real, _name=name, **k: written.append(_name) or _real(*a, **k))
    models = []

    real_build = trainer.build_model
    trainer.build_model = lambda mcfg: models.append(real_build(mcfg)) or models[-1]
    real_loss, calls = trainer.compute_loss, [0]

    def flaky_loss(*args, **kwargs):
        loss, parts = real_loss(*args, **kwargs)
        calls[0] += 1
        if rank == 1 and calls[0] == nan_on_call:
            loss = loss * float("nan")
        return loss, parts

    trainer.compute_loss = flaky_loss
    result = trainer.train(TrainConfig.from_dict(options))
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


def _options(corpus: dict[str, Any], exp: Path, **overrides: Any) -> dict[str, Any]:
    # Dropout and SpecAugment on: their masks must survive a resume too.
    return tiny_train_options(corpus, exp, max_duration=3.0, dropout=0.1, spec_augment=True, **overrides)


def run_torchrun(options: dict[str, Any]) -> subprocess.CompletedProcess:
    flags = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        flags += [flag if value else f"--no-{flag[2:]}"] if isinstance(value, bool) else [flag, str(value)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD_SIZE),
           "--master-port", str(_free_port()), "-m", "dsr.cli.main", "train", *flags]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)


@pytest.fixture(scope="module")
def full_run(corpus, tmp_path_factory) -> tuple[Path, list[dict]]:
    """One epoch on 2 ranks, checkpoints every 2 steps, a NaN loss on rank 1's second batch."""
    work = tmp_path_factory.mktemp("ddp")
    exp = work / "exp"
    return exp, run_two_ranks(_options(corpus, exp, save_every_n=2, keep_last_k=10), work / "out", nan_on_call=2)


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
    assert not torch.equal(
        early["encoder.layers.0.attn.qkv.weight"], final["model"]["encoder.layers.0.attn.qkv.weight"]
    )

    r0, r1 = ranks[0]["result"], ranks[1]["result"]
    # Rank 1's NaN batch was skipped by both ranks: same step count, one skip each.
    assert r0["skipped_batches"] == r1["skipped_batches"] == 1 == final["skipped_batches"]
    assert r0["global_step"] == r1["global_step"] == final["global_step"] >= 3
    # Losses are reduced over the ranks (validation over each rank's share of the dev set).
    assert r0["last_valid_loss"] == r1["last_valid_loss"] and r0["last_valid_loss"] > 0
    assert r0["last_train_loss"] == r1["last_train_loss"]
    assert final["world_size"] == 2

    assert ranks[1]["written"] == []
    assert {"save_config", "_tensorboard", "write_checkpoint", "mark_done"} <= set(ranks[0]["written"])
    assert (exp / "config.yaml").is_file() and (exp / ".done.train").is_file()


def test_torchrun_resumes_mid_epoch_and_ends_with_the_uninterrupted_weights(corpus, full_run, tmp_path):
    """A new 2-process job resumed from the full run's checkpoint-2.pt ends with the full run's weights."""
    full_exp, full = full_run
    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(full_exp / "checkpoint-2.pt", exp)  # as if the job had been killed after writing it
    state = torch.load(exp / "checkpoint-2.pt", weights_only=False)
    assert state["epoch_finished"] is False and state["batch_in_epoch"] == 3  # 2 steps + the skipped batch
    assert len(state["random_states"]) == WORLD_SIZE

    # The rest of the epoch's batches depend on how they were dealt to 2 ranks: 1 process must refuse.
    from dsr.training.config import TrainConfig
    from dsr.training.trainer import train

    with pytest.raises(DsrUserError, match="by 2 training process.*resume with 2"):
        train(TrainConfig.from_dict(_options(corpus, exp)))

    proc = run_torchrun(_options(corpus, exp))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.count("done train:") == 1, proc.stderr  # only rank 0 prints the summary...
    logs = list((exp / "log").glob("log-train-*.txt"))
    assert len(logs) == 1 and f"resuming from {exp}/checkpoint-2.pt" in logs[0].read_text()  # ...and keeps a log
    final = torch.load(exp / "epoch-1.pt", weights_only=False)
    assert final["global_step"] == full[0]["result"]["global_step"] and final["skipped_batches"] == 1
    for k, v in full[0]["model"].items():
        torch.testing.assert_close(final["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("num_buckets", [1, 2])  # SimpleCutSampler, DynamicBucketingSampler
def test_skipping_batches_gives_the_rest_of_the_epoch_on_every_rank(corpus, num_buckets):
    from dsr.data.cuts import load_cuts
    from dsr.training.datamodule import make_loader

    cuts = load_cuts(corpus["train_cuts"]).to_eager()

    def batches(rank: int, skip: int) -> list[list[str]]:
        _, sampler = make_loader(cuts, 3.0, shuffle=True, num_buckets=num_buckets, seed=3, world_size=2, rank=rank)
        sampler.set_epoch(2)
        sampler.skip_batches(skip)
        return [[c.id for c in batch] for batch in sampler]

    for rank in range(WORLD_SIZE):
        full = batches(rank, 0)
        assert len(full) >= 4
        assert batches(rank, 3) == full[3:]
        assert batches(rank, len(full) + 5) == []


def test_env_info_reads_torchrun_variables(monkeypatch):
    from dsr.training.distributed import DistInfo, env_info, step_sync

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert env_info() == DistInfo(1, 0, 0) and env_info().is_main and not env_info().is_distributed
    assert step_sync(123, False, torch.device("cpu"), env_info()) == (1.0, False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(DsrUserError, match="inconsistent; launch with torchrun"):
        env_info()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(DsrUserError, match="RANK='x' is not an integer"):
        env_info()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_info() == DistInfo(4, 3, 1) and not env_info().is_main
