"""Batched greedy search for the transducer (offline, or streaming chunk by chunk) and the CTC head."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from dsr.models.transducer import HybridTransducer


class TransducerGreedySearch:
    """Batched greedy search that consumes encoder frames as they arrive.

    The hypotheses and the predictor state (last ``context_size`` tokens and the projected
    predictor output) persist between calls of :meth:`advance`, so feeding a stream's
    encoder output chunk by chunk gives exactly the result of one call on all of it.

    Args:
        model: the transducer (its predictor and joiner are used).
        batch_size: number of utterances N.
        device: where the search state lives (that of the encoder output).
        max_sym_per_frame: symbols that may be emitted at one frame before moving on.
        lookahead: frames the joiner scores at once, shared by the batch (see :meth:`advance`);
            1 scores frame by frame.
    """

    def __init__(
        self,
        model: HybridTransducer,
        batch_size: int,
        device: torch.device,
        max_sym_per_frame: int = 1,
        lookahead: int = 16,
    ) -> None:
        if max_sym_per_frame < 1:
            raise ValueError(f"max_sym_per_frame must be >= 1, got {max_sym_per_frame}")
        if lookahead < 1:
            raise ValueError(f"lookahead must be >= 1, got {lookahead}")
        self.model = model
        self.predictor, self.joiner = model.transducer_heads()
        self.max_sym_per_frame = max_sym_per_frame
        self.lookahead = lookahead
        self.hyps: list[list[int]] = [[] for _ in range(batch_size)]
        # Joiner log-probability of each emitted token (parallel to hyps): pseudo-labelling's confidence.
        self.token_log_probs: list[list[float]] = [[] for _ in range(batch_size)]
        # Encoder frame of each emitted token (parallel to hyps), counted across calls of advance.
        self.timestamps: list[list[int]] = [[] for _ in range(batch_size)]
        self.frames_seen = 0
        self.context = torch.full(
            (batch_size, self.predictor.context_size), model.blank_id, dtype=torch.long, device=device
        )
        with torch.no_grad():
            self.dec_proj = self.joiner.decoder_proj(self.predictor(self.context, need_pad=False))  # (N, 1, J)

    @torch.no_grad()
    def advance(self, encoder_out: torch.Tensor, encoder_lens: torch.Tensor) -> None:
        """Consume the next (N, T, D) encoder frames, of which the first ``encoder_lens``
        (N,) are valid per utterance; all utterances advance one frame at a time.

        Most frames are blank, and a blank leaves the predictor state unchanged: the joiner
        therefore scores a window of frames at once against the current state and the
        search jumps to the first frame where some utterance emits (the frames before it
        were blank for every utterance, exactly as frame-by-frame search finds).  The
        window is ``lookahead // N`` frames, at least 1: in a large batch nearly every
        frame has an emitting utterance, and the extra scores would be wasted.
        """
        if encoder_out.dim() != 3 or encoder_out.size(0) != len(self.hyps):
            raise ValueError(f"encoder_out must be ({len(self.hyps)}, T, D), got {tuple(encoder_out.shape)}")
        n = len(self.hyps)
        enc_proj = self.joiner.encoder_proj(encoder_out)  # (N, T, J)
        num_frames = min(encoder_out.size(1), int(encoder_lens.max()) if n else 0)
        window = max(1, self.lookahead // max(n, 1))
        frame_index = torch.arange(window, device=encoder_out.device)
        t = 0
        while t < num_frames:
            w = min(window, num_frames - t)
            logits = self.joiner(enc_proj[:, t : t + w].unsqueeze(2), self.dec_proj.unsqueeze(1), project_input=False)
            logits = logits.reshape(n, w, -1)
            best = logits.argmax(dim=-1)  # (N, w)
            valid = encoder_lens[:, None] > t + frame_index[:w]  # (N, w)
            emit_frames = (self._emits(best) & valid).any(dim=0).nonzero()
            if emit_frames.numel() == 0:
                t += w
                continue
            first = int(emit_frames[0])
            t += first
            emit = self._emits(best[:, first]) & valid[:, first]
            self._emit(emit, best[:, first], logits[:, first], self.frames_seen + t)
            for _ in range(self.max_sym_per_frame - 1):  # further symbols at the same frame
                logits = self.joiner(
                    enc_proj[:, t : t + 1].unsqueeze(2), self.dec_proj.unsqueeze(1), project_input=False
                )
                logits = logits.reshape(n, -1)
                frame_best = logits.argmax(dim=-1)
                emit = valid[:, first] & self._emits(frame_best)
                if not emit.any():
                    break
                self._emit(emit, frame_best, logits, self.frames_seen + t)
            t += 1
        # Chunks of a stream have equal widths but for the last one, so the offset is exact for a stream.
        self.frames_seen += encoder_out.size(1)

    def _emits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Which of ``tokens`` are emitted: neither blank nor the model's ``unk_id`` (when set),
        which icefall's and sherpa-onnx's searches also treat as blank."""
        emits = tokens != self.model.blank_id
        return emits if self.model.unk_id is None else emits & (tokens != self.model.unk_id)

    def _emit(self, emit: torch.Tensor, tokens: torch.Tensor, logits: torch.Tensor, frame: int) -> None:
        """Append ``tokens[i]`` (N,) to the utterances where ``emit`` (N,) is True and update their predictor state;
        ``logits`` (N, V) are the joiner outputs the tokens were chosen from, at encoder frame ``frame``."""
        idx = emit.nonzero(as_tuple=True)[0]
        # Normalised only for the emitting rows: a few (V,) rows per emission, cheap next to the joiner.
        token_lp = logits[idx].float().log_softmax(dim=-1).gather(1, tokens[idx, None]).squeeze(1)
        for i, token, lp in zip(idx.tolist(), tokens[idx].tolist(), token_lp.tolist()):
            self.hyps[i].append(token)
            self.token_log_probs[i].append(lp)
            self.timestamps[i].append(frame)
        self.context[idx] = torch.cat([self.context[idx, 1:], tokens[idx, None]], dim=1)
        self.dec_proj[idx] = self.joiner.decoder_proj(self.predictor(self.context[idx], need_pad=False))


@torch.no_grad()
def transducer_greedy_search(
    model: HybridTransducer, encoder_out: torch.Tensor, encoder_lens: torch.Tensor, max_sym_per_frame: int = 1
) -> list[list[int]]:
    """Greedy search over a batch, all utterances advancing one frame at a time.

    Args:
        encoder_out: (N, T, D) encoder output.
        encoder_lens: (N,) valid frames.
        max_sym_per_frame: symbols that may be emitted at one frame before moving on.
    Returns:
        One token-id list per utterance (blank removed).
    """
    if encoder_out.dim() != 3:
        raise ValueError(f"encoder_out must be (N, T, D), got {tuple(encoder_out.shape)}")
    search = TransducerGreedySearch(model, encoder_out.size(0), encoder_out.device, max_sym_per_frame)
    search.advance(encoder_out, encoder_lens)
    return search.hyps


@torch.no_grad()
def transducer_greedy_search_with_timestamps(
    model: HybridTransducer, encoder_out: torch.Tensor, encoder_lens: torch.Tensor, max_sym_per_frame: int = 1
) -> tuple[list[list[int]], list[list[int]]]:
    """:func:`transducer_greedy_search`, and the encoder frame of each token (same shapes)."""
    if encoder_out.dim() != 3:
        raise ValueError(f"encoder_out must be (N, T, D), got {tuple(encoder_out.shape)}")
    search = TransducerGreedySearch(model, encoder_out.size(0), encoder_out.device, max_sym_per_frame)
    search.advance(encoder_out, encoder_lens)
    return search.hyps, search.timestamps


@torch.no_grad()
def ctc_greedy_search_with_timestamps(
    log_probs: torch.Tensor, lens: torch.Tensor, blank: int = 0
) -> tuple[list[list[int]], list[list[int]]]:
    """:func:`ctc_greedy_search`, and the frame where each token's run of frames starts."""
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (N, T, V), got {tuple(log_probs.shape)}")
    best = log_probs.argmax(dim=-1).cpu()
    tokens, frames = [], []
    for i, n in enumerate(lens.tolist()):
        seq, counts = torch.unique_consecutive(best[i, :n], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        keep = [(s, t) for s, t in zip(seq.tolist(), starts.tolist()) if s != blank]
        tokens.append([s for s, _ in keep])
        frames.append([t for _, t in keep])
    return tokens, frames


@torch.no_grad()
def ctc_greedy_search(log_probs: torch.Tensor, lens: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best path of a CTC posteriorgram: argmax per frame, merge repeats, drop blanks.

    Args:
        log_probs: (N, T, V) CTC log-posteriors.
        lens: (N,) valid frames.
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (N, T, V), got {tuple(log_probs.shape)}")
    best = log_probs.argmax(dim=-1).cpu()
    out = []
    for i, n in enumerate(lens.tolist()):
        seq = torch.unique_consecutive(best[i, :n]).tolist()
        out.append([s for s in seq if s != blank])
    return out
