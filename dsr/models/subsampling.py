"""Convolutional front end that reduces the frame rate by 4 before the Conformer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import torch
from torch import nn


class Conv2dSubsampling(nn.Module):
    """Two stride-2 ``Conv2d`` layers (each followed by SiLU) and a linear projection.

    This is the ESPnet/icefall front end: a (T, F) feature map becomes a
    ((T - 1) // 2 - 1) // 2 frame sequence.  The convolutions use no padding,
    so every valid output frame is computed from valid input frames only; padding
    after an utterance's end therefore never changes its outputs.

    Args:
        in_dim: number of input feature bins F (e.g. 80 fbank bins).
        out_dim: dimension of each output frame.
        channels: output channels of the first and the second convolution.  The
            second convolution costs ``channels[0] * channels[1]`` multiply-adds per
            position and dominates the front end, so a narrow first layer (as icefall's
            8/32/128) keeps it cheap on CPU.
    """

    #: shortest input (in frames) that still yields one output frame.
    min_input_length: int = 7

    def __init__(self, in_dim: int, out_dim: int, channels: Sequence[int] = (16, 64)) -> None:
        super().__init__()
        if in_dim < self.min_input_length:
            raise ValueError(f"in_dim must be >= {self.min_input_length} (got {in_dim})")
        if out_dim <= 0:
            raise ValueError(f"out_dim must be positive (got {out_dim})")
        if len(channels) != 2 or min(channels) <= 0:
            raise ValueError(f"channels must be two positive ints (got {channels})")
        c1, c2 = channels
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, stride=2),
            nn.SiLU(),
            nn.Conv2d(c1, c2, kernel_size=3, stride=2),
            nn.SiLU(),
        )
        # The frequency axis is reduced by the same formula as time.
        self.out = nn.Linear(c2 * self.output_lengths(in_dim), out_dim)
        # Unit-scale output: without it the subsampled features enter the residual stream
        # ~10x smaller than what the first blocks add, and training settles on a label prior
        # that ignores the audio (ESPnet scales by sqrt(d_model) for the same reason).
        self.out_norm = nn.LayerNorm(out_dim)

    @overload
    @staticmethod
    def output_lengths(lengths: int) -> int: ...

    @overload
    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor: ...

    @staticmethod
    def output_lengths(lengths: torch.Tensor | int) -> torch.Tensor | int:
        """Number of output frames for ``lengths`` input frames: ``((L - 1) // 2 - 1) // 2``.

        Works on Python ints and on integer tensors of any shape.
        """
        return ((lengths - 1) // 2 - 1) // 2

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Subsample a padded batch.

        Args:
            x: (N, T, in_dim) features, T >= 7.
            lengths: (N,) integer number of valid frames of each utterance, each in [7, T].

        Returns:
            (N, T', out_dim) output with T' = ``output_lengths(T)``, and
            (N,) output lengths ``output_lengths(lengths)``.
        """
        if x.ndim != 3 or x.size(-1) != self.in_dim:
            raise ValueError(f"expected x of shape (N, T, {self.in_dim}), got {tuple(x.shape)}")
        if lengths.shape != (x.size(0),):
            raise ValueError(f"expected lengths of shape ({x.size(0)},), got {tuple(lengths.shape)}")
        if lengths.is_floating_point() or lengths.is_complex():
            raise ValueError(f"lengths must be an integer tensor, got {lengths.dtype}")
        lengths = lengths.to(x.device)  # callers often keep lengths on the CPU
        t = x.size(1)
        # Both bounds in a single host sync (matters on CUDA).
        if bool(((lengths < self.min_input_length) | (lengths > t)).any()):
            raise ValueError(
                f"every length must be in [{self.min_input_length}, T={t}] "
                f"(4x subsampling needs at least {self.min_input_length} frames); got {lengths.tolist()}"
            )
        y = self.conv(x.unsqueeze(1))  # (N, C, T', F')
        n, c, t_out, f_out = y.shape
        y = self.out_norm(self.out(y.transpose(1, 2).reshape(n, t_out, c * f_out)))
        return y, self.output_lengths(lengths)
