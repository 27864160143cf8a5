import pytest
import torch

from dsr.errors import DsrUserError
from dsr.training.checkpoint import average_checkpoints, resolve_model_checkpoint, save_checkpoint


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
    with pytest.raises(DsrUserError, match="epoch-0.pt"):
        resolve_model_checkpoint(tmp_path, epoch=3, avg=4)
