"""Transducer joint network: combines encoder and predictor outputs into token logits."""

from __future__ import annotations

import torch
from torch import nn


class Joiner(nn.Module):
    """``output_linear(tanh(encoder_proj(enc) + decoder_proj(dec)))`` (icefall semantics).

    The projections are separate modules because the pruned RNN-T loss projects the
    (N, T, D) encoder output and the (N, U + 1, D) predictor output *before* gathering
    the pruned (N, T, S, D) lattice, which is much cheaper than projecting after.

    Args:
        encoder_dim: encoder output dimension.
        decoder_dim: predictor output dimension.
        joiner_dim: hidden dimension of the joint network.
        vocab_size: number of output tokens, including blank.
    """

    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int) -> None:
        super().__init__()
        for name, value in (
            ("encoder_dim", encoder_dim),
            ("decoder_dim", decoder_dim),
            ("joiner_dim", joiner_dim),
            ("vocab_size", vocab_size),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive (got {value})")
        self.encoder_dim = encoder_dim
        self.decoder_dim = decoder_dim
        self.joiner_dim = joiner_dim
        self.vocab_size = vocab_size
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.decoder_proj = nn.Linear(decoder_dim, joiner_dim)
        self.output_linear = nn.Linear(joiner_dim, vocab_size)

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor, project_input: bool = True) -> torch.Tensor:
        """Joint logits.

        Args:
            encoder_out: (..., encoder_dim), or (..., joiner_dim) if ``project_input`` is False.
            decoder_out: (..., decoder_dim), or (..., joiner_dim) if ``project_input`` is False.
                Both must have the same number of dimensions; sizes broadcast,
                e.g. (N, T, 1, D) with (N, 1, U, D) gives the full lattice.
            project_input: False when the inputs were already passed through
                ``encoder_proj`` / ``decoder_proj`` (the pruned-loss path).

        Returns:
            (..., vocab_size) unnormalised logits.
        """
        if encoder_out.ndim != decoder_out.ndim:
            raise ValueError(
                f"encoder_out and decoder_out must have the same ndim, got {encoder_out.ndim} and {decoder_out.ndim}"
            )
        enc_dim, dec_dim = (self.encoder_dim, self.decoder_dim) if project_input else (self.joiner_dim,) * 2
        if encoder_out.size(-1) != enc_dim or decoder_out.size(-1) != dec_dim:
            raise ValueError(
                f"expected last dims ({enc_dim}, {dec_dim}) with project_input={project_input}, "
                f"got ({encoder_out.size(-1)}, {decoder_out.size(-1)})"
            )
        if project_input:
            hidden = self.encoder_proj(encoder_out) + self.decoder_proj(decoder_out)
        else:
            hidden = encoder_out + decoder_out
        return self.output_linear(torch.tanh(hidden))
