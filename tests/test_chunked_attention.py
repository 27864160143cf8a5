"""Block-wise chunked attention: equal to the (T, T)-mask computation, memory linear in T;
and dynamic chunk training's draws."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from dsr.evaluation.memory import saved_for_backward_bytes
from dsr.models import ConformerEncoder, ModelConfig
from dsr.models import conformer as conformer_module
from dsr.models.chunked_attention import BlockMask, block_chunked_attention, chunk_attention_mask, use_block_attention
from dsr.models.conformer import _RotaryEmbedding, _SelfAttention

torch.set_num_threads(1)
FEAT = 20


def masked_reference(q, k, v, chunk_size: int, left: int, valid: torch.Tensor) -> torch.Tensor:
    """What the encoder computed before block attention: SDPA with a (T, T) chunk mask."""
    mask = chunk_attention_mask(q.size(2), chunk_size, left)[None, None] & valid[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("chunk_size,left", [(4, 0), (4, 1), (5, 2), (3, 3), (7, 1)])
def test_block_attention_equals_masked_attention_with_gradients(chunk_size: int, left: int) -> None:
    g = torch.Generator().manual_seed(chunk_size * 10 + left)
    n, h, t, dh = 3, 2, 23, 8  # 23 frames: never a whole number of chunks
    q, k, v = (torch.randn(n, h, t, dh, generator=g, requires_grad=True) for _ in range(3))
    lengths = torch.tensor([23, 14, 2])  # the last utterance leaves whole chunks of padding
    valid = torch.arange(t)[None, :] < lengths[:, None]
    upstream = torch.randn(n, h, t, dh, generator=g) * valid[:, None, :, None]  # loss on valid frames only

    ref = masked_reference(q, k, v, chunk_size, left, valid)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), (q, k, v))
    got = block_chunked_attention(q, k, v, BlockMask.build(n, t, chunk_size, left, valid))
    got_grads = torch.autograd.grad((got * upstream).sum(), (q, k, v))

    assert torch.isfinite(got).all()
    keep = valid[:, None, :, None]
    torch.testing.assert_close(got * keep, ref * keep, rtol=1e-5, atol=1e-6)
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_block_mask_windows() -> None:
    # 5 frames, chunks of 2, one chunk of left context: windows [-2, 2), [0, 4), [2, 6).
    mask = BlockMask.build(1, 5, chunk_size=2, left_context_chunks=1).key_mask
    assert mask.shape == (3, 1, 1, 4)
    assert mask[:, 0, 0].int().tolist() == [[0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]]
    # Nothing to mask: SDPA runs without a mask.
    assert BlockMask.build(2, 8, chunk_size=4, left_context_chunks=0).key_mask is None
    with pytest.raises(ValueError):
        BlockMask.build(1, 8, chunk_size=4, left_context_chunks=-1)
    with pytest.raises(ValueError):
        BlockMask.build(2, 8, chunk_size=4, left_context_chunks=1, key_valid=torch.ones(2, 7, dtype=torch.bool))
    assert use_block_attention(24, 4, 1) and not use_block_attention(24, 4, -1) and not use_block_attention(8, 4, 1)


@pytest.mark.parametrize("causal,chunk_size,left", [(True, 4, 1), (False, 3, 0), (True, 2, 3)])
def test_encoder_block_path_equals_mask_path(monkeypatch, causal: bool, chunk_size: int, left: int) -> None:
    """Whole encoder, padded batch, forward and gradients: the block path changes nothing.
    (float64, so that summation-order noise of float32 cannot hide or fake a difference)."""
    torch.manual_seed(0)
    enc = ConformerEncoder(FEAT, 32, 2, 4, 64, 5, dropout=0.0, causal=causal).double()
    x = torch.randn(3, 130, FEAT, dtype=torch.float64)
    lengths = torch.tensor([130, 95, 40])

    def run() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        enc.zero_grad()
        out, out_lens = enc(x, lengths, chunk_size=chunk_size, left_context_chunks=left)
        keep = (torch.arange(out.size(1))[None, :] < out_lens[:, None])[:, :, None]
        (out * keep).pow(2).sum().backward()
        return out, keep, [p.grad.clone() for p in enc.parameters()]

    blocks, keep, block_grads = run()
    monkeypatch.setattr(conformer_module, "use_block_attention", lambda *args: False)
    masked, _, masked_grads = run()
    torch.testing.assert_close(blocks * keep, masked * keep, rtol=1e-9, atol=1e-9)
    for a, b in zip(block_grads, masked_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def _squared_sum(out: torch.Tensor) -> torch.Tensor:
    return out.float().pow(2).sum()


def test_chunked_attention_memory_grows_linearly() -> None:
    """4x the frames: <= 4.5x the memory with block attention, >= 10x with the (T, T) mask.

    One attention module with a small model dimension, so that the mask's T^2 term
    dominates at test sizes (in a full-size encoder the linear terms hide it until
    several minutes of audio; bench/chunked_attention.py measures those)."""
    torch.manual_seed(0)
    attn, rotary = _SelfAttention(16, 2, dropout=0.0), _RotaryEmbedding(8)

    def attention_bytes(t: int, blocks: bool) -> int:
        x = torch.randn(1, t, 16, requires_grad=True)
        cos, sin = rotary(t)
        mask = BlockMask.build(1, t, 8, 1) if blocks else chunk_attention_mask(t, 8, 1)
        return saved_for_backward_bytes(lambda: attn(x, mask, cos, sin), _squared_sum)

    block_growth = attention_bytes(2048, True) / attention_bytes(512, True)
    mask_growth = attention_bytes(2048, False) / attention_bytes(512, False)
    assert block_growth <= 4.5, block_growth
    assert mask_growth >= 10.0, mask_growth

    # The whole encoder (forward + backward) with a bounded left context, too.
    enc = ConformerEncoder(FEAT, 16, 2, 2, 32, 5, dropout=0.0, causal=True)

    def encoder_bytes(frames: int) -> int:
        x = torch.randn(1, 4 * frames + 3, FEAT)  # `frames` encoder frames
        return saved_for_backward_bytes(lambda: enc(x, torch.tensor([x.size(1)]), 8, 1)[0], _squared_sum)

    growth = encoder_bytes(2048) / encoder_bytes(512)
    assert growth <= 4.5, growth


# ---------------------------------------------------------------- dynamic chunk training


def test_dynamic_chunk_draws_and_training_forward() -> None:
    enc = ConformerEncoder(
        FEAT,
        32,
        1,
        4,
        64,
        5,
        dropout=0.0,
        causal=True,
        train_chunk_sizes=(2, 4),
        train_left_context_chunks=(0, -1),
        train_full_context_prob=0.5,
    )
    torch.manual_seed(0)
    draws = Counter(enc.sample_chunking() for _ in range(800))
    assert set(draws) == {(-1, -1), (2, 0), (2, -1), (4, 0), (4, -1)}
    assert 0.42 < draws[(-1, -1)] / 800 < 0.58
    # In training mode a forward call uses exactly the drawn chunking ...
    x, lengths = torch.randn(2, 90, FEAT), torch.tensor([90, 61])
    enc.train()
    torch.manual_seed(3)
    chunking = enc.sample_chunking()
    torch.manual_seed(3)
    trained, _ = enc(x, lengths)
    enc.eval()
    torch.testing.assert_close(trained, enc(x, lengths, *chunking)[0])
    # ... and in eval mode the constructor's default (full attention here).
    torch.testing.assert_close(enc(x, lengths)[0], enc(x, lengths, -1, -1)[0])


@pytest.mark.parametrize(
    "kw",
    [
        dict(train_chunk_sizes=(0, 4)),
        dict(train_left_context_chunks=()),
        dict(train_left_context_chunks=(-2,)),
        dict(train_full_context_prob=1.5),
    ],
)
def test_dynamic_chunk_constructor_errors(kw: dict) -> None:
    with pytest.raises(ValueError):
        ConformerEncoder(FEAT, 32, 1, 4, 64, 5, causal=True, **kw)


def test_model_config_keeps_dynamic_chunking() -> None:
    cfg = ModelConfig(
        causal=True, train_chunk_sizes=(8, 16), train_left_context_chunks=(2, -1), train_full_context_prob=0.3
    )
    d = cfg.to_dict()
    assert d["train_chunk_sizes"] == [8, 16] and d["train_left_context_chunks"] == [2, -1]
    assert ModelConfig.from_dict(d) == cfg
