"""Conformer encoder (Gulati et al., 2020) with rotary positions and optional chunked attention.

Design choices, all for speed on small CPU machines and for streaming:

* Positions are rotary (RoPE) instead of Transformer-XL relative encodings: RoPE is
  a cheap elementwise rotation of queries and keys, so attention stays a single
  ``scaled_dot_product_attention`` call (fused kernels on CPU and CUDA) while
  scores still depend only on relative offsets.
* The convolution module uses LayerNorm instead of BatchNorm, so an utterance's
  output does not depend on what else is in the batch, and nothing changes
  between training and streaming inference.
* Padded frames are masked out of attention and zeroed before the depthwise
  convolution, so padding never leaks into valid frames.
* Chunked attention with a bounded left context runs block-wise, in memory linear
  in the utterance length (:mod:`dsr.models.chunked_attention`); the layers'
  ``forward_chunk`` methods run one chunk at a time with cached state for
  :class:`dsr.models.streaming.StreamingEncoder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, overload

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dsr.models.chunked_attention import (
    BlockMask,
    block_chunked_attention,
    check_chunking,
    chunk_attention_mask,
    use_block_attention,
)
from dsr.models.subsampling import Conv2dSubsampling

__all__ = ["ConformerEncoder", "ConformerLayer", "LayerCache", "chunk_attention_mask"]


class _RotaryEmbedding(nn.Module):
    """Produces the cos/sin tables of rotary position embeddings (rotate-half layout)."""

    inv_freq: torch.Tensor  # a buffer: declared so that type checkers do not see nn.Module.__getattr__'s union

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        # Not persistent: it is a pure function of head_dim, so checkpoints need not carry it.
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, num_frames: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables of positions ``offset .. offset + num_frames - 1``: cos and sin, each
        (num_frames, 1, 1, head_dim), float32.  Streaming passes the global frame offset
        of a chunk, so cached keys and new queries rotate exactly as in one full pass."""
        t = torch.arange(offset, offset + num_frames, device=self.inv_freq.device, dtype=torch.float32)
        angles = torch.outer(t, self.inv_freq)
        angles = torch.cat((angles, angles), dim=-1)[:, None, None, :]
        return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class _FeedForward(nn.Module):
    """Pre-LN position-wise feed-forward: LN -> Linear -> SiLU -> Linear -> Dropout.

    There is no dropout on the (4x wider) hidden layer: CPU dropout is dominated by
    random-number generation, and the hidden-layer masks alone cost more than the
    matrix products of a small model.
    """

    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, ffn_dim),
            nn.SiLU(),
            nn.Linear(ffn_dim, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, D) -> (N, T, D)."""
        return self.net(x)


class _SelfAttention(nn.Module):
    """Pre-LN multi-head self-attention with rotary positions, computed by SDPA.

    Dropout is applied to the output only, not to the attention weights: weight
    dropout forces SDPA off its fused kernels onto the slow reference path.

    ``head_dim`` defaults to ``d_model // num_heads``; a layer whose heads were pruned
    (:mod:`dsr.models.prune`) keeps the head size and has fewer heads, so its projections
    are ``qkv`` (D -> 3 H Dh), rows ordered [q | k | v], each head by head, and ``out``
    (H Dh -> D).  With all heads, H Dh = D: the same modules as ever.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float, head_dim: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads if head_dim is None else head_dim
        inner = num_heads * self.head_dim
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * inner)
        self.out = nn.Linear(inner, d_model)
        self.out_dropout = nn.Dropout(dropout)

    def _project(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, T, D) -> rotated q, rotated k and v, each (N, H, T, Dh)."""
        n, t, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(n, t, 3, self.num_heads, self.head_dim)
        # Rotate q and k in one op; cast the tables so autocast dtypes stay consistent.
        qk = qkv[:, :, :2]
        qk = qk * cos.to(qk.dtype) + _rotate_half(qk) * sin.to(qk.dtype)
        q, k = qk.transpose(1, 3).unbind(2)  # each (N, H, T, Dh)
        return q, k, qkv[:, :, 2].transpose(1, 2)

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """(N, H, T, Dh) attention output -> (N, T, D)."""
        n, _, t, _ = y.shape
        return self.out_dropout(self.out(y.transpose(1, 2).reshape(n, t, -1)))

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | BlockMask | None, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        """x: (N, T, D) -> (N, T, D).

        ``attn_mask`` is a bool tensor broadcastable to (N, H, T, T), True = attend (or
        None = attend everywhere), or a :class:`BlockMask` for block-wise chunked attention.
        """
        q, k, v = self._project(x, cos, sin)
        if isinstance(attn_mask, BlockMask):
            y = block_chunked_attention(q, k, v, attn_mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self._output(y)

    def forward_chunk(
        self,
        x: torch.Tensor,
        cached_keys: torch.Tensor,
        cached_values: torch.Tensor,
        attn_mask: torch.Tensor | None,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One streaming chunk: its queries attend to the cached keys/values and its own.

        Args:
            x: (N, C, D) the chunk.
            cached_keys, cached_values: (N, H, S, Dh) rotated keys and values of the S
                frames before the chunk (S may be 0).
            attn_mask: (N, 1, 1, S + C) bool, True = attend, or None.
            cos, sin: rotary tables of the chunk's global frame positions.

        Returns:
            (N, C, D) output, and the (N, H, S + C, Dh) keys and values including the chunk's.
        """
        q, k, v = self._project(x, cos, sin)
        keys = torch.cat([cached_keys, k], dim=2)
        values = torch.cat([cached_values, v], dim=2)
        return self._output(F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask)), keys, values


class _ConvModule(nn.Module):
    """Conformer convolution module with LayerNorm (not BatchNorm) after the depthwise conv.

    LN -> pointwise (D -> 2D) -> GLU -> depthwise conv -> LN -> SiLU -> pointwise -> Dropout.
    Pointwise convolutions are ``nn.Linear`` on the (N, T, D) layout, which avoids transposes.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.kernel_size = kernel_size
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        # Causal: pad (K - 1) frames on the left only (done in forward), so frame t sees t-K+1..t.
        self.depthwise = nn.Conv1d(
            d_model,
            d_model,
            kernel_size,
            padding=0 if causal else (kernel_size - 1) // 2,
            groups=d_model,
        )
        self.depthwise_norm = nn.LayerNorm(d_model)
        self.activation = nn.SiLU()
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def _glu(self, x: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        """(N, T, D) -> (N, D, T) input of the depthwise convolution."""
        y = F.glu(self.pointwise_in(self.norm(x)), dim=-1)
        if pad_mask is not None:
            # Zero padding so the kernel never mixes padded frames into valid ones.
            y = y.masked_fill(pad_mask, 0.0)
        return y.transpose(1, 2)

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        """(N, D, T) depthwise-convolution input, padded as needed -> (N, T, D) module output."""
        y = self.depthwise(y).transpose(1, 2)
        y = self.pointwise_out(self.activation(self.depthwise_norm(y)))
        return self.dropout(y)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (N, T, D); pad_mask: (N, T, 1) bool, True at padded frames, or None; -> (N, T, D)."""
        y = self._glu(x, pad_mask)
        if self.causal:
            y = F.pad(y, (self.kernel_size - 1, 0))
        return self._finish(y)

    def forward_chunk(
        self, x: torch.Tensor, pad_mask: torch.Tensor | None, cache: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One streaming chunk of a causal module.

        Args:
            x: (N, C, D) the chunk; pad_mask as in :meth:`forward`.
            cache: (N, D, K - 1) depthwise-convolution inputs of the K - 1 frames before
                the chunk (zeros at the start of a stream, as the causal padding).

        Returns:
            (N, C, D) output and the (N, D, K - 1) cache for the next chunk.
        """
        if not self.causal:
            raise ValueError("streaming needs a causal convolution module")
        y = torch.cat([cache, self._glu(x, pad_mask)], dim=2)
        return self._finish(y), y[:, :, y.size(2) - (self.kernel_size - 1) :]


class LayerCache(NamedTuple):
    """Streaming state of one Conformer layer."""

    keys: torch.Tensor  # (N, H, S, Dh) rotated keys of the S cached frames
    values: torch.Tensor  # (N, H, S, Dh)
    conv: torch.Tensor  # (N, D, K - 1) inputs of the causal depthwise convolution


class ConformerLayer(nn.Module):
    """One Conformer block: x + FFN/2, + MHSA, + Conv, + FFN/2, then LayerNorm.

    ``head_dim``: see :class:`_SelfAttention` (None = ``d_model // num_heads``)."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ffn_dim: int,
        conv_kernel_size: int,
        dropout: float,
        causal: bool,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.ffn1 = _FeedForward(d_model, ffn_dim, dropout)
        self.attn = _SelfAttention(d_model, num_heads, dropout, head_dim)
        self.conv = _ConvModule(d_model, conv_kernel_size, dropout, causal)
        self.ffn2 = _FeedForward(d_model, ffn_dim, dropout)
        self.final_norm = nn.LayerNorm(d_model)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | BlockMask | None,
        pad_mask: torch.Tensor | None,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        """x: (N, T, D) -> (N, T, D); see :class:`ConformerEncoder` for the masks."""
        x = x + 0.5 * self.ffn1(x)
        x = x + self.attn(x, attn_mask, cos, sin)
        x = x + self.conv(x, pad_mask)
        x = x + 0.5 * self.ffn2(x)
        return self.final_norm(x)

    def forward_chunk(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        pad_mask: torch.Tensor | None,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: LayerCache,
    ) -> tuple[torch.Tensor, LayerCache]:
        """One streaming chunk (N, C, D) -> (N, C, D) and the layer's cache extended by the
        chunk (the caller trims the keys/values to the left context it keeps)."""
        x = x + 0.5 * self.ffn1(x)
        y, keys, values = self.attn.forward_chunk(x, cache.keys, cache.values, attn_mask, cos, sin)
        x = x + y
        y, conv = self.conv.forward_chunk(x, pad_mask, cache.conv)
        x = x + y
        x = x + 0.5 * self.ffn2(x)
        return self.final_norm(x), LayerCache(keys, values, conv)


class ConformerEncoder(nn.Module):
    """4x convolutional subsampling followed by a stack of Conformer layers.

    Args:
        input_dim: feature dimension F of the input (e.g. 80).
        d_model: model (and output) dimension D.
        num_layers: number of Conformer layers.
        num_heads: attention heads; ``d_model / num_heads`` must be an even integer (RoPE).
        ffn_dim: hidden dimension of the feed-forward modules.
        conv_kernel_size: depthwise convolution kernel; must be odd unless ``causal``.
        dropout: dropout probability in [0, 1).
        causal: left-only (causal) padding in the depthwise convolution.  Combine it with
            ``chunk_size > 0`` for streaming; alone it does not restrict attention.
        chunk_size: if > 0, attention is chunked (block mask): frames are grouped into
            chunks of ``chunk_size`` *subsampled* frames, each frame attends to its own
            chunk and ``left_context_chunks`` chunks to the left.  Use it for streaming
            and to bound attention cost on long audio.  -1 = full attention.
        left_context_chunks: number of left chunks visible with chunking (-1 = all).
            With a bounded left context attention is computed block-wise, in memory
            linear in the utterance length (see :mod:`dsr.models.chunked_attention`).
        subsampling_channels: channels of the two convolutions of the front end.
        train_chunk_sizes: dynamic chunk training (WeNet/icefall): if not empty, every
            forward call in training mode draws its chunk size from these.
        train_left_context_chunks: ... and its left context (in chunks, -1 = all) from these.
        train_full_context_prob: ... except that with this probability it uses full
            attention instead, so that one model serves offline and streaming decoding.
        layer_heads: heads of each layer, of ``d_model / num_heads`` dimensions each, when
            they differ between layers (a model whose heads were pruned, see
            :mod:`dsr.models.prune`): one count in [1, num_heads] per layer.  Empty (the
            default) = ``num_heads`` in every layer.
        activation_checkpointing: in training, keep only each Conformer layer's input
            for the backward pass and recompute the layer's activations there
            (:func:`torch.utils.checkpoint.checkpoint`): activation memory falls from
            all layers' intermediates to one layer's, for one more forward pass of
            the layers.  Same results; a plain attribute, so a trainer can switch it.

    ``chunk_size`` and ``left_context_chunks`` can be overridden per call of
    :meth:`forward`; explicit values also take precedence over dynamic chunk training.
    """

    def __init__(
        self,
        input_dim: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        ffn_dim: int,
        conv_kernel_size: int = 31,
        dropout: float = 0.1,
        causal: bool = False,
        chunk_size: int = -1,
        left_context_chunks: int = -1,
        subsampling_channels: tuple[int, int] = (16, 64),
        train_chunk_sizes: Sequence[int] = (),
        train_left_context_chunks: Sequence[int] = (-1,),
        train_full_context_prob: float = 0.0,
        activation_checkpointing: bool = False,
        layer_heads: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if d_model <= 0 or num_layers <= 0 or num_heads <= 0 or ffn_dim <= 0:
            raise ValueError(
                "d_model, num_layers, num_heads and ffn_dim must be positive "
                f"(got {d_model}, {num_layers}, {num_heads}, {ffn_dim})"
            )
        if d_model % num_heads != 0 or (d_model // num_heads) % 2 != 0:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by num_heads ({num_heads}) "
                "into an even head dimension (rotary positions rotate pairs of dimensions)"
            )
        layer_heads = tuple(layer_heads) or (num_heads,) * num_layers
        if len(layer_heads) != num_layers or not all(1 <= h <= num_heads for h in layer_heads):
            raise ValueError(
                f"layer_heads must be {num_layers} head counts in [1, {num_heads}] (one per layer), or empty "
                f"(got {layer_heads})"
            )
        if conv_kernel_size <= 0 or (not causal and conv_kernel_size % 2 == 0):
            raise ValueError(f"conv_kernel_size must be positive, and odd when causal=False (got {conv_kernel_size})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (got {dropout})")
        check_chunking(chunk_size, left_context_chunks)
        if any(c <= 0 for c in train_chunk_sizes):
            raise ValueError(f"train_chunk_sizes must be positive (got {tuple(train_chunk_sizes)})")
        if not train_left_context_chunks or any(left < -1 for left in train_left_context_chunks):
            raise ValueError(
                "train_left_context_chunks must be a non-empty list of values >= -1 "
                f"(got {tuple(train_left_context_chunks)})"
            )
        if not 0.0 <= train_full_context_prob <= 1.0:
            raise ValueError(f"train_full_context_prob must be in [0, 1] (got {train_full_context_prob})")

        self.input_dim = input_dim
        self.output_dim = d_model
        self.causal = causal
        self.chunk_size = chunk_size
        self.left_context_chunks = left_context_chunks
        self.train_chunk_sizes = tuple(train_chunk_sizes)
        self.train_left_context_chunks = tuple(train_left_context_chunks)
        self.train_full_context_prob = train_full_context_prob
        self.activation_checkpointing = activation_checkpointing
        self.subsampling = Conv2dSubsampling(input_dim, d_model, channels=tuple(subsampling_channels))
        self.input_dropout = nn.Dropout(dropout)
        head_dim = d_model // num_heads
        self.rotary = _RotaryEmbedding(head_dim)
        self.layers = nn.ModuleList(
            ConformerLayer(d_model, heads, ffn_dim, conv_kernel_size, dropout, causal, head_dim)
            for heads in layer_heads
        )

    @overload
    @staticmethod
    def output_lengths(lengths: int) -> int: ...

    @overload
    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor: ...

    @staticmethod
    def output_lengths(lengths: torch.Tensor | int) -> torch.Tensor | int:
        """Encoder output frames for ``lengths`` input frames (4x subsampling)."""
        return Conv2dSubsampling.output_lengths(lengths)

    def sample_chunking(self) -> tuple[int, int]:
        """One draw of dynamic chunk training: ``(chunk_size, left_context_chunks)``,
        (-1, -1) for full attention.  Uses torch's global generator, which the trainer seeds."""
        if not self.train_chunk_sizes or float(torch.rand(())) < self.train_full_context_prob:
            return -1, -1
        sizes, lefts = self.train_chunk_sizes, self.train_left_context_chunks
        return sizes[int(torch.randint(len(sizes), ()))], lefts[int(torch.randint(len(lefts), ()))]

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        chunk_size: int | None = None,
        left_context_chunks: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a padded batch.

        Args:
            x: (N, T, input_dim) features.
            lengths: (N,) integer valid frames per utterance, each in [7, T].
            chunk_size: overrides the constructor's ``chunk_size`` for this call.
            left_context_chunks: overrides the constructor's ``left_context_chunks``.
                When neither is given, a module in training mode with ``train_chunk_sizes``
                draws both (:meth:`sample_chunking`).

        Returns:
            (N, T', d_model) encoder output, T' = ((T - 1) // 2 - 1) // 2, and
            (N,) output lengths.  Frames at or beyond an utterance's length are padding.
        """
        if chunk_size is None and left_context_chunks is None and self.training and self.train_chunk_sizes:
            chunk_size, left_context_chunks = self.sample_chunking()
        chunk_size = self.chunk_size if chunk_size is None else chunk_size
        left_context_chunks = self.left_context_chunks if left_context_chunks is None else left_context_chunks
        check_chunking(chunk_size, left_context_chunks)

        x, lengths = self.subsampling(x, lengths)
        x = self.input_dropout(x)
        n, t, _ = x.shape

        # Full-length batches (common with duration-bucketed batching) need no padding
        # masks at all: no mask tensors, no masked_fill, unmasked attention.
        pad_mask = None
        attn_mask: torch.Tensor | BlockMask | None = None
        valid = None
        if bool((lengths != t).any()):
            valid = torch.arange(t, device=x.device)[None, :] < lengths[:, None]  # (N, T)
            pad_mask = ~valid[:, :, None]
            attn_mask = valid[:, None, None, :]  # keys only, (N, 1, 1, T)
        if use_block_attention(t, chunk_size, left_context_chunks):
            # Linear memory: each chunk attends to its gathered key window only.
            attn_mask = BlockMask.build(n, t, chunk_size, left_context_chunks, valid, device=x.device)
        elif chunk_size > 0:
            # Unlimited left context (or a window covering the whole utterance): a (T, T) mask.
            chunk_mask = chunk_attention_mask(t, chunk_size, left_context_chunks, device=x.device)
            if attn_mask is None:
                attn_mask = chunk_mask
            else:
                # attn_mask is the (N, 1, 1, T) key mask built with pad_mask above (no BlockMask on this branch).
                assert isinstance(attn_mask, torch.Tensor) and pad_mask is not None
                # A padded query in a chunk that lies entirely in padding would have no
                # visible key (softmax of nothing = NaN); let padded queries see every key.
                # Their outputs are padding and never reach valid frames.
                attn_mask = (chunk_mask & attn_mask) | pad_mask[:, None, :, :]

        cos, sin = self.rotary(t)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                # Non-reentrant: works with DDP and autocast, and restores the RNG so dropout
                # draws the same masks when the layer is recomputed.
                x = checkpoint(layer, x, attn_mask, pad_mask, cos, sin, use_reentrant=False)
            else:
                x = layer(x, attn_mask, pad_mask, cos, sin)
        return x, lengths
