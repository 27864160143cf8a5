"""Training losses: pruned RNN-T (k2 / fast_rnnt compatible API), CTC, label-smoothed
cross entropy (attention decoder) and distillation KL.

The RNN-T functions here are dsr's own pure-PyTorch implementation; use
:func:`get_rnnt_backend` to swap in ``fast_rnnt`` or ``k2`` with the same API.
"""

from dsr.losses.backend import RNNT_BACKENDS, get_rnnt_backend
from dsr.losses.ctc import ctc_loss
from dsr.losses.distill import ctc_distillation_loss, kl_divergence, pruned_joiner_distillation_loss
from dsr.losses.label_smoothing import label_smoothing_loss
from dsr.losses.mutual_information import mutual_information_recursion
from dsr.losses.rnnt import (
    do_rnnt_pruning,
    get_rnnt_logprobs,
    get_rnnt_logprobs_joint,
    get_rnnt_logprobs_pruned,
    get_rnnt_logprobs_smoothed,
    get_rnnt_prune_ranges,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    rnnt_loss_smoothed,
)

__all__ = [
    "RNNT_BACKENDS",
    "ctc_distillation_loss",
    "ctc_loss",
    "do_rnnt_pruning",
    "get_rnnt_backend",
    "get_rnnt_logprobs",
    "get_rnnt_logprobs_joint",
    "get_rnnt_logprobs_pruned",
    "get_rnnt_logprobs_smoothed",
    "get_rnnt_prune_ranges",
    "kl_divergence",
    "label_smoothing_loss",
    "mutual_information_recursion",
    "pruned_joiner_distillation_loss",
    "rnnt_loss",
    "rnnt_loss_pruned",
    "rnnt_loss_simple",
    "rnnt_loss_smoothed",
]
