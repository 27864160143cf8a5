"""Random edge trimming cuts whole frames off the edges and keeps the supervision inside the cut."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsr.data.cuts import load_cuts
from dsr.training.cut_augment import RandomEdgeTrim, RandomEndpointTrim
from tests.tiny_corpus import write_feature_cuts

FRAMES = (40, 100, 25, 300)


def _cuts(tmp_path):
    return load_cuts(write_feature_cuts(tmp_path, [f"WORD {i}" for i in range(len(FRAMES))], FRAMES)).to_eager()


def test_trimmed_cuts_are_frame_aligned_windows_with_their_supervision(tmp_path):
    cuts = _cuts(tmp_path)
    trim = RandomEdgeTrim(max_seconds=0.2, p=1.0, min_keep=0.6)
    torch.manual_seed(0)
    seen_trimmed = 0
    for _ in range(20):
        for old, new in zip(cuts, trim(cuts)):
            assert new.id == old.id and new.supervisions[0].text == old.supervisions[0].text
            head = (new.start - old.start) / 0.01
            tail = (old.end - new.end) / 0.01
            assert abs(head - round(head)) < 1e-6 and abs(tail - round(tail)) < 1e-6
            assert 0 <= round(head) <= 20 and 0 <= round(tail) <= 20
            assert new.duration >= 0.6 * old.duration - 1e-9
            sup = new.supervisions[0]
            assert sup.start == 0 and abs(sup.duration - new.duration) < 1e-9
            assert new.load_features().shape[0] == new.num_frames
            seen_trimmed += new.duration < old.duration
    assert seen_trimmed > 50


def test_p_zero_and_draws_follow_torch_seed(tmp_path):
    cuts = _cuts(tmp_path)
    assert [c.duration for c in RandomEdgeTrim(0.2, p=0.0)(cuts)] == [c.duration for c in cuts]
    torch.manual_seed(5)
    a = [(c.start, c.duration) for c in RandomEdgeTrim(0.2)(cuts)]
    torch.manual_seed(5)
    b = [(c.start, c.duration) for c in RandomEdgeTrim(0.2)(cuts)]
    assert a == b


@pytest.mark.parametrize(
    "kwargs", [{"max_seconds": 0}, {"max_seconds": 0.1, "p": 1.5}, {"max_seconds": 0.1, "min_keep": 0}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        RandomEdgeTrim(**kwargs)


def test_endpoint_trim_cuts_the_quiet_edges_only(tmp_path):
    cuts = _cuts(tmp_path)
    cut = cuts[3]  # 300 frames
    # a quiet lead (-30 dB), a word, a -12 dB coda, a quiet tail (in natural-log power units)
    energy_db = np.full(300, -30.0)
    energy_db[60:200] = 0.0
    energy_db[200:240] = -12.0
    feats = np.repeat((energy_db * np.log(10) / 10 - np.log(80))[:, None], 80, axis=1).astype(np.float32)
    trim = RandomEndpointTrim(max_db=40, load_features=lambda c: feats, p=1.0, min_keep=0.1)
    assert np.allclose(trim.energy_db(cut), energy_db, atol=1e-4)
    torch.manual_seed(0)
    heads, tails = set(), set()
    for _ in range(50):
        new = trim.trim_cut(cut)
        heads.add(round((new.start - cut.start) / 0.01))
        tails.add(round((cut.end - new.end) / 0.01))
        assert new.supervisions[0].duration == pytest.approx(new.duration)
    # thresholds 20..40 dB: the -30 dB edges go only when theta < 30, the -12 dB coda never
    assert heads == {0, 60} and tails == {0, 60}
    # a low threshold (<= 12 dB) also takes the coda, unless min_keep stops it
    low = RandomEndpointTrim(max_db=10, load_features=lambda c: feats, p=1.0, min_keep=0.1)
    assert {round((cut.end - low.trim_cut(cut).end) / 0.01) for _ in range(20)} == {100}
    kept = RandomEndpointTrim(max_db=10, load_features=lambda c: feats, p=1.0, min_keep=0.8).trim_cut(cut)
    assert kept.duration == pytest.approx(0.8 * cut.duration, abs=0.011)


def test_endpoint_trim_measures_whisper_log_mel_as_power():
    """Whisper's (log10 P + 4) / 4 features give the same frame energies as natural-log FBANK."""
    import numpy as np

    from dsr.training.cut_augment import RandomEndpointTrim

    rng = np.random.default_rng(0)
    log_power = rng.normal(-10, 3, size=(20, 8))
    whisper = (log_power / np.log(10.0) + 4.0) / 4.0

    class FakeCut:
        id, start, duration = "c", 0.0, 0.2

    kaldi_db = RandomEndpointTrim(40, lambda c: log_power).energy_db(FakeCut())
    whisper_db = RandomEndpointTrim(40, lambda c: whisper, whisper_log_mel=True).energy_db(FakeCut())
    np.testing.assert_allclose(whisper_db, kaldi_db, atol=1e-4)
    assert not np.allclose(RandomEndpointTrim(40, lambda c: whisper).energy_db(FakeCut()), kaldi_db, atol=1e-2)
