"""Pruned RNN-T transducer with an auxiliary CTC head (icefall ``pruned_transducer_stateless``)."""

from __future__ import annotations

import torch
from torch import nn

from dsr.losses.backend import get_rnnt_backend
from dsr.losses.ctc import ctc_loss
from dsr.models.conformer import ConformerEncoder
from dsr.models.joiner import Joiner
from dsr.models.predictor import StatelessPredictor


def _scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in the forward pass; its gradient multiplied by ``scale`` in the backward pass."""
    if scale == 1.0:
        return x
    return x.detach() if scale == 0.0 else x * scale + x.detach() * (1.0 - scale)


class HybridTransducer(nn.Module):
    """Conformer encoder + stateless predictor + joiner, trained with pruned RNN-T and CTC.

    :meth:`forward` returns the *unweighted*, summed losses; combining them (loss
    scales, simple-to-pruned warm-up) is the trainer's job.

    Args:
        encoder: the acoustic encoder (includes subsampling).
        predictor: the stateless prediction network.
        joiner: the joint network.
        vocab_size: number of tokens, including blank.
        blank_id: the blank token (also the start-of-sequence symbol of the predictor).
        ctc: add a CTC head (dropout + linear + log-softmax on the encoder output).
    """

    def __init__(
        self,
        encoder: ConformerEncoder,
        predictor: StatelessPredictor,
        joiner: Joiner,
        vocab_size: int,
        blank_id: int = 0,
        ctc: bool = True,
    ) -> None:
        super().__init__()
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"blank_id must be in [0, vocab_size={vocab_size}) (got {blank_id})")
        if predictor.vocab_size != vocab_size or joiner.vocab_size != vocab_size:
            raise ValueError(
                f"vocab_size mismatch: model {vocab_size}, predictor {predictor.vocab_size}, joiner {joiner.vocab_size}"
            )
        if predictor.blank_id != blank_id:
            raise ValueError(f"predictor.blank_id ({predictor.blank_id}) != blank_id ({blank_id})")
        if encoder.output_dim != joiner.encoder_dim or predictor.embed_dim != joiner.decoder_dim:
            raise ValueError(
                f"joiner expects encoder_dim={joiner.encoder_dim}, decoder_dim={joiner.decoder_dim}; "
                f"got encoder {encoder.output_dim}, predictor {predictor.embed_dim}"
            )
        self.encoder = encoder
        self.predictor = predictor
        self.joiner = joiner
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        # Linear "joiners" for the simple (smoothed) loss that selects the pruning ranges.
        self.simple_am_proj = nn.Linear(encoder.output_dim, vocab_size)
        self.simple_lm_proj = nn.Linear(predictor.embed_dim, vocab_size)
        # Global CMVN of the input features (WeNet/ESPnet style), set from training data by
        # the trainer (see :meth:`set_feature_stats`) and saved with the weights.  Raw log-mel
        # values sit around -13 +- 9; normalised inputs let the encoder start using the
        # acoustics within a few hundred steps instead of first learning a label prior.
        self.register_buffer("feature_mean", torch.zeros(encoder.input_dim))
        self.register_buffer("feature_std", torch.ones(encoder.input_dim))
        self.ctc_output: nn.Sequential | None = None
        if ctc:
            self.ctc_output = nn.Sequential(
                nn.Dropout(0.1), nn.Linear(encoder.output_dim, vocab_size), nn.LogSoftmax(dim=-1)
            )

    def encode(
        self,
        features: torch.Tensor,
        feature_lens: torch.Tensor,
        chunk_size: int | None = None,
        left_context_chunks: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, F) features and (N,) lengths -> (N, T', D) encoder output and (N,) lengths.

        ``chunk_size`` / ``left_context_chunks`` override the encoder's settings for this call.
        """
        features = (features - self.feature_mean) / self.feature_std
        return self.encoder(features, feature_lens, chunk_size=chunk_size, left_context_chunks=left_context_chunks)

    @torch.no_grad()
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the input normalisation; ``mean``/``std`` are (F,) per-dimension statistics."""
        if mean.shape != self.feature_mean.shape or std.shape != self.feature_std.shape:
            raise ValueError(f"expected ({self.feature_mean.numel()},) stats, got {tuple(mean.shape)}, {tuple(std.shape)}")
        if (std <= 0).any():
            raise ValueError("feature std must be positive")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)

    def ctc_log_probs(self, encoder_out: torch.Tensor) -> torch.Tensor:
        """(N, T', D) encoder output -> (N, T', V) CTC log-probabilities."""
        if self.ctc_output is None:
            raise ValueError("this model was built without a CTC head (ctc=False)")
        return self.ctc_output(encoder_out)

    def _pad_targets(
        self, targets: list[list[int]], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token lists -> ``y_padded`` (N, U) padded with 0 (as icefall), ``sos_y_padded``
        (N, U + 1) = blank + labels padded with blank, and ``y_lens`` (N,); built on the CPU
        and moved to ``device`` once."""
        lens = [len(t) for t in targets]
        flat = torch.tensor([tok for t in targets for tok in t], dtype=torch.int64)
        if bool(((flat < 0) | (flat >= self.vocab_size) | (flat == self.blank_id)).any()):
            raise ValueError(f"targets must be token ids in [0, {self.vocab_size}) other than blank={self.blank_id}")
        max_len = max(lens, default=0)
        y_padded = torch.zeros(len(targets), max_len, dtype=torch.int64)
        sos_y_padded = torch.full((len(targets), max_len + 1), self.blank_id, dtype=torch.int64)
        offset = 0
        for i, n in enumerate(lens):
            y_padded[i, :n] = flat[offset : offset + n]
            sos_y_padded[i, 1 : n + 1] = flat[offset : offset + n]
            offset += n
        y_lens = torch.tensor(lens, dtype=torch.int64)
        return y_padded.to(device), sos_y_padded.to(device), y_lens.to(device)

    def forward(
        self,
        features: torch.Tensor,
        feature_lens: torch.Tensor,
        targets: list[list[int]],
        prune_range: int = 5,
        am_scale: float = 0.0,
        lm_scale: float = 0.25,
        rnnt_backend: str = "dsr",
        chunk_size: int | None = None,
        left_context_chunks: int | None = None,
        rnnt_encoder_grad_scale: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """Compute the training losses of a batch (reduction "sum" over utterances).

        Args:
            features: (N, T, F) padded features.
            feature_lens: (N,) valid frames per utterance.
            targets: N token-id lists (no blanks).
            prune_range: symbols kept per frame by the pruned loss (k2's ``s_range``).
            am_scale, lm_scale: smoothing scales of the simple loss.
            rnnt_backend: name passed to :func:`dsr.losses.backend.get_rnnt_backend`.
            chunk_size, left_context_chunks: per-call chunked-attention overrides.
            rnnt_encoder_grad_scale: factor in [0, 1] on the gradient that the transducer
                losses send into the encoder (values are unchanged).  Early in training the
                transducer lowers its loss fastest through the predictor, and its gradient
                into the encoder drowns CTC's; with a small factor the encoder first learns
                from CTC alone (see :func:`dsr.training.trainer.rnnt_encoder_grad_scale`).

        Returns:
            ``simple_loss``, ``pruned_loss``, ``ctc_loss`` (only with a CTC head): scalar
            float32 sums over the batch; ``num_frames``: total encoder output frames;
            ``num_tokens``: total target tokens (both int64 scalars, for normalisation).
        """
        if len(targets) != features.size(0):
            raise ValueError(f"got {len(targets)} target lists for a batch of {features.size(0)}")
        if prune_range < 1:
            raise ValueError(f"prune_range must be >= 1 (got {prune_range})")
        if not 0.0 <= rnnt_encoder_grad_scale <= 1.0:
            raise ValueError(f"rnnt_encoder_grad_scale must be in [0, 1] (got {rnnt_encoder_grad_scale})")
        rnnt = get_rnnt_backend(rnnt_backend)  # k2's API whichever backend

        encoder_out, encoder_lens = self.encode(features, feature_lens, chunk_size, left_context_chunks)
        rnnt_encoder_out = _scale_grad(encoder_out, rnnt_encoder_grad_scale)
        y_padded, sos_y_padded, y_lens = self._pad_targets(targets, encoder_out.device)
        # The predictor sees blank (as SOS) followed by the labels.
        decoder_out = self.predictor(sos_y_padded)  # (N, U + 1, decoder_dim)

        boundary = torch.zeros((features.size(0), 4), dtype=torch.int64, device=encoder_out.device)
        boundary[:, 2] = y_lens
        boundary[:, 3] = encoder_lens

        lm = self.simple_lm_proj(decoder_out)
        am = self.simple_am_proj(rnnt_encoder_out)
        # The loss recursions need float32 even when the network runs in bf16/fp16.
        with torch.autocast(device_type=encoder_out.device.type, enabled=False):
            simple_loss, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(
                lm=lm.float(),
                am=am.float(),
                symbols=y_padded,
                termination_symbol=self.blank_id,
                lm_only_scale=lm_scale,
                am_only_scale=am_scale,
                boundary=boundary,
                reduction="sum",
                return_grad=True,
            )
        ranges = rnnt.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=prune_range)
        # Project before pruning: (N, T, D) and (N, U + 1, D) are far smaller than (N, T, S, D).
        am_pruned, lm_pruned = rnnt.do_rnnt_pruning(
            am=self.joiner.encoder_proj(rnnt_encoder_out), lm=self.joiner.decoder_proj(decoder_out), ranges=ranges
        )
        logits = self.joiner(am_pruned, lm_pruned, project_input=False)  # (N, T, S, V)
        with torch.autocast(device_type=encoder_out.device.type, enabled=False):
            pruned_loss = rnnt.rnnt_loss_pruned(
                logits=logits.float(),
                symbols=y_padded,
                ranges=ranges,
                termination_symbol=self.blank_id,
                boundary=boundary,
                reduction="sum",
            )

        out = {
            "simple_loss": simple_loss,
            "pruned_loss": pruned_loss,
            "num_frames": encoder_lens.sum(),
            "num_tokens": y_lens.sum(),
        }
        if self.ctc_output is not None:
            log_probs = self.ctc_log_probs(encoder_out)
            out["ctc_loss"] = ctc_loss(log_probs, encoder_lens, targets, blank=self.blank_id, reduction="sum")
        return out
