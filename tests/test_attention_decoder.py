"""The attention decoder: shapes, masking (padding, causality), label smoothing, scoring."""

from __future__ import annotations

import math

import pytest
import torch

from dsr.losses.label_smoothing import label_smoothing_loss
from dsr.models.attention_decoder import IGNORE_ID, AttentionDecoder

torch.set_num_threads(1)

V, ENC = 11, 24


def make_decoder(**kw) -> AttentionDecoder:
    torch.manual_seed(0)
    args = dict(
        vocab_size=V, encoder_dim=ENC, d_model=16, num_layers=2, num_heads=4, ffn_dim=32, dropout=0.1, sos_eos_id=1
    )
    args.update(kw)
    return AttentionDecoder(**args).eval()


def test_shapes_and_inputs() -> None:
    dec = make_decoder()
    tokens_in, targets, lens = dec.make_inputs([[5, 6, 7], [], [9]], torch.device("cpu"))
    assert tokens_in.tolist() == [[1, 5, 6, 7], [1, 1, 1, 1], [1, 9, 1, 1]]
    assert targets.tolist() == [[5, 6, 7, 1], [1, -1, -1, -1], [9, 1, -1, -1]]
    assert lens.tolist() == [4, 1, 2]
    logits = dec(torch.randn(3, 9, ENC), torch.tensor([9, 4, 7]), tokens_in, lens)
    assert logits.shape == (3, 4, V) and torch.isfinite(logits).all()


def test_padding_does_not_change_outputs() -> None:
    """Extra padded tokens and encoder frames (with any values) leave valid outputs unchanged."""
    dec = make_decoder()
    g = torch.Generator().manual_seed(1)
    enc = torch.randn(1, 6, ENC, generator=g)
    tokens = torch.tensor([[1, 4, 8, 3]])
    alone = dec(enc, torch.tensor([6]), tokens, torch.tensor([4]))
    padded_enc = torch.cat([enc, 100 * torch.randn(1, 5, ENC, generator=g)], dim=1)
    padded_tokens = torch.cat([tokens, torch.tensor([[7, 7, 2]])], dim=1)
    # In a batch with a longer utterance, so that both masks are really used.
    other_enc = torch.randn(1, 11, ENC, generator=g)
    batch = dec(
        torch.cat([padded_enc, other_enc]),
        torch.tensor([6, 11]),
        torch.cat([padded_tokens, torch.tensor([[1, 2, 3, 4, 5, 6, 7]])]),
        torch.tensor([4, 7]),
    )
    torch.testing.assert_close(batch[0, :4], alone[0], rtol=1e-5, atol=1e-5)


def test_causal_future_tokens_do_not_change_earlier_positions() -> None:
    dec = make_decoder()
    enc = torch.randn(1, 8, ENC)
    a = dec(enc, torch.tensor([8]), torch.tensor([[1, 4, 8, 3, 5]]), torch.tensor([5]))
    b = dec(enc, torch.tensor([8]), torch.tensor([[1, 4, 8, 9, 2]]), torch.tensor([5]))
    torch.testing.assert_close(a[0, :3], b[0, :3], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[0, 3:], b[0, 3:])  # later positions do see the change
    # ... and the encoder output is attended to.
    c = dec(enc + 1.0, torch.tensor([8]), torch.tensor([[1, 4, 8, 3, 5]]), torch.tensor([5]))
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_loss_matches_reference(smoothing: float) -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, V, generator=g)
    targets = torch.tensor([[3, 4, 1, IGNORE_ID, IGNORE_ID], [2, 2, 9, 7, 1]])
    # Reference: cross entropy against the smoothed one-hot distribution, by hand.
    log_probs = logits.log_softmax(-1)
    ref = 0.0
    for n in range(2):
        for pos in range(5):
            y = int(targets[n, pos])
            if y == IGNORE_ID:
                continue
            dist = torch.full((V,), smoothing / V)
            dist[y] += 1.0 - smoothing
            ref += float(-(dist * log_probs[n, pos]).sum())
    got = label_smoothing_loss(logits, targets, smoothing, ignore_index=IGNORE_ID)
    assert got.dtype == torch.float32
    assert math.isclose(float(got), ref, rel_tol=1e-5)
    per_pos = label_smoothing_loss(logits, targets, smoothing, ignore_index=IGNORE_ID, reduction="none")
    assert per_pos.shape == (2, 5) and per_pos[0, 3:].eq(0).all()
    assert math.isclose(
        float(label_smoothing_loss(logits, targets, smoothing, reduction="mean")), ref / 8, rel_tol=1e-5
    )


def test_loss_and_score_agree_and_batching_does_not_change_scores() -> None:
    dec = make_decoder()
    enc = torch.randn(2, 10, ENC)
    lens = torch.tensor([10, 6])
    hyps = [[[3, 4, 5], [3, 4], []], [[8]]]
    scores = dec.score(enc, lens, hyps)
    assert [len(s) for s in scores] == [3, 1]
    # Without smoothing, the loss is minus the summed score of the targets (eos included).
    with torch.no_grad():
        loss = dec.loss(enc[:1], lens[:1], [[3, 4, 5]], label_smoothing=0.0)
    assert math.isclose(-float(loss), scores[0][0], rel_tol=1e-5)
    # Each hypothesis scored alone gives the same number as in the batch.
    alone = dec.score(enc[1:], lens[1:], [[[8]]])
    assert math.isclose(alone[0][0], scores[1][0], rel_tol=1e-5, abs_tol=1e-5)
    # The empty hypothesis is log p(eos | sos).
    with torch.no_grad():
        logits = dec(enc[:1], lens[:1], torch.tensor([[1]]), torch.tensor([1]))
    assert math.isclose(scores[0][2], float(logits.log_softmax(-1)[0, 0, 1]), rel_tol=1e-5)
    assert dec.score(enc, lens, [[], []]) == [[], []]


def test_loss_backward_reaches_encoder_output() -> None:
    dec = make_decoder().train()
    enc = torch.randn(2, 7, ENC, requires_grad=True)
    loss = dec.loss(enc, torch.tensor([7, 5]), [[2, 3], [4, 5, 6]])
    loss.backward()
    assert torch.isfinite(loss) and enc.grad is not None
    assert enc.grad[1, 5:].abs().sum() == 0  # padded frames get no gradient
    assert enc.grad[1, :5].abs().sum() > 0


@pytest.mark.parametrize(
    "kw",
    [
        dict(d_model=18, num_heads=4),
        dict(num_layers=0),
        dict(dropout=1.0),
        dict(sos_eos_id=V),
        dict(d_model=15, num_heads=5),
    ],
)
def test_constructor_errors(kw: dict) -> None:
    with pytest.raises(ValueError):
        make_decoder(**kw)


def test_argument_errors() -> None:
    dec = make_decoder()
    with pytest.raises(ValueError, match="encoder_out"):
        dec(torch.randn(1, 5, ENC + 1), torch.tensor([5]), torch.tensor([[1]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="token lists"):
        dec.loss(torch.randn(2, 5, ENC), torch.tensor([5, 5]), [[2]])
    with pytest.raises(ValueError, match="ids in"):
        dec.score(torch.randn(1, 5, ENC), torch.tensor([5]), [[[V]]])
    with pytest.raises(ValueError, match="smoothing"):
        label_smoothing_loss(torch.randn(1, 2, V), torch.zeros(1, 2, dtype=torch.long), 1.0)
