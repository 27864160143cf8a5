import math

import pytest
import torch

from dsr.training.feature_augment import MelFrequencyWarp, RandomGain


def test_alpha_one_is_the_identity():
    warp = MelFrequencyWarp(0.1)
    x = torch.randn(3, 7, 80)
    assert torch.allclose(warp.warp(x, torch.ones(3)), x, atol=1e-5)


def test_a_formant_moves_by_alpha():
    """A peak at bin k moves to the bin whose centre frequency is alpha times bin k's."""
    warp = MelFrequencyWarp(0.2)
    k = 40
    x = torch.zeros(2, 1, 80)
    x[:, :, k] = 1.0
    alpha = torch.tensor([1.15, 1 / 1.15])
    y = warp.warp(x, alpha)
    for i, a in enumerate(alpha):
        expected = int(torch.argmin((warp.centre_hz - a * warp.centre_hz[k]).abs()))
        assert abs(int(y[i, 0].argmax()) - expected) <= 1
        assert int(y[i, 0].argmax()) != k


def test_random_warp_keeps_shape_padding_and_range():
    torch.manual_seed(0)
    warp = MelFrequencyWarp(0.1)
    x = torch.randn(4, 9, 80)
    x[1, 5:] = -23.0  # lhotse's feature padding value stays padding
    y = warp(x)
    assert y.shape == x.shape
    assert torch.allclose(y[1, 5:], x[1, 5:])
    assert y.min() >= x.min() - 1e-5 and y.max() <= x.max() + 1e-5  # interpolation, no new extremes
    assert not torch.allclose(y, x)
    assert torch.allclose(MelFrequencyWarp(0.1, p=0.0)(x), x)


@pytest.mark.parametrize("kwargs", [{"max_warp": 0.0}, {"max_warp": 0.6}, {"max_warp": 0.1, "p": 1.5}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        MelFrequencyWarp(**kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="features"):
        MelFrequencyWarp(0.1).warp(torch.zeros(2, 3, 40), torch.ones(2))
    with pytest.raises(ValueError, match="warp factors"):
        MelFrequencyWarp(0.1).warp(torch.zeros(2, 3, 80), torch.ones(3))


def test_random_gain_shifts_each_utterance_by_a_constant_within_range():
    torch.manual_seed(0)
    x = torch.randn(64, 5, 80)
    y = RandomGain(20.0)(x)
    shift = y - x
    assert torch.allclose(shift, shift[:, :1, :1].expand_as(shift), atol=1e-5)  # one constant per utterance
    bound = 20.0 * math.log(10.0) / 10.0
    assert shift.abs().max() <= bound + 1e-5 and shift.abs().max() > bound / 2
    assert shift[:, 0, 0].std() > 0.5  # utterances get different gains
    with pytest.raises(ValueError):
        RandomGain(0.0)
