"""Stateless prediction network (icefall's ``decoder.py``): a short token-context convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StatelessPredictor(nn.Module):
    """Embedding followed by a depthwise 1-D convolution over the last ``context_size`` tokens.

    Instead of an LSTM, the prediction network only looks at a fixed number of
    previous tokens (Ghodsi et al., 2020), which is as accurate for BPE/char units,
    much faster to train, and makes beam search trivially batchable.

    The input is the label sequence with a leading blank (``[blank] + y``); the
    output at position u depends on tokens ``u - context_size + 1 .. u`` of that
    input, i.e. on the ``context_size`` most recent tokens emitted so far.

    Args:
        vocab_size: number of tokens, including blank.
        embed_dim: embedding / output dimension.
        blank_id: the blank token.  Its embedding is fixed to zero (``padding_idx``),
            which makes zero left-padding identical to padding with blanks.
        context_size: number of tokens seen (1 = embedding only, no convolution).
    """

    def __init__(self, vocab_size: int, embed_dim: int, blank_id: int = 0, context_size: int = 2) -> None:
        super().__init__()
        if vocab_size <= 1:
            raise ValueError(f"vocab_size must be >= 2 (blank plus at least one token), got {vocab_size}")
        if embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive (got {embed_dim})")
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"blank_id must be in [0, {vocab_size}) (got {blank_id})")
        if context_size < 1:
            raise ValueError(f"context_size must be >= 1 (got {context_size})")
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.blank_id = blank_id
        self.context_size = context_size
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=blank_id)
        self.conv: nn.Conv1d | None = None
        if context_size > 1:
            self.conv = nn.Conv1d(embed_dim, embed_dim, kernel_size=context_size, groups=embed_dim, bias=False)

    def forward(self, y: torch.Tensor, need_pad: bool = True) -> torch.Tensor:
        """Predictor output for every position of ``y``.

        Args:
            y: (N, U) token ids, usually ``[blank] + labels`` padded with blank.  Negative
                ids mean "no token yet" (before the start of the utterance in decoding)
                and contribute a zero embedding.
            need_pad: True in training: left-pad by ``context_size - 1`` so the output has
                U positions.  False in decoding: ``y`` holds exactly the last
                ``context_size`` tokens and the output has one position.

        Returns:
            (N, U, embed_dim) if ``need_pad`` else (N, 1, embed_dim).
        """
        if y.ndim != 2:
            raise ValueError(f"expected y of shape (N, U), got {tuple(y.shape)}")
        if y.is_floating_point() or y.is_complex():
            raise ValueError(f"y must hold integer token ids, got {y.dtype}")
        if not need_pad and y.size(1) != self.context_size:
            raise ValueError(f"with need_pad=False, y must have context_size={self.context_size} columns")
        y = y.long()
        out = self.embedding(y.clamp(min=0)) * (y >= 0).unsqueeze(-1)
        if self.conv is not None and not need_pad:
            # One output position: the depthwise convolution is a weighted sum over the
            # context, and as such ~20x cheaper than conv1d's call on a CPU for the few
            # rows a search step has (conv1d is most of modified beam search's time).
            out = (out * self.conv.weight[:, 0, :].t()).sum(dim=1, keepdim=True)  # (N, 1, D)
        elif self.conv is not None:
            out = out.transpose(1, 2)  # (N, D, U)
            if need_pad:
                out = F.pad(out, (self.context_size - 1, 0))
            out = self.conv(out).transpose(1, 2)
        return F.relu(out)
