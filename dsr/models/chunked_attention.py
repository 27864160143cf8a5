"""Chunked (block) self-attention: the mask of the reference computation and the
linear-memory block-wise computation that equals it.

Frames are grouped into consecutive chunks of ``chunk_size`` frames; a query may
attend to every frame of its own chunk and of the ``left_context_chunks`` chunks
before it, never to later chunks.

With a bounded left context, :func:`block_chunked_attention` gathers for each chunk
only the keys it may see, so scores, softmax and everything saved for backward are
O(T * (L + 1) * C) instead of the O(T^2) of a (T, T) mask.  Unlimited left context
(``left_context_chunks == -1``) is inherently quadratic; it keeps the masked path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def check_chunking(chunk_size: int, left_context_chunks: int) -> None:
    """ValueError unless ``chunk_size`` is -1 or positive and ``left_context_chunks`` >= -1."""
    if chunk_size != -1 and chunk_size <= 0:
        raise ValueError(f"chunk_size must be -1 (full attention) or positive (got {chunk_size})")
    if left_context_chunks < -1:
        raise ValueError(f"left_context_chunks must be -1 (unlimited) or >= 0 (got {left_context_chunks})")


def chunk_attention_mask(
    num_frames: int, chunk_size: int, left_context_chunks: int = -1, device: torch.device | None = None
) -> torch.Tensor:
    """Block attention mask for chunk-wise (streaming) processing.

    Returns:
        (num_frames, num_frames) bool tensor, True where query (row) may attend to key (column).
    """
    check_chunking(chunk_size, left_context_chunks)
    if chunk_size == -1:
        return torch.ones(num_frames, num_frames, dtype=torch.bool, device=device)
    chunk = torch.arange(num_frames, device=device) // chunk_size
    distance = chunk[:, None] - chunk[None, :]  # query chunk minus key chunk
    mask = distance >= 0
    if left_context_chunks >= 0:
        mask &= distance <= left_context_chunks
    return mask


def use_block_attention(num_frames: int, chunk_size: int, left_context_chunks: int) -> bool:
    """Whether the block-wise computation is cheaper than a (T, T) mask: only when each
    query sees fewer keys than the whole sequence, i.e. ``(L + 1) * C < T``."""
    return chunk_size > 0 and left_context_chunks >= 0 and (left_context_chunks + 1) * chunk_size < num_frames


@dataclass
class BlockMask:
    """What :func:`block_chunked_attention` needs besides q, k, v; built once per forward
    pass by :meth:`build` and shared by every layer.

    ``key_mask`` is (N * num_chunks, 1, 1, (L + 1) * C) bool, True = attend, or None when
    every key slot is valid (no left context, T a multiple of C, no padding): SDPA then
    runs without a mask.
    """

    chunk_size: int
    left_context_chunks: int
    key_mask: torch.Tensor | None

    @classmethod
    def build(
        cls,
        batch_size: int,
        num_frames: int,
        chunk_size: int,
        left_context_chunks: int,
        key_valid: torch.Tensor | None = None,
        device: torch.device | None = None,
    ) -> BlockMask:
        """Chunk i sees the key window that starts ``left_context_chunks`` chunks before it
        and ends with it; window slots before frame 0 (left padding), beyond the last frame
        (padding to whole chunks) or where ``key_valid`` is False are masked.

        Args:
            batch_size: N.
            num_frames: T.
            chunk_size: C > 0.
            left_context_chunks: L >= 0.
            key_valid: (N, T) bool, False at padded frames of shorter utterances; None = all valid.
        """
        check_chunking(chunk_size, left_context_chunks)
        if chunk_size <= 0 or left_context_chunks < 0:
            raise ValueError("block attention needs chunk_size > 0 and left_context_chunks >= 0")
        num_chunks = -(-num_frames // chunk_size)
        pad_end = num_chunks * chunk_size - num_frames
        if key_valid is None:
            if left_context_chunks == 0 and pad_end == 0:
                return cls(chunk_size, left_context_chunks, None)
            key_valid = torch.ones(batch_size, num_frames, dtype=torch.bool, device=device)
        elif key_valid.shape != (batch_size, num_frames):
            raise ValueError(f"key_valid must be ({batch_size}, {num_frames}), got {tuple(key_valid.shape)}")
        window = (left_context_chunks + 1) * chunk_size
        padded = F.pad(key_valid, (left_context_chunks * chunk_size, pad_end), value=False)
        mask = padded.unfold(1, window, chunk_size)  # (N, num_chunks, window)
        return cls(chunk_size, left_context_chunks, with_visible_key(mask).reshape(-1, 1, 1, window))


def with_visible_key(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` (..., keys) bool with rows that have no True key made all True.

    A query block made only of padding (a short utterance in a long batch) would have no
    visible key: the softmax of nothing, which SDPA kernels need not define (older torch
    releases return NaN; 2.13's CPU kernels return 0).  Such blocks hold padded queries
    only, whose outputs are never used: letting them see every key keeps any kernel finite.
    """
    return mask | ~mask.any(dim=-1, keepdim=True)


def _key_blocks(x: torch.Tensor, chunk_size: int, left_context_chunks: int, num_chunks: int) -> torch.Tensor:
    """(N, H, T, Dh) keys or values -> (N * num_chunks, H, (L + 1) * C, Dh) per-chunk windows."""
    n, h, t, dh = x.shape
    window = (left_context_chunks + 1) * chunk_size
    x = F.pad(x, (0, 0, left_context_chunks * chunk_size, num_chunks * chunk_size - t))
    x = x.unfold(2, window, chunk_size)  # (N, H, num_chunks, Dh, window), a view
    return x.permute(0, 2, 1, 4, 3).reshape(n * num_chunks, h, window, dh)


def block_chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: BlockMask) -> torch.Tensor:
    """Chunked attention computed chunk by chunk (one SDPA call over all chunks).

    Equals ``scaled_dot_product_attention(q, k, v, attn_mask=chunk_attention_mask(...) & key_valid)``
    at every query that has a visible key, in O(T * (L + 1) * C) memory.

    Args:
        q, k, v: (N, H, T, Dh).
        mask: :meth:`BlockMask.build` for (N, T) and the chunk sizes.

    Returns:
        (N, H, T, Dh) attention output.
    """
    if q.shape != k.shape or k.shape != v.shape or q.ndim != 4:
        raise ValueError(f"q, k, v must all be (N, H, T, Dh); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    n, h, t, dh = q.shape
    chunk_size, left_context_chunks = mask.chunk_size, mask.left_context_chunks
    num_chunks = -(-t // chunk_size)
    queries = F.pad(q, (0, 0, 0, num_chunks * chunk_size - t))
    queries = queries.view(n, h, num_chunks, chunk_size, dh).transpose(1, 2).reshape(n * num_chunks, h, chunk_size, dh)
    y = F.scaled_dot_product_attention(
        queries,
        _key_blocks(k, chunk_size, left_context_chunks, num_chunks),
        _key_blocks(v, chunk_size, left_context_chunks, num_chunks),
        attn_mask=mask.key_mask,
    )  # (N * num_chunks, H, C, Dh)
    y = y.view(n, num_chunks, h, chunk_size, dh).transpose(1, 2).reshape(n, h, num_chunks * chunk_size, dh)
    return y[:, :, :t]
