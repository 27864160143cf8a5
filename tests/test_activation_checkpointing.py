"""``--activation-checkpointing``: the same losses and gradients, each Conformer layer run again in backward, less memory."""

from __future__ import annotations

import copy

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

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


class PeakLiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storage alive at once, counting storages created inside the block.

    Allocator-independent: it follows tensor storages (weak references) rather
    than the process's memory, so caching allocators and fragmentation do not blur
    it.  Parameters and inputs created before the block are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                self.live.setdefault(storage._cdata, (StorageWeakRef(storage), storage.nbytes()))
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


def _peak_training_bytes(model: torch.nn.Module) -> int:
    feats, lens, targets = _batch()
    with PeakLiveTensorBytes() as tracker:
        out = model(feats, lens, targets)
        (out["simple_loss"] + out["pruned_loss"] + out["ctc_loss"]).backward()
    return tracker.peak


def test_checkpointing_lowers_peak_activation_memory() -> None:
    plain = _model(num_layers=6, dropout=0.0)
    recomputed = copy.deepcopy(plain)
    recomputed.encoder.activation_checkpointing = True
    full, low = _peak_training_bytes(plain), _peak_training_bytes(recomputed)
    assert low < 0.6 * full, (low, full)
