"""``--activation-checkpointing``: the same losses and gradients, each Conformer layer run again in backward, less memory."""

from __future__ import annotations

import copy

import torch

from dsr.evaluation.memory import PeakTensorMemory
from dsr.models import ModelConfig, build_model

VOCAB = 16


def _model(num_layers: int = 3, dropout: float = 0.1) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(
        feature_dim=20, encoder_dim=32, num_encoder_layers=num_layers, num_heads=4, ffn_dim=64, conv_kernel_size=5,
        dropout=dropout, subsampling_channels=(4, 8), decoder_dim=24, joiner_dim=40, vocab_size=VOCAB,
    )  # fmt: skip
    return build_model(cfg).train()


def _batch(n: int = 3, t: int = 120) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(n, t, 20, generator=g)
    lens = torch.tensor([t, t - 30, t - 57])[:n]  # padded utterances: masks are exercised too
    targets = [torch.randint(1, VOCAB, (k,), generator=g).tolist() for k in (5, 3, 4)][:n]
    return feats, lens, targets


def _count_forward_calls(module: torch.nn.Module, calls: dict[str, int]) -> None:
    """Count calls of ``module.forward`` (forward hooks do not fire when checkpointing recomputes)."""
    real = module.forward

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    module.forward = counted


def _loss_and_grads(model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    feats, lens, targets = _batch()
    torch.manual_seed(123)  # the same dropout masks for both models
    out = model(feats, lens, targets)
    loss = out["simple_loss"] + out["pruned_loss"] + out["ctc_loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_same_loss_and_gradients_with_every_layer_recomputed() -> None:
    plain = _model()
    recomputed = copy.deepcopy(plain)
    recomputed.encoder.activation_checkpointing = True
    calls = {"n": 0}
    for layer in recomputed.encoder.layers:
        _count_forward_calls(layer, calls)

    loss, grads = _loss_and_grads(plain)
    loss_ckpt, grads_ckpt = _loss_and_grads(recomputed)
    # Each layer ran twice: once in forward, again in backward (dropout redrew the same masks).
    assert calls["n"] == 2 * len(recomputed.encoder.layers)
    torch.testing.assert_close(loss_ckpt, loss, rtol=1e-5, atol=0)
    assert grads.keys() == grads_ckpt.keys()
    for name, g in grads.items():
        torch.testing.assert_close(grads_ckpt[name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_no_recomputation_in_eval_or_without_grad() -> None:
    model = _model()
    model.encoder.activation_checkpointing = True
    calls = {"n": 0}
    _count_forward_calls(model.encoder.layers[0], calls)
    feats, lens, _ = _batch()
    model.eval()
    model.encode(feats, lens)[0].sum().backward()
    with torch.no_grad():
        model.train()
        model.encode(feats, lens)
    assert calls["n"] == 2  # once per call: checkpointing only wraps training passes that build a graph


def _peak_training_bytes(model: torch.nn.Module) -> int:
    feats, lens, targets = _batch()
    with PeakTensorMemory() as mem:
        out = model(feats, lens, targets)
        (out["simple_loss"] + out["pruned_loss"] + out["ctc_loss"]).backward()
    return mem.peak_bytes


def test_peak_tensor_memory_counts_live_storages_only() -> None:
    x = torch.ones(1000)  # created before: not counted
    with PeakTensorMemory() as mem:
        a = x * 2  # 4000 bytes
        b = a + 1  # 8000 alive
        del a
        c = b * 3  # still 8000 alive: a was freed
    assert mem.peak_bytes == 8000 and c.numel() == 1000


def test_checkpointing_lowers_peak_activation_memory() -> None:
    plain = _model(num_layers=6, dropout=0.0)
    recomputed = copy.deepcopy(plain)
    recomputed.encoder.activation_checkpointing = True
    full, low = _peak_training_bytes(plain), _peak_training_bytes(recomputed)
    assert low < 0.6 * full, (low, full)
