"""``dsr train --qat-int8``: the fake-quantised Linear computes what onnxruntime's int8 file
computes, passes gradients, and leaves checkpoints plain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_corpus import TINY_MODEL, make_tiny_corpus, tiny_train_options
from torch import nn

from dsr.models.config import ModelConfig, build_model
from dsr.training.qat import FakeInt8Linear, enable_int8_qat


def test_fake_int8_linear_equals_onnxruntime_dynamic_int8(tmp_path: Path) -> None:
    """A Linear layer quantised by onnxruntime (as dsr export onnx does) and the same layer in
    QAT mode agree to float rounding, far closer than either is to the float layer."""
    pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[export]')")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[export]')")
    from dsr.export.onnx import quantize_int8_onnx

    torch.manual_seed(0)
    layer = nn.Linear(64, 48).eval()
    x = torch.randn(2, 30, 64) * 2 + 0.5
    torch.onnx.export(layer, (x,), str(tmp_path / "l.onnx"), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N", 1: "T"}}, opset_version=17, dynamo=False)  # fmt: skip
    quantize_int8_onnx(tmp_path / "l.onnx", tmp_path / "l.int8.onnx")
    got = ort.InferenceSession(str(tmp_path / "l.int8.onnx")).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        fp32 = layer(x).numpy()
        layer.__class__ = FakeInt8Linear
        fake = layer(x).numpy()
    assert np.abs(got - fp32).max() > 1e-2  # int8 really changes the output ...
    np.testing.assert_allclose(got, fake, atol=1e-4)  # ... exactly as QAT emulates it


def test_qat_keeps_parameters_and_passes_gradients() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(**TINY_MODEL, vocab_size=30)
    model = build_model(cfg)
    keys = list(model.state_dict())
    linears = sum(type(m) is nn.Linear for m in model.modules())
    assert enable_int8_qat(model) == linears > 0
    assert list(model.state_dict()) == keys
    out = model(torch.randn(2, 60, 80), torch.tensor([60, 45]), [[3, 4, 5], [6, 7]])
    (out["simple_loss"] + out["pruned_loss"] + out["ctc_loss"]).backward()
    grad = model.encoder.layers[0].ffn1.net[1].weight.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and grad.abs().sum() > 0


def test_train_with_qat_writes_a_plain_checkpoint(tmp_path: Path) -> None:
    from dsr.training.config import TrainConfig
    from dsr.training.trainer import train

    corpus = make_tiny_corpus(tmp_path / "corpus")
    exp = tmp_path / "exp"
    train(TrainConfig.from_dict(tiny_train_options(corpus, exp, max_steps=2, dev_cuts="", qat_int8=True)))
    ckpt = torch.load(next(exp.glob("*.pt")), weights_only=False)
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])  # strict: the same names as a model trained without QAT
    assert all(type(m) is not FakeInt8Linear for m in model.modules())
