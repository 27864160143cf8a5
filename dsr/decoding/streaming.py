"""Streaming decoding (``dsr decode --streaming``): chunk-by-chunk encoding with cached
state and a greedy search that consumes each chunk's frames as they arrive."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from dsr.decoding.greedy import TransducerGreedySearch
from dsr.errors import OptionError
from dsr.evaluation.latency import synced_clock
from dsr.models.conformer import ConformerEncoder
from dsr.models.streaming import LOOKAHEAD_FRAMES, SUBSAMPLING, StreamingEncoder, stream_windows
from dsr.models.transducer import HybridTransducer

logger = logging.getLogger("dsr")


@dataclass(frozen=True)
class StreamingOptions:
    """Chunking of a streaming decode and its algorithmic latency.

    ``latency_ms`` is the longest time between a feature frame arriving and the encoder
    output that depends on it: the first frame of a chunk waits for the rest of the
    chunk plus the front end's 3-frame look-ahead.  Computation time comes on top, and so
    does the part of the feature analysis window that extends past the frame shift
    (15 ms for 25 ms windows every 10 ms).
    """

    chunk_ms: float
    chunk_size: int  # encoder frames per chunk
    left_context_chunks: int  # -1 = all
    latency_ms: float


def streaming_options(
    model: HybridTransducer, chunk_ms: float, left_context_chunks: int | None = None, frame_shift_ms: float = 10.0
) -> StreamingOptions:
    """Validate the options ``chunk_ms`` / ``left_context_chunks`` of a streaming decode or export
    for ``model`` (:class:`~dsr.errors.OptionError` naming them and the fix); the left context
    defaults to the model's own ``left_context_chunks``."""
    encoder = model.encoder
    if not isinstance(encoder, ConformerEncoder):  # Whisper's encoder (dsr train --pretrained) has no streaming mode
        raise OptionError(
            "streaming",
            "needs a Conformer trained with dsr train --causal --chunk-sizes; this model's Whisper encoder attends "
            "to whole utterances: decode it without `streaming`",
        )
    if not encoder.causal:
        raise OptionError(
            "streaming",
            "needs a model with causal convolutions; this one was trained without: "
            "train it with dsr train --causal --chunk-sizes 8,16,32",
        )
    frame_ms = SUBSAMPLING * frame_shift_ms
    chunk_size = round(chunk_ms / frame_ms) if chunk_ms > 0 else 0
    if chunk_size < 1 or abs(chunk_size * frame_ms - chunk_ms) > 1e-6:
        raise OptionError(
            "chunk_ms",
            f"must be a positive multiple of {frame_ms:g} ms (one encoder frame = {SUBSAMPLING} "
            f"feature frames of {frame_shift_ms:g} ms), got {chunk_ms:g}",
        )
    left = encoder.left_context_chunks if left_context_chunks is None else left_context_chunks
    if left < -1:
        raise OptionError("left_context_chunks", f"must be -1 (all) or >= 0, got {left}")
    if not encoder.train_chunk_sizes and encoder.chunk_size < 0:
        logger.warning(
            "this model was trained with full attention only; streaming it will cost accuracy "
            "(train with --chunk-sizes for a model that streams well)"
        )
    return StreamingOptions(chunk_ms, chunk_size, left, chunk_ms + LOOKAHEAD_FRAMES * frame_shift_ms)


@torch.no_grad()
def streaming_greedy_search(
    model: HybridTransducer,
    features: torch.Tensor,
    lengths: torch.Tensor,
    opts: StreamingOptions,
    chunk_log: list[tuple[float, torch.Tensor]] | None = None,
) -> list[list[int]]:
    """Transducer greedy search of a batch of (N, T, F) feature streams, fed to the encoder
    chunk by chunk as live audio would arrive; (N,) lengths; returns N token-id lists.

    Equals offline greedy search on ``model.encode(..., chunk_size, left_context_chunks)``.
    With ``chunk_log`` each chunk appends ``(seconds, encoder_lens)``: its compute time
    (encoder and search, device-synchronised) and the (N,) encoder frames it gave each stream
    (on the CPU), from which :func:`final_chunk_latency` reads per-utterance latencies.
    """
    streamer = StreamingEncoder(model, opts.chunk_size, opts.left_context_chunks)
    search = TransducerGreedySearch(model, features.size(0), features.device)
    for window, num_frames in stream_windows(features, lengths, opts.chunk_size):
        start = synced_clock(features.device) if chunk_log is not None else 0.0
        encoder_out, encoder_lens = streamer.encode_chunk(window, num_frames)
        search.advance(encoder_out, encoder_lens)
        if chunk_log is not None:
            chunk_log.append((synced_clock(features.device) - start, encoder_lens.cpu()))
    return search.hyps


def final_chunk_latency(chunk_log: list[tuple[float, torch.Tensor]]) -> list[float]:
    """Per stream of a :func:`streaming_greedy_search` batch: the compute seconds of its
    last chunk with encoder frames, i.e. how long after its last audio arrived (plus the
    algorithmic latency) its hypothesis was final."""
    if not chunk_log:
        return []
    has_frames = torch.stack([lens > 0 for _, lens in chunk_log])  # (chunks, N)
    chunks = torch.arange(len(chunk_log))[:, None]
    last = torch.where(has_frames, chunks, 0).amax(dim=0)  # (N,)
    return [chunk_log[k][0] for k in last.tolist()]
