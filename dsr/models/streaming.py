"""Streaming inference: a causal Conformer encoder run chunk by chunk with cached state.

The front end's two 3-wide, stride-2 convolutions have no padding, so encoder frame t
reads feature frames 4t .. 4t + 6.  Chunk k (encoder frames kC .. kC + C - 1) therefore
needs feature frames 4kC .. 4kC + 4C + 2: the chunk's own 4C frames plus 3 frames of
look-ahead, which the next chunk reads again.  Starting every window at a multiple of 4
keeps both stride-2 convolutions on the same grid as in a full-utterance pass, so the
front end needs no state besides this 3-frame overlap.

Per layer the state (:class:`~dsr.models.conformer.LayerCache`) holds the rotated keys
and values of the last ``left_context_chunks * C`` frames (every frame when -1: the
cache then grows with the stream) and the last ``K - 1`` inputs of the causal depthwise
convolution.  Keys are cached after the rotary rotation, which used their absolute
frame index; each chunk's queries are rotated with their own absolute indices (the
stream's frame offset), so every score sees the same relative offset as in one pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from dsr.models.chunked_attention import with_visible_key
from dsr.models.conformer import ConformerLayer, LayerCache
from dsr.models.subsampling import Conv2dSubsampling
from dsr.models.transducer import HybridTransducer

#: feature frames an encoder frame reads beyond its own 4 (the front end's look-ahead).
LOOKAHEAD_FRAMES = Conv2dSubsampling.min_input_length - 4
#: feature frames per encoder frame.
SUBSAMPLING = 4


def window_frames(chunk_size: int) -> int:
    """Feature frames one call of :meth:`StreamingEncoder.encode_chunk` consumes."""
    return SUBSAMPLING * chunk_size + LOOKAHEAD_FRAMES


class StreamingEncoder:
    """Encodes a batch of feature streams chunk by chunk, carrying each layer's state.

    The output equals ``model.encode(features, lengths, chunk_size=C,
    left_context_chunks=L)`` on the whole utterances (to float rounding): the
    chunked-attention model sees exactly the same context either way.  Streams advance
    in lockstep; one that ends early produces padding frames until the batch is done.

    Args:
        model: a transducer with a causal encoder (its feature normalisation is applied here).
        chunk_size: C > 0 encoder frames per chunk.
        left_context_chunks: L >= 0 chunks of attention left context, or -1 for all.
    """

    def __init__(self, model: HybridTransducer, chunk_size: int, left_context_chunks: int) -> None:
        if not model.conformer_encoder().causal:
            raise ValueError("streaming needs an encoder with causal convolutions (causal=True)")
        if model.utterance_norm != "none":
            # Per-utterance statistics need the utterance's last frame before its first chunk.
            raise ValueError(f"a model with utterance_norm={model.utterance_norm!r} cannot stream")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive (got {chunk_size})")
        if left_context_chunks < -1:
            raise ValueError(f"left_context_chunks must be -1 (all) or >= 0 (got {left_context_chunks})")
        self.model = model
        self.encoder = model.conformer_encoder()
        self.chunk_size = chunk_size
        self.left_context_chunks = left_context_chunks
        self.frames_done = 0
        self.caches: list[LayerCache] | None = None

    @property
    def window_frames(self) -> int:
        """Feature frames per call: 4C of the chunk plus the 3-frame look-ahead (windows
        start every 4C frames)."""
        return window_frames(self.chunk_size)

    def _empty_caches(self, batch_size: int, like: torch.Tensor) -> list[LayerCache]:
        caches = []
        for layer in self.encoder.layers:
            assert isinstance(layer, ConformerLayer)  # the encoder's layers (a ModuleList iterates as plain Modules)
            attn, conv = layer.attn, layer.conv
            kv = like.new_zeros(batch_size, attn.num_heads, 0, attn.head_dim)
            caches.append(LayerCache(kv, kv, like.new_zeros(batch_size, like.size(-1), conv.kernel_size - 1)))
        return caches

    def _trim(self, cache: LayerCache) -> LayerCache:
        if self.left_context_chunks < 0:
            return cache
        keep = min(cache.keys.size(2), self.left_context_chunks * self.chunk_size)
        start = cache.keys.size(2) - keep
        return LayerCache(cache.keys[:, :, start:], cache.values[:, :, start:], cache.conv)

    @torch.no_grad()
    def encode_chunk(self, window: torch.Tensor, num_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the next chunk of every stream.

        Args:
            window: (N, 4C + 3, F) raw features: frames ``4C * k .. 4C * k + 4C + 2`` of each
                stream, k = chunks done so far; anything (e.g. zeros) past a stream's end.
            num_frames: (N,) integer count of real frames in the window (fewer in a stream's
                last window, 0 after it).

        Returns:
            (N, C, D) encoder frames ``C * k .. C * k + C - 1`` and (N,) the number of them
            that are valid.
        """
        n, t, f = window.shape
        if t != self.window_frames or f != self.encoder.input_dim:
            expected = (self.window_frames, self.encoder.input_dim)
            raise ValueError(f"window must be (N, {expected[0]}, {expected[1]}), got {tuple(window.shape)}")
        if num_frames.shape != (n,):
            raise ValueError(f"num_frames must be ({n},), got {tuple(num_frames.shape)}")
        encoder = self.encoder
        x = (window - self.model.feature_mean) / self.model.feature_std
        x, _ = encoder.subsampling(x, torch.full((n,), t, device=x.device))
        x = encoder.input_dropout(x)  # (N, C, D)
        lengths = Conv2dSubsampling.output_lengths(num_frames.to(x.device)).clamp(0, self.chunk_size)
        if self.caches is None:
            self.caches = self._empty_caches(n, x)
        attn_mask = pad_mask = None
        valid = torch.arange(self.chunk_size, device=x.device)[None, :] < lengths[:, None]  # (N, C)
        if not bool(valid.all()):
            pad_mask = ~valid[:, :, None]
            # Cached frames of a stream still running are all valid: it only ends in a partial chunk.
            cached = valid.new_ones(n, self.caches[0].keys.size(2))
            attn_mask = with_visible_key(torch.cat([cached, valid], dim=1))[:, None, None, :]
        cos, sin = encoder.rotary(self.chunk_size, offset=self.frames_done)
        caches = []
        for layer, cache in zip(encoder.layers, self.caches):
            assert isinstance(layer, ConformerLayer)  # the encoder's layers (a ModuleList iterates as plain Modules)
            x, cache = layer.forward_chunk(x, attn_mask, pad_mask, cos, sin, cache)
            caches.append(self._trim(cache))
        self.caches = caches
        self.frames_done += self.chunk_size
        return x, lengths

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run whole (N, T, F) padded utterances through :meth:`encode_chunk`, chunk after
        chunk; returns the concatenated (N, T'', D) output (T'' >= T', whole chunks) and the
        (N,) valid lengths, as :meth:`HybridTransducer.encode` would."""
        outs, lens = [], []
        for window, num_frames in stream_windows(features, lengths, self.chunk_size):
            out, out_lens = self.encode_chunk(window, num_frames)
            outs.append(out)
            lens.append(out_lens)
        return torch.cat(outs, dim=1), torch.stack(lens).sum(0)


def stream_windows(
    features: torch.Tensor, lengths: torch.Tensor, chunk_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Cut stored (N, T, F) features and (N,) lengths into the successive windows and
    real-frame counts that live streams would deliver to :meth:`StreamingEncoder.encode_chunk`
    (zero-padded past the end of the batch)."""
    if features.ndim != 3 or lengths.shape != (features.size(0),):
        raise ValueError(
            f"expected (N, T, F) features and (N,) lengths, got {tuple(features.shape)}, {tuple(lengths.shape)}"
        )
    hop, width = SUBSAMPLING * chunk_size, window_frames(chunk_size)
    out_frames = int(Conv2dSubsampling.output_lengths(lengths).max())
    num_chunks = max(1, -(-out_frames // chunk_size))
    needed = (num_chunks - 1) * hop + width
    if needed > features.size(1):
        features = F.pad(features, (0, 0, 0, needed - features.size(1)))
    lengths = lengths.to(features.device)
    for k in range(num_chunks):
        start = k * hop
        yield features[:, start : start + width], (lengths - start).clamp(0, width)
