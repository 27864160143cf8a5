"""The training loop's numbers and its progress bar, on the tests' tiny corpus.

The pinned loss lines were logged by the trainer before it was split into setup /
train_one_epoch / validate / save_checkpoint (main at 8cbfac1, one thread): a change in the
order of random draws or of the loss arithmetic shows here first.
tools/compare_training.py checks the same bit for bit, checkpoints included.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console
from rich.logging import RichHandler
from tiny_corpus import make_tiny_corpus, tiny_train_options

PINNED = [
    "epoch 1 step 1: loss 6.0311 (simple_loss 3.942 pruned_loss 3.953 ctc_loss 2.633 attention_loss 1.459) lr 2.00e-03 grad-norm 13.20",
    "epoch 1 step 2: loss 5.7108 (simple_loss 2.823 pruned_loss 4.216 ctc_loss 2.620 attention_loss 1.283) lr 2.00e-03 grad-norm 5.45",
    "epoch 1 step 3: loss 6.3137 (simple_loss 3.252 pruned_loss 4.760 ctc_loss 2.821 attention_loss 2.373) lr 2.00e-03 grad-norm 3.33",
    "epoch 1 step 4: loss 6.1589 (simple_loss 2.342 pruned_loss 3.530 ctc_loss 2.631 attention_loss 1.211) lr 2.00e-03 grad-norm 3.59",
    "epoch 1 step 5: loss 6.3510 (simple_loss 2.707 pruned_loss 3.797 ctc_loss 2.507 attention_loss 1.835) lr 2.00e-03 grad-norm 3.86",
    "epoch 1 step 6: loss 6.3301 (simple_loss 2.499 pruned_loss 3.334 ctc_loss 2.667 attention_loss 1.386) lr 2.00e-03 grad-norm 3.71",
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_tiny_corpus(tmp_path_factory.mktemp("tiny"))


def _config(corpus: dict, exp: Path):
    from dsr.training.config import TrainConfig

    # Dropout, SpecAugment and an attention head: every random draw and every loss term counts.
    return TrainConfig.from_dict(tiny_train_options(
        corpus, exp, max_steps=6, num_epochs=2, dropout=0.1, spec_augment=True, attention_decoder_layers=1,
        attention_decoder_dim=32, attention_decoder_ffn_dim=64,
    ))  # fmt: skip


def _rich_logger(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> io.StringIO:
    """Route dsr's log through a rich handler writing to a string (a terminal or not), as the CLI sets it up."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=200)
    logger = logging.getLogger("dsr")
    monkeypatch.setattr(logger, "handlers", [RichHandler(console=console, show_path=False)])
    monkeypatch.setattr(logger, "propagate", False)
    logger.setLevel(logging.INFO)
    return out


def test_a_tiny_run_logs_the_pinned_losses_under_a_progress_bar(corpus, tmp_path, monkeypatch):
    from dsr.training.trainer import train

    torch.set_num_threads(1)
    out = _rich_logger(monkeypatch, terminal=True)
    result = train(_config(corpus, tmp_path / "exp"), progress=True)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # terminal control sequences
    assert [line for line in PINNED if line in text] == PINNED
    assert result.global_step == 6 and f"{result.last_train_loss:.4f}" == "6.3301"
    # The bar: updates done of those expected (capped by --max-steps), the last loss, elapsed time and ETA.
    assert re.search(r"training .* 6/6 updates, loss \d+\.\d{4} \d:\d\d:\d\d ETA \d:\d\d:\d\d", text), text[-2000:]


def test_no_progress_bar_off_a_terminal_or_without_rich_logging(corpus, tmp_path, monkeypatch):
    from dsr.training.distributed import DistInfo
    from dsr.training.trainer import TrainProgress, setup

    torch.set_num_threads(1)
    out = _rich_logger(monkeypatch, terminal=False)
    state = setup(_config(corpus, tmp_path / "exp"), DistInfo(), torch.device("cpu"))
    with TrainProgress(False, state) as progress:  # the CLI's show_progress() is False off a terminal
        progress.update(1.0)
    assert "training" not in out.getvalue() and progress.console is None
    monkeypatch.setattr(logging.getLogger("dsr"), "handlers", [logging.StreamHandler(io.StringIO())])
    assert TrainProgress(True, state).console is None  # logging set up without rich: no bar
    # Before any epoch: an estimate from the audio's duration, capped by --max-steps.
    assert TrainProgress(True, state).expected_updates() == 6


def test_train_one_epoch_and_validate_are_usable_on_their_own(corpus, tmp_path):
    """The stage functions work from a TrainState alone, as a script or a new model type would call them."""
    from dsr.training.distributed import DistInfo
    from dsr.training.trainer import end_epoch, setup, train_one_epoch

    torch.set_num_threads(1)
    state = setup(_config(corpus, tmp_path / "exp"), DistInfo(), torch.device("cpu"))
    train_one_epoch(state, 1)
    assert state.global_step == 6 and state.batches_done == 0 and state.last_train == pytest.approx(6.3301, abs=1e-4)
    end_epoch(state, 1)
    assert state.last_valid is not None and (tmp_path / "exp/epoch-1.pt").is_file()
