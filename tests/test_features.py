import numpy as np
import pytest
import soundfile as sf
import torch

from dsr.errors import DsrUserError
from dsr.features.audio import load_audio_mono, speed_perturb
from dsr.features.fbank import FbankConfig, compute_fbank


def test_fbank_matches_lhotse_kaldi_fbank():
    from lhotse.features.kaldi.layers import Wav2LogFilterBank

    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32)
    cfg = FbankConfig()
    ours = compute_fbank(x, cfg)
    ref = Wav2LogFilterBank(
        sampling_rate=16000,
        num_filters=80,
        snip_edges=False,
        dither=0.0,
        low_freq=cfg.low_freq,
        high_freq=cfg.high_freq,
    )(torch.from_numpy(x)[None])[0].numpy()
    assert ours.shape == ref.shape == (200, 80)
    assert np.abs(ours - ref).max() < 2e-3


def test_fbank_rejects_multichannel():
    with pytest.raises(ValueError):
        compute_fbank(np.zeros((2, 100), dtype=np.float32))


def test_stereo_44k_is_downmixed_and_resampled(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, sr)
    mono = load_audio_mono(path, 16000)
    assert mono.ndim == 1 and abs(len(mono) - 16000) <= 1
    # Downmix halves the amplitude; the resampled tone keeps its frequency.
    assert abs(np.abs(mono).max() - 0.25) < 0.01
    spectrum = np.abs(np.fft.rfft(mono))
    assert abs(np.argmax(spectrum) * 16000 / len(mono) - 440) < 2


def test_missing_and_corrupt_audio_name_the_file(tmp_path):
    with pytest.raises(DsrUserError, match="nope.wav"):
        load_audio_mono(tmp_path / "nope.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF garbage that is not audio")
    with pytest.raises(DsrUserError, match="bad.wav"):
        load_audio_mono(bad)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_changes_length(factor):
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    y = speed_perturb(x, 16000, factor)
    assert abs(len(y) - 16000 / factor) <= 1
