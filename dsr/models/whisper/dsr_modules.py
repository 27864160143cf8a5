"""Whisper's encoder and decoder in the shapes dsr's hybrid model expects.

:class:`WhisperEncoder` is the ``encoder`` of a :class:`~dsr.models.transducer.HybridTransducer`
(the transducer, CTC and attention heads sit on its output, one frame per 20 ms);
:class:`WhisperDecoderHead` is its attention decoder: Whisper's own text decoder, which
keeps Whisper's tokenizer while the transducer and CTC heads use the recipe's BPE.
Both subclass the Whisper modules, so the model's state dict holds OpenAI's names under
``encoder.`` and ``attention_decoder.`` and pretrained weights load by renaming one prefix.
"""

from __future__ import annotations

import torch
from torch import nn

from dsr.losses.label_smoothing import label_smoothing_loss
from dsr.models.attention_decoder import score_hypotheses
from dsr.models.whisper.model import N_FRAMES_30S, AudioEncoder, TextDecoder, WhisperDims, conv_output_lengths

IGNORE_ID = -1


class WhisperEncoder(AudioEncoder):
    """Whisper's encoder with dsr's encoder interface: (N, T, F) features in, (N, T', D) out.

    Args:
        dims: the pretrained model's dimensions.
        pad_to_30s: pad every input to a 30 s window, as Whisper was trained and as
            faster-whisper decodes (zero-shot use); off for fine-tuning, where
            short utterances cost a fraction of the 30 s window.  Padded, the output is the
            whole window (1500 frames, all valid), which is what Whisper's decoder reads;
            its alignment-based heads would see the silence too, so it is for the decoder only.
    """

    def __init__(self, dims: WhisperDims, pad_to_30s: bool = False) -> None:
        super().__init__(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer)
        self.input_dim = dims.n_mels
        self.output_dim = dims.n_audio_state
        self.pad_to_30s = pad_to_30s

    def output_lengths(self, num_frames: torch.Tensor) -> torch.Tensor:
        """Encoder frames for ``num_frames`` input frames (the second convolution halves them)."""
        return conv_output_lengths(num_frames)

    def forward(  # type: ignore[override]
        self,
        features: torch.Tensor,
        feature_lens: torch.Tensor,
        chunk_size: int | None = None,
        left_context_chunks: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, n_mels) Whisper log-mel and (N,) lengths -> (N, T', D) and (N,) lengths.

        Whisper's encoder attends to the whole input: chunked (streaming) attention is
        refused with a ``ValueError``.
        """
        if chunk_size not in (None, -1) or left_context_chunks not in (None, -1):
            raise ValueError("the Whisper encoder attends to whole utterances; it cannot run chunked (streaming)")
        if features.size(-1) != self.input_dim:
            raise ValueError(f"expected {self.input_dim} mel bins, got features of shape {tuple(features.shape)}")
        mel = features.transpose(1, 2)
        out_lens = self.output_lengths(feature_lens)
        if self.pad_to_30s:
            if mel.size(2) > N_FRAMES_30S:
                raise ValueError(f"input of {mel.size(2)} frames is longer than 30 s ({N_FRAMES_30S} frames)")
            # Zeros of the normalised log-mel, after each utterance's own frames: what faster-whisper
            # (pad_or_trim of the features) and OpenAI's transcribe feed the encoder.
            padded = mel.new_zeros(mel.size(0), mel.size(1), N_FRAMES_30S)
            for i, n in enumerate(feature_lens.tolist()):
                padded[i, :, :n] = mel[i, :, :n]
            out = super().forward(padded)
            # The whole window is the output, as Whisper's decoder cross-attends to all of it.
            return out, torch.full_like(out_lens, out.size(1))
        return super().forward(mel, feature_lens), out_lens


class WhisperDecoderHead(TextDecoder):
    """Whisper's text decoder as dsr's attention head, with its start prompt and end token.

    Targets are Whisper token ids of the transcript (no prompt, no end token); the
    loss is label-smoothed cross entropy of ``tokens + eot`` after ``prompt``, summed over
    the target positions, as :class:`~dsr.models.attention_decoder.AttentionDecoder`'s.

    Args:
        dims: the pretrained model's dimensions.
        prompt: the start sequence, e.g. ``<|startoftranscript|><|notimestamps|>``.
        eot: the end-of-text id.
    """

    def __init__(self, dims: WhisperDims, prompt: tuple[int, ...], eot: int) -> None:
        super().__init__(dims.n_vocab, dims.n_text_ctx, dims.n_text_state, dims.n_text_head, dims.n_text_layer)
        if not prompt:
            raise ValueError("the Whisper decoder needs a non-empty start prompt")
        if any(not 0 <= t < dims.n_vocab for t in (*prompt, eot)):
            raise ValueError(f"prompt {prompt} and eot {eot} must be ids below n_vocab={dims.n_vocab}")
        self.encoder_dim = dims.n_audio_state
        self.prompt = tuple(prompt)
        self.eot = eot

    def make_inputs(self, tokens: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Token lists -> ``inputs`` (N, P + U) = prompt + y (right-padded with eot) and
        ``targets`` (N, P + U) = the next token at each position, y + eot after the prompt's
        last position, -1 elsewhere (prompt and padding are not trained)."""
        p = len(self.prompt)
        width = p + max((len(t) for t in tokens), default=0)
        if width > self.n_ctx:
            raise ValueError(f"a transcript of {width - p} Whisper tokens exceeds the decoder's {self.n_ctx - p}")
        inputs = torch.full((len(tokens), width), self.eot, dtype=torch.int64)
        targets = torch.full((len(tokens), width), IGNORE_ID, dtype=torch.int64)
        inputs[:, :p] = torch.tensor(self.prompt, dtype=torch.int64)
        for i, seq in enumerate(tokens):
            if seq:
                row = torch.tensor(seq, dtype=torch.int64)
                inputs[i, p : p + len(seq)] = row
                targets[i, p - 1 : p - 1 + len(seq)] = row
            targets[i, p - 1 + len(seq)] = self.eot
        if bool(((inputs < 0) | (inputs >= self.vocab_size)).any()):
            raise ValueError(f"tokens must be ids in [0, {self.vocab_size})")
        return inputs.to(device), targets.to(device)

    def loss(
        self,
        encoder_out: torch.Tensor,
        encoder_lens: torch.Tensor,
        tokens: list[list[int]],
        label_smoothing: float = 0.1,
    ) -> torch.Tensor:
        """Summed label-smoothed CE of each ``tokens`` row + eot; (N, T, D) encoder output, (N,) lengths."""
        if len(tokens) != encoder_out.size(0):
            raise ValueError(f"got {len(tokens)} token lists for a batch of {encoder_out.size(0)}")
        inputs, targets = self.make_inputs(tokens, encoder_out.device)
        logits = self(inputs, encoder_out, encoder_lens)
        return label_smoothing_loss(logits, targets, label_smoothing, ignore_index=IGNORE_ID, reduction="sum")

    @torch.no_grad()
    def score(
        self, encoder_out: torch.Tensor, encoder_lens: torch.Tensor, hyps: list[list[list[int]]]
    ) -> list[list[float]]:
        """log p(y + eot | prompt, x) of each hypothesis (Whisper ids); the same nesting of floats."""

        def logits_and_targets(idx: torch.Tensor, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
            inputs, targets = self.make_inputs(seqs, encoder_out.device)
            return self(inputs, encoder_out[idx], encoder_lens.to(encoder_out.device)[idx]), targets

        return score_hypotheses(hyps, encoder_out.size(0), encoder_out.device, logits_and_targets)


def is_whisper_head(module: nn.Module | None) -> bool:
    """True for an attention head that reads Whisper token ids rather than the model's BPE."""
    return isinstance(module, WhisperDecoderHead)
