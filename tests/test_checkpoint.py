import copy

import pytest
import torch

from dsr.errors import DsrUserError
from dsr.models.checkpoint import average_between, average_checkpoints, resolve_model_checkpoint, save_checkpoint
from dsr.training.model_average import ModelAverager


def _save(path, value, step):
    save_checkpoint(path, {"model": {"w": torch.full((2,), value), "n": torch.tensor(step)}, "global_step": step})


def test_average_floats_and_keep_last_integers(tmp_path):
    _save(tmp_path / "epoch-1.pt", 1.0, 10)
    _save(tmp_path / "epoch-2.pt", 3.0, 20)
    avg = average_checkpoints([tmp_path / "epoch-1.pt", tmp_path / "epoch-2.pt"])
    assert torch.equal(avg["w"], torch.tensor([2.0, 2.0])) and avg["w"].dtype == torch.float32
    assert int(avg["n"]) == 20


def test_resolve_epoch_avg_and_missing(tmp_path):
    for e, v in [(1, 1.0), (2, 2.0), (3, 6.0)]:
        _save(tmp_path / f"epoch-{e}.pt", v, e)
    ckpt, tag = resolve_model_checkpoint(tmp_path, epoch=3, avg=2)
    assert tag == "epoch-3-avg-2" and torch.equal(ckpt["model"]["w"], torch.tensor([4.0, 4.0]))
    with pytest.raises(DsrUserError, match="avg 4 is more than the 3 epochs up to epoch 3"):
        resolve_model_checkpoint(tmp_path, epoch=3, avg=4)
    (tmp_path / "epoch-2.pt").unlink()
    with pytest.raises(DsrUserError, match="epoch-2.pt"):
        resolve_model_checkpoint(tmp_path, epoch=3, avg=2)


def _linear(value: float) -> torch.nn.Linear:
    m = torch.nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.fill_(value)
        m.bias.fill_(-value)
    return m


def test_model_averager_is_the_mean_of_sampled_steps_and_between_is_exact():
    model = torch.nn.Linear(2, 1)
    averager = ModelAverager(model, period=3)
    snapshots = {}
    for step in range(1, 13):
        with torch.no_grad():
            model.weight.fill_(float(step * step))  # any non-linear trajectory
        averager.update(model, step)
        if step in (6, 12):
            snapshots[step] = copy.deepcopy(averager.state_dict())
    sampled = [3, 6, 9, 12]
    assert averager.num_averaged == 4
    assert torch.allclose(
        averager.weights["weight"], torch.full((1, 2), sum(s * s for s in sampled) / 4.0, dtype=torch.float64)
    )
    between = average_between(snapshots[6], snapshots[12], model.state_dict())
    assert torch.allclose(between["weight"], torch.full((1, 2), (81 + 144) / 2.0))
    assert between["weight"].dtype == torch.float32
    with pytest.raises(ValueError, match="no model was sampled"):
        average_between(snapshots[12], snapshots[12], model.state_dict())


def test_model_averager_rejects_a_different_period():
    model = torch.nn.Linear(2, 1)
    state = ModelAverager(model, period=3).state_dict()
    with pytest.raises(ValueError, match="same average_period"):
        ModelAverager(model, period=5).load_state_dict(state)
    with pytest.raises(ValueError, match="period"):
        ModelAverager(model, period=0)


def _train_epochs(tmp_path, steps_per_epoch: int, epochs: int, period: int, with_avg: bool = True):
    """Epoch checkpoints of a model whose weight equals the global step."""
    model = torch.nn.Linear(2, 1)
    averager = ModelAverager(model, period)
    step = 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            step += 1
            with torch.no_grad():
                model.weight.fill_(float(step))
            averager.update(model, step)
        state = {"model": {k: v.clone() for k, v in model.state_dict().items()}, "global_step": step}
        if with_avg:
            state["model_avg"] = copy.deepcopy(averager.state_dict())
        save_checkpoint(tmp_path / f"epoch-{epoch}.pt", state)


def test_resolve_uses_the_running_average_of_the_last_epochs(tmp_path):
    _train_epochs(tmp_path, steps_per_epoch=10, epochs=4, period=2)
    ckpt, tag = resolve_model_checkpoint(tmp_path, epoch=4, avg=1)
    assert tag == "epoch-4-avg-1-averaged-model"
    assert torch.allclose(ckpt["model"]["weight"], torch.full((1, 2), sum(range(32, 41, 2)) / 5.0))
    ckpt, _ = resolve_model_checkpoint(tmp_path, epoch=3, avg=3)  # from the start of training
    assert torch.allclose(ckpt["model"]["weight"], torch.full((1, 2), sum(range(2, 31, 2)) / 15.0))
    ckpt, tag = resolve_model_checkpoint(tmp_path, epoch=4, avg=2, use_averaged_model=False)
    assert tag == "epoch-4-avg-2" and torch.allclose(ckpt["model"]["weight"], torch.full((1, 2), 35.0))
    (tmp_path / "epoch-2.pt").unlink()
    with pytest.raises(DsrUserError, match="epoch-2.pt"):
        resolve_model_checkpoint(tmp_path, epoch=4, avg=2)
    with pytest.raises(DsrUserError, match="avg 5 is more than"):
        resolve_model_checkpoint(tmp_path, epoch=4, avg=5)


def test_resolve_falls_back_to_epoch_checkpoints_without_a_running_average(tmp_path, caplog):
    _train_epochs(tmp_path, steps_per_epoch=10, epochs=2, period=2, with_avg=False)
    ckpt, tag = resolve_model_checkpoint(tmp_path, epoch=2, avg=2)
    assert tag == "epoch-2-avg-2" and torch.allclose(ckpt["model"]["weight"], torch.full((1, 2), 15.0))
    assert "no running model average" in caplog.text


def test_a_missing_checkpoint_names_the_option_that_gave_it(tmp_path):
    """``load_checkpoint(path, option)``: an OptionError naming the option (``checkpoint``,
    ``teacher``), which each command shows as its own flag; without one, the file alone."""
    from dsr.errors import OptionError
    from dsr.models.checkpoint import load_checkpoint

    missing = tmp_path / "nope.pt"
    with pytest.raises(OptionError) as e:
        load_checkpoint(missing, "teacher")
    assert str(e.value) == f"teacher {missing} does not exist; train first or give another teacher"
    assert e.value.as_flags() == f"--teacher {missing} does not exist; train first or give another --teacher"
    with pytest.raises(DsrUserError, match=rf"^checkpoint {missing} does not exist; train first$"):
        load_checkpoint(missing)
