"""Training curves and the WER table as PNGs next to results.md (dsr.evaluation.plots, dsr results --plot).

Run: PYTHONPATH=. python -m pytest tests/test_plots.py -q
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from tiny_corpus import make_tiny_corpus, tiny_train_options
from typer.testing import CliRunner

pytest.importorskip("matplotlib", reason="matplotlib is absent: pip install 'dsr[plot]' (or tools/setup.sh --plot)")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A real tiny `dsr train` run: 2 epochs, logged every update, validated after each epoch;
    returns the exp dir and its number of updates."""
    from dsr.training.config import TrainConfig
    from dsr.training.trainer import train

    root = tmp_path_factory.mktemp("plots")
    corpus = make_tiny_corpus(root / "corpus")
    torch.set_num_threads(1)
    exp = root / "exp"
    result = train(TrainConfig.from_dict(tiny_train_options(corpus, exp, num_epochs=2)), progress=False)
    return exp, result.global_step


def _fake_results(exp: Path) -> list[dict]:
    rows = []
    for method, split, wer in [("greedy", "dev", 12.5), ("greedy", "test", 14.0), ("beam", "dev", 11.0)]:
        row = dict(method=method, split=split, checkpoint="epoch-2.pt", wer=wer, errors=10, ref_words=80)
        row.update(num_utts=4, rtf=0.01)
        (exp / "decode" / split / method).mkdir(parents=True, exist_ok=True)
        (exp / "decode" / split / method / "result.json").write_text(json.dumps(row))
        rows.append(row)
    return rows


def _check_png(path: Path, width: int, height: int) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000, (path, len(data))
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width), pixels.shape
    assert pixels[..., :3].std() > 0.01  # something was drawn, not a blank canvas


def test_curves_come_from_the_tensorboard_events(trained):
    from dsr.evaluation.plots import read_training_curves

    exp, updates = trained
    assert updates > 2
    curves = read_training_curves(exp)
    assert curves.source == "tensorboard"
    # --log-interval 1: one point per update for the total and each part the tiny model logs.
    assert set(curves.train) >= {"loss", "simple_loss", "pruned_loss", "ctc_loss"}
    for name, points in curves.train.items():
        assert [step for step, _ in points] == list(range(1, updates + 1)), name
    assert [epoch for epoch, _ in curves.valid] == [1, 2]
    assert all(v > 0 for _, v in curves.valid)


def test_curves_from_the_text_log_when_there_are_no_events(tmp_path):
    from dsr.evaluation.plots import read_training_curves

    log = tmp_path / "log" / "log-train-2026-01-01-00-00-00.txt"
    log.parent.mkdir()
    log.write_text(
        "2026-01-01 00:00:01 INFO epoch 1 step 1: loss 6.0311 (simple_loss 3.942 ctc_loss 2.633) lr 2.00e-03 grad-norm 13.20\n"
        "2026-01-01 00:00:02 INFO epoch 1 step 2: loss 5.7108 (simple_loss 2.823 ctc_loss 2.620) lr 2.00e-03 grad-norm 5.45\n"
        "2026-01-01 00:00:03 INFO epoch 1 done: train loss 5.8000, valid loss 5.5000, 0.1 min elapsed\n"
        "2026-01-01 00:00:04 INFO epoch 2 step 3: loss 5.1000 (simple_loss 2.500 ctc_loss 2.400) lr 2.00e-03 grad-norm 4.00\n"
        "2026-01-01 00:00:05 INFO epoch 2 done: train loss 5.1000, valid loss 5.2500, 0.2 min elapsed\n"
    )
    curves = read_training_curves(tmp_path)
    assert curves.source == "log"
    assert curves.train["loss"] == [(1, 6.0311), (2, 5.7108), (3, 5.1)]
    assert curves.train["ctc_loss"] == [(1, 2.633), (2, 2.62), (3, 2.4)]
    assert curves.valid == [(1, 5.5), (2, 5.25)]


def test_both_pictures_are_written_next_to_results_md(trained, tmp_path):
    from dsr.cli.main import app

    exp, _ = trained
    rows = _fake_results(exp)
    result = CliRunner().invoke(app, ["results", "--exp-dir", str(exp), "--plot"])
    assert result.exit_code == 0, result.output
    assert (exp / "results.md").is_file()
    _check_png(exp / "training_curves.png", 1200, 450)
    # 2 methods x 2 splits: 1.2 in per bar group and split, 2 in of margins, at 100 dpi.
    _check_png(exp / "wer.png", int(100 * (1.2 * 2 * 2 + 2)), 450)
    assert not list(exp.glob(".*.png"))  # atomic writes leave no temporary file behind
    assert len(rows) == 3


def test_missing_data_skips_a_picture_with_a_reason(tmp_path, caplog):
    from dsr.evaluation.plots import write_plots

    with caplog.at_level(logging.INFO, logger="dsr"):
        logging.getLogger("dsr").propagate = True
        try:
            assert write_plots(tmp_path, []) == []
        finally:
            logging.getLogger("dsr").propagate = False
    assert "training_curves.png skipped" in caplog.text and "wer.png skipped" in caplog.text
    assert not list(tmp_path.glob("*.png"))


def test_no_plot_writes_no_picture_and_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    from dsr.cli.main import app
    from dsr.evaluation import plots

    exp = tmp_path / "exp"
    _fake_results(exp)
    result = CliRunner().invoke(app, ["results", "--exp-dir", str(exp), "--no-plot"])
    assert result.exit_code == 0 and not list(exp.glob("*.png")), result.output
    monkeypatch.setattr(plots, "matplotlib_available", lambda: False)
    result = CliRunner().invoke(app, ["results", "--exp-dir", str(exp), "--plot"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--plot needs matplotlib: pip install 'dsr[plot]'" in result.output, result.output
    # The default (neither flag) without matplotlib: the table, and one line on how to get pictures.
    result = CliRunner().invoke(app, ["results", "--exp-dir", str(exp)])
    assert result.exit_code == 0 and (exp / "results.md").is_file() and not list(exp.glob("*.png"))
    assert "no pictures: matplotlib is not installed (pip install 'dsr[plot]'" in result.output, result.output
