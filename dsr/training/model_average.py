"""Online model averaging (icefall's ``model_avg`` / ``--use-averaged-model``).

The decoder's side, :func:`dsr.models.checkpoint.average_between`, reads what this writes.

Every ``period`` training steps the trainer folds the current weights into a
running mean of all weights sampled so far, kept in float64 and saved with each
checkpoint.  Two checkpoints' running means then give the exact mean of every
sampled model *between* them::

    mean(start, end] = (n_end * avg_end - n_start * avg_start) / (n_end - n_start)

with ``n`` the number of samples in each mean.  Averaging the weights visited in
the last epoch(s) this way is far smoother than averaging a few epoch-end
checkpoints, and it costs one float64 copy of the weights.  On the embedded
corpus it lowered the transducer's greedy WER by several points (docs/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dsr.errors import OptionError


def _float_items(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if v.is_floating_point()}


class ModelAverager:
    """Running mean of a model's floating-point weights and buffers, sampled every ``period`` steps.

    Args:
        model: the model being trained (its state dict is read, never written).
        period: sample every ``period`` global steps (icefall's ``average_period``).
    """

    def __init__(self, model: nn.Module, period: int) -> None:
        if period < 1:
            raise ValueError(f"period must be >= 1 (got {period})")
        self.period = period
        self.num_averaged = 0
        # On the CPU: a float64 copy of a large model would crowd the GPU for no speed gain
        # (the update runs once every ``period`` steps).
        self.weights = {
            k: torch.zeros_like(v, dtype=torch.float64, device="cpu")
            for k, v in _float_items(model.state_dict()).items()
        }

    @torch.no_grad()
    def update(self, model: nn.Module, global_step: int) -> None:
        """Call after every optimiser step; samples the model when ``global_step`` is a multiple of ``period``."""
        if global_step % self.period:
            return
        self.num_averaged += 1
        w = 1.0 / self.num_averaged
        for k, v in _float_items(model.state_dict()).items():
            avg = self.weights[k]
            avg.mul_(1.0 - w).add_(v.detach().to("cpu", torch.float64), alpha=w)

    def state_dict(self) -> dict[str, Any]:
        return {"period": self.period, "num_averaged": self.num_averaged, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["period"] != self.period:
            raise OptionError(
                f"the checkpoint's model average samples every {state['period']} steps, not {self.period}; "
                "resume with the same {average_period}"
            )
        if state["weights"].keys() != self.weights.keys():
            raise ValueError("the checkpoint's model average does not match this model's weights")
        self.num_averaged = int(state["num_averaged"])
        self.weights = {k: v.to("cpu", torch.float64) for k, v in state["weights"].items()}
