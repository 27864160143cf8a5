import pytest
import torch

from dsr.losses.ctc import ctc_loss


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(3, 12, 6, generator=g).log_softmax(-1)
    lengths = torch.tensor([12, 9, 5])
    targets = [[1, 2, 3], [4, 4], [5]]
    return log_probs, lengths, targets


def test_matches_torch_ctc_loss_for_list_and_concatenated_targets():
    log_probs, lengths, targets = _inputs()
    flat = torch.tensor([t for seq in targets for t in seq])
    tlens = torch.tensor([len(t) for t in targets])
    ref = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), flat, lengths, tlens, blank=0, reduction="sum")
    assert torch.allclose(ctc_loss(log_probs, lengths, targets, blank=0, reduction="sum"), ref)
    assert torch.allclose(ctc_loss(log_probs, lengths, flat, tlens, blank=0, reduction="sum"), ref)


def test_impossible_alignment_is_zeroed_not_inf():
    # Two identical labels need a blank between them: 3 frames cannot hold "4 4 4".
    log_probs = torch.randn(1, 3, 6).log_softmax(-1).requires_grad_()
    loss = ctc_loss(log_probs, torch.tensor([3]), [[4, 4, 4]], blank=0, reduction="sum")
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(log_probs.grad).all()


def test_half_precision_inputs_are_computed_in_fp32():
    log_probs, lengths, targets = _inputs()
    full = ctc_loss(log_probs, lengths, targets, reduction="sum")
    half = ctc_loss(log_probs.to(torch.bfloat16), lengths, targets, reduction="sum")
    assert half.dtype == torch.float32
    assert torch.allclose(full, half, rtol=2e-2)


def test_bad_arguments():
    log_probs, lengths, targets = _inputs()
    with pytest.raises(ValueError):
        ctc_loss(log_probs[0], lengths, targets)
    with pytest.raises(ValueError):
        ctc_loss(log_probs, lengths, targets, reduction="avg")
