"""Hybrid ASR model: Conformer encoder with any of a pruned RNN-T transducer, a CTC head
and an attention decoder (icefall ``pruned_transducer_stateless`` / zipformer hybrid)."""

from __future__ import annotations

import torch
from torch import nn

from dsr.losses.backend import get_rnnt_backend
from dsr.losses.ctc import ctc_loss
from dsr.losses.rnnt import do_rnnt_pruning
from dsr.models.attention_decoder import AttentionDecoder
from dsr.models.conformer import ConformerEncoder
from dsr.models.joiner import Joiner
from dsr.models.predictor import StatelessPredictor
from dsr.models.utterance_norm import UTTERANCE_NORMS, normalize_utterances
from dsr.models.whisper.dsr_modules import (
    WhisperDecoderHead,
    WhisperEncoder,
    is_whisper_head,
)


def _scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in the forward pass; its gradient multiplied by ``scale`` in the backward pass."""
    if scale == 1.0:
        return x
    return x.detach() if scale == 0.0 else x * scale + x.detach() * (1.0 - scale)


class HybridTransducer(nn.Module):
    """Conformer encoder with up to three heads: transducer (stateless predictor + joiner,
    trained with pruned RNN-T), CTC, and a Transformer attention decoder.

    Any subset of heads that contains the transducer or CTC is allowed (a model needs an
    alignment-based head to decode without the attention decoder, whose n-best lists
    the attention decoder only rescores).  The name is historical: a model without the
    transducer is still a ``HybridTransducer`` so that every checkpoint loads the same way.

    :meth:`forward` returns the *unweighted*, summed losses; combining them (loss
    scales, simple-to-pruned warm-up) is the trainer's job.

    Args:
        encoder: the acoustic encoder (includes subsampling).
        predictor: the stateless prediction network, or None for no transducer.
        joiner: the joint network (None exactly when ``predictor`` is None).
        vocab_size: number of tokens, including blank.
        blank_id: the blank token (also the start-of-sequence symbol of the predictor).
        ctc: add a CTC head (dropout + linear + log-softmax on the encoder output).
        attention_decoder: optional attention decoder over the encoder output.
        utterance_norm: per-utterance normalisation after the global CMVN, one of
            :data:`~dsr.models.utterance_norm.UTTERANCE_NORMS` (``"none"``: global only).
    """

    # Buffers, declared so that type checkers do not see nn.Module.__getattr__'s Tensor | Module.
    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(
        self,
        encoder: ConformerEncoder | WhisperEncoder,
        predictor: StatelessPredictor | None,
        joiner: Joiner | None,
        vocab_size: int,
        blank_id: int = 0,
        ctc: bool = True,
        attention_decoder: AttentionDecoder | WhisperDecoderHead | None = None,
        utterance_norm: str = "none",
    ) -> None:
        super().__init__()
        if utterance_norm not in UTTERANCE_NORMS:
            raise ValueError(f"utterance_norm must be one of {UTTERANCE_NORMS} (got {utterance_norm!r})")
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"blank_id must be in [0, vocab_size={vocab_size}) (got {blank_id})")
        if (predictor is None) != (joiner is None):
            raise ValueError("predictor and joiner must both be given (transducer) or both be None (no transducer)")
        # Whisper's decoder head keeps Whisper's own vocabulary (its targets come separately)
        # and, unlike dsr's attention decoder, decodes alone (zero-shot Whisper).
        own_vocab = is_whisper_head(attention_decoder)
        if predictor is None and not ctc and not own_vocab:
            raise ValueError("a model needs a transducer or a CTC head (got neither)")
        if predictor is not None and joiner is not None:
            if predictor.vocab_size != vocab_size or joiner.vocab_size != vocab_size:
                raise ValueError(
                    f"vocab_size mismatch: model {vocab_size}, predictor {predictor.vocab_size}, "
                    f"joiner {joiner.vocab_size}"
                )
            if predictor.blank_id != blank_id:
                raise ValueError(f"predictor.blank_id ({predictor.blank_id}) != blank_id ({blank_id})")
            if encoder.output_dim != joiner.encoder_dim or predictor.embed_dim != joiner.decoder_dim:
                raise ValueError(
                    f"joiner expects encoder_dim={joiner.encoder_dim}, decoder_dim={joiner.decoder_dim}; "
                    f"got encoder {encoder.output_dim}, predictor {predictor.embed_dim}"
                )
        if attention_decoder is not None and (
            (attention_decoder.vocab_size != vocab_size and not own_vocab)
            or attention_decoder.encoder_dim != encoder.output_dim
        ):
            raise ValueError(
                f"attention decoder expects vocab {attention_decoder.vocab_size} and encoder_dim "
                f"{attention_decoder.encoder_dim}; got {vocab_size} and {encoder.output_dim}"
            )
        self.encoder = encoder
        self.predictor = predictor
        self.joiner = joiner
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        # The vocabulary's <unk> id, set by decoding from the lang dir (DecodingModel.check_lang_dir):
        # transducer search then treats <unk> as blank, as icefall's and sherpa-onnx's do.
        self.unk_id: int | None = None
        if predictor is not None:
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
        self.attention_decoder = attention_decoder
        self.utterance_norm = utterance_norm

    @property
    def has_transducer(self) -> bool:
        return self.joiner is not None

    def transducer_heads(self) -> tuple[StatelessPredictor, Joiner]:
        """The predictor and the joiner; ``ValueError`` for a model without the transducer head."""
        if self.predictor is None or self.joiner is None:
            raise ValueError("this model has no transducer head (predictor and joiner)")
        return self.predictor, self.joiner

    def conformer_encoder(self) -> ConformerEncoder:
        """The encoder as a Conformer (streaming, ONNX export and pruning need one); ``TypeError`` for Whisper's."""
        if not isinstance(self.encoder, ConformerEncoder):
            raise TypeError(f"expected a ConformerEncoder, got {type(self.encoder).__name__}")
        return self.encoder

    def whisper_head(self) -> WhisperDecoderHead:
        """The attention head as Whisper's decoder; ``TypeError`` when it is not one."""
        if not isinstance(self.attention_decoder, WhisperDecoderHead):
            raise TypeError("this model's attention head is not Whisper's decoder")
        return self.attention_decoder

    @property
    def has_whisper_head(self) -> bool:
        """The attention head is Whisper's decoder (its own tokenizer; it can decode alone)."""
        return is_whisper_head(self.attention_decoder)

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
        features = normalize_utterances(features, feature_lens, self.utterance_norm)
        return self.encoder(features, feature_lens, chunk_size=chunk_size, left_context_chunks=left_context_chunks)

    @torch.no_grad()
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the input normalisation; ``mean``/``std`` are (F,) per-dimension statistics."""
        if mean.shape != self.feature_mean.shape or std.shape != self.feature_std.shape:
            raise ValueError(
                f"expected ({self.feature_mean.numel()},) stats, got {tuple(mean.shape)}, {tuple(std.shape)}"
            )
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

    def pruned_joiner_logits(
        self, encoder_out: torch.Tensor, sos_y_padded: torch.Tensor, ranges: torch.Tensor
    ) -> torch.Tensor:
        """Joiner logits on a pruned lattice (e.g. a student's ranges, for distillation).

        Args:
            encoder_out: (N, T, D) encoder output.
            sos_y_padded: (N, U + 1) blank followed by the labels, padded with blank.
            ranges: (N, T, S) int64 symbol positions per frame.

        Returns:
            (N, T, S, V) unnormalised logits.
        """
        if self.predictor is None or self.joiner is None:
            raise ValueError("this model was built without a transducer (use_transducer=False)")
        return self._joiner_on_ranges(encoder_out, self.predictor(sos_y_padded), ranges)

    def _joiner_on_ranges(
        self, encoder_out: torch.Tensor, decoder_out: torch.Tensor, ranges: torch.Tensor
    ) -> torch.Tensor:
        """(N, T, D) encoder and (N, U + 1, decoder_dim) predictor outputs -> (N, T, S, V) logits."""
        assert self.joiner is not None
        # Project before pruning: (N, T, D) and (N, U + 1, D) are far smaller than (N, T, S, D).
        # The pruning is a gather with the same semantics in every RNN-T backend: dsr's is used.
        am_pruned, lm_pruned = do_rnnt_pruning(
            am=self.joiner.encoder_proj(encoder_out), lm=self.joiner.decoder_proj(decoder_out), ranges=ranges
        )
        return self.joiner(am_pruned, lm_pruned, project_input=False)

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
        label_smoothing: float = 0.1,
        return_outputs: bool = False,
        attention_targets: list[list[int]] | None = None,
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
            label_smoothing: label smoothing of the attention decoder's cross entropy.
            return_outputs: also return the head outputs that distillation compares
                (see below).
            attention_targets: the attention decoder's targets when its vocabulary is not
                the model's (a Whisper decoder head: Whisper token ids); default ``targets``.

        Returns:
            ``simple_loss``, ``pruned_loss`` (only with a transducer), ``ctc_loss`` (only
            with a CTC head), ``attention_loss`` (only with an attention decoder): scalar
            float32 sums over the batch; ``num_frames``: total encoder output frames;
            ``num_tokens``: total target tokens (both int64 scalars, for normalisation).
            With ``return_outputs`` also ``encoder_lens`` (N,), ``sos_y_padded`` (N, U + 1),
            ``y_lens`` (N,), ``ctc_log_probs`` (N, T', V) with a CTC head, and with a
            transducer ``prune_ranges`` (N, T', S) and ``pruned_logits`` (N, T', S, V).
        """
        if len(targets) != features.size(0):
            raise ValueError(f"got {len(targets)} target lists for a batch of {features.size(0)}")
        if prune_range < 1:
            raise ValueError(f"prune_range must be >= 1 (got {prune_range})")
        if not 0.0 <= rnnt_encoder_grad_scale <= 1.0:
            raise ValueError(f"rnnt_encoder_grad_scale must be in [0, 1] (got {rnnt_encoder_grad_scale})")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1) (got {label_smoothing})")

        encoder_out, encoder_lens = self.encode(features, feature_lens, chunk_size, left_context_chunks)
        y_padded, sos_y_padded, y_lens = self._pad_targets(targets, encoder_out.device)
        out: dict[str, torch.Tensor] = {}
        extra: dict[str, torch.Tensor] = {"encoder_lens": encoder_lens, "sos_y_padded": sos_y_padded, "y_lens": y_lens}
        if self.has_transducer:
            simple_loss, pruned_loss, ranges, logits = self._transducer_losses(
                _scale_grad(encoder_out, rnnt_encoder_grad_scale),
                encoder_lens,
                y_padded,
                sos_y_padded,
                y_lens,
                prune_range,
                am_scale,
                lm_scale,
                rnnt_backend,
            )
            out["simple_loss"], out["pruned_loss"] = simple_loss, pruned_loss
            extra["prune_ranges"], extra["pruned_logits"] = ranges, logits
        out["num_frames"] = encoder_lens.sum()
        out["num_tokens"] = y_lens.sum()
        if self.ctc_output is not None:
            log_probs = self.ctc_log_probs(encoder_out)
            out["ctc_loss"] = ctc_loss(log_probs, encoder_lens, targets, blank=self.blank_id, reduction="sum")
            extra["ctc_log_probs"] = log_probs
        if self.attention_decoder is not None:
            att_targets = targets if attention_targets is None else attention_targets
            if len(att_targets) != len(targets):
                raise ValueError(f"got {len(att_targets)} attention target lists for a batch of {len(targets)}")
            out["attention_loss"] = self.attention_decoder.loss(encoder_out, encoder_lens, att_targets, label_smoothing)
        if return_outputs:
            out.update(extra)
        return out

    def _transducer_losses(
        self,
        encoder_out: torch.Tensor,
        encoder_lens: torch.Tensor,
        y_padded: torch.Tensor,
        sos_y_padded: torch.Tensor,
        y_lens: torch.Tensor,
        prune_range: int,
        am_scale: float,
        lm_scale: float,
        rnnt_backend: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Simple and pruned RNN-T losses (sums), the (N, T, S) prune ranges and the
        (N, T, S, V) pruned joiner logits."""
        assert self.predictor is not None
        rnnt = get_rnnt_backend(rnnt_backend)  # k2's API whichever backend
        # The predictor sees blank (as SOS) followed by the labels.
        decoder_out = self.predictor(sos_y_padded)  # (N, U + 1, decoder_dim)

        boundary = torch.zeros((encoder_out.size(0), 4), dtype=torch.int64, device=encoder_out.device)
        boundary[:, 2] = y_lens
        boundary[:, 3] = encoder_lens

        lm = self.simple_lm_proj(decoder_out)
        am = self.simple_am_proj(encoder_out)
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
        logits = self._joiner_on_ranges(encoder_out, decoder_out, ranges)  # (N, T, S, V)
        with torch.autocast(device_type=encoder_out.device.type, enabled=False):
            pruned_loss = rnnt.rnnt_loss_pruned(
                logits=logits.float(),
                symbols=y_padded,
                ranges=ranges,
                termination_symbol=self.blank_id,
                boundary=boundary,
                reduction="sum",
            )
        return simple_loss, pruned_loss, ranges, logits
