"""Whisper's log-mel front end (dsr.features.whisper_fbank) and front-end settings that travel with cuts.

References: faster-whisper's ``FeatureExtractor`` (test-only, optional) and transformers'
``mel_filter_bank``; both skip with a reason when absent, as does real speech in ../shared/data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from corpus_fixtures import audio
from lhotse import Features, MonoCut, Recording, RecordingSet, SupervisionSegment, SupervisionSet, load_manifest
from typer.testing import CliRunner

from dsr.cli.main import app
from dsr.data.batches import cut_features
from dsr.errors import DsrUserError
from dsr.features.fbank import FbankConfig, compute_fbank
from dsr.features.frontend import (
    check_cuts_frontend,
    check_frontend_match,
    compute_frontend,
    frontend_from_dict,
    frontend_of_cuts,
    frontend_to_dict,
    make_frontend,
)
from dsr.features.whisper_fbank import WhisperFbankConfig, compute_whisper_fbank, mel_filters, whisper_num_frames
from dsr.training.feature_augment import MelFrequencyWarp, RandomGain
from dsr.utils import done_marker

SHARED = Path(__file__).parents[1] / "../shared/data"
ARCTIC_IDS = ("arctic_a0001_1", "arctic_a0100_1", "arctic_a0252_1")
WHISPER_PAD = 30 * 16000  # samples faster-whisper / openai-whisper append before the STFT


def _arctic() -> list[np.ndarray]:
    folder = SHARED / "arctic_cathy" / "audio"
    if not folder.is_dir():
        pytest.skip(f"shared test data {folder} is absent (expected ../shared/data/arctic_cathy next to the repo)")
    files = [folder / f"{u}.flac" for u in ARCTIC_IDS]
    files = [f for f in files if f.is_file()] or sorted(folder.glob("*.flac"))[:3]
    out = []
    for f in files:
        x, sr = sf.read(f, dtype="float32")
        assert sr == 16000 and x.ndim == 1
        out.append(x)
    return out


def _faster_whisper():
    try:  # the package imports ctranslate2, onnxruntime and av: a broken install is an ImportError too
        from faster_whisper.feature_extractor import FeatureExtractor
    except ImportError as e:
        pytest.skip(
            f"faster-whisper (the reference; whisper extra: bash tools/setup.sh --whisper) does not import: {e}"
        )
    return FeatureExtractor


# ---------------------------------------------------------------- the front end itself


@pytest.mark.parametrize("num_mel_bins", [80, 128])
def test_mel_filters_equal_slaney_references(num_mel_bins: int) -> None:
    audio_utils = pytest.importorskip("transformers.audio_utils", reason="transformers is not installed")
    ours = mel_filters(16000, 400, num_mel_bins)
    assert ours.shape == (num_mel_bins, 201)
    hf = audio_utils.mel_filter_bank(
        num_frequency_bins=201,
        num_mel_filters=num_mel_bins,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=16000,
        norm="slaney",
        mel_scale="slaney",
    ).T
    assert np.abs(ours - hf).max() < 1e-6
    try:
        from faster_whisper.feature_extractor import FeatureExtractor
    except ImportError:
        return
    assert np.abs(ours - FeatureExtractor.get_mel_filters(16000, 400, num_mel_bins)).max() < 1e-6


@pytest.mark.parametrize("num_mel_bins", [80, 128])
def test_padded_equals_faster_whisper_on_arctic(num_mel_bins: int) -> None:
    FeatureExtractor = _faster_whisper()
    fe = FeatureExtractor(feature_size=num_mel_bins)
    cfg = WhisperFbankConfig(num_mel_bins=num_mel_bins)
    for x in _arctic()[: 3 if num_mel_bins == 80 else 1]:
        # padding=480000 appends 30 s of zeros (faster-whisper >= 1.1 counts samples; 1.0's padding=True did the same).
        ref = fe(x, padding=WHISPER_PAD).T
        ours = compute_whisper_fbank(x, cfg, pad_to_seconds=30.0)
        assert ours.shape == ref.shape == ((len(x) + WHISPER_PAD) // 160, num_mel_bins)
        assert ours.dtype == np.float32
        assert np.abs(ours - ref).max() < 1e-4


def test_unpadded_equals_first_frames_of_faster_whisper_padded_on_arctic() -> None:
    fe = _faster_whisper()(feature_size=80)
    for x in _arctic():
        ours = compute_whisper_fbank(x)
        assert ours.shape == (whisper_num_frames(len(x)), 80) == ((len(x) + 80) // 160, 80)
        ref = fe(x, padding=WHISPER_PAD).T
        assert np.abs(ours - ref[: len(ours)]).max() < 1e-4


@pytest.mark.parametrize("num_samples", [16000, 16079, 16080, 16159])
def test_unpadded_end_frames_see_zeros_and_the_padded_max(num_samples: int) -> None:
    """A burst in the last 3 ms is the loudest sound: the last frames and the clamp depend on the padding."""
    rng = np.random.default_rng(1)
    x = (0.001 * rng.standard_normal(num_samples)).astype(np.float32)
    x[-48:] += 0.9 * np.sin(2 * np.pi * 3000 * np.arange(48) / 16000).astype(np.float32)
    ours = compute_whisper_fbank(x)
    padded = compute_whisper_fbank(x, pad_to_seconds=30.0)
    assert ours.shape == ((num_samples + 80) // 160, 80)
    assert np.abs(ours - padded[: len(ours)]).max() < 1e-5
    # Whisper's STFT on the bare utterance would reflect the burst into the last frames instead.
    bare = (
        torch.stft(
            torch.from_numpy(x).double(),
            400,
            160,
            window=torch.hann_window(400, dtype=torch.float64),
            return_complex=True,
        )[:, :-1].abs()
        ** 2
    )
    bare_log = (torch.from_numpy(mel_filters().copy()) @ bare).clamp(min=1e-10).log10()
    bare_log = (torch.maximum(bare_log, bare_log.max() - 8) + 4) / 4
    n = bare_log.shape[1]
    assert np.abs(bare_log.T.numpy()[:n] - padded[:n]).max() > 0.01


def test_whisper_config_and_shapes() -> None:
    x = np.random.default_rng(0).standard_normal(16000 + 37).astype(np.float32) * 0.1
    assert compute_whisper_fbank(x, WhisperFbankConfig(num_mel_bins=128)).shape == (100, 128)
    assert compute_whisper_fbank(x[:100]).shape == (1, 80)
    assert compute_whisper_fbank(x[:50]).shape == (0, 80)
    assert WhisperFbankConfig().frame_shift == 0.01
    with pytest.raises(ValueError, match="80 or 128"):
        WhisperFbankConfig(num_mel_bins=64)
    with pytest.raises(ValueError):
        compute_whisper_fbank(np.zeros((2, 400), dtype=np.float32))
    with pytest.raises(ValueError):
        compute_whisper_fbank(x, pad_to_seconds=-1.0)


# ---------------------------------------------------------------- settings that travel


def test_frontend_dicts_round_trip() -> None:
    for cfg in (
        FbankConfig(),
        FbankConfig(num_mel_bins=40),
        WhisperFbankConfig(),
        WhisperFbankConfig(num_mel_bins=128),
    ):
        d = frontend_to_dict(cfg)
        assert d["type"] in ("kaldi-fbank", "whisper-fbank")
        assert frontend_from_dict(json.loads(json.dumps(d))) == cfg
    assert frontend_to_dict(WhisperFbankConfig())["type"] == "whisper-fbank"
    assert frontend_from_dict(FbankConfig().to_dict()) == FbankConfig()  # no "type": kaldi-fbank
    with pytest.raises(ValueError, match="unknown front end"):
        frontend_from_dict({"type": "mfcc"})
    with pytest.raises(ValueError, match="hop"):
        frontend_from_dict({"type": "kaldi-fbank", "hop": 3})
    with pytest.raises(ValueError):
        make_frontend("whisper-fbank", 100)
    x = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    assert np.array_equal(compute_frontend(x, FbankConfig()), compute_fbank(x))
    assert np.array_equal(compute_frontend(x, WhisperFbankConfig()), compute_whisper_fbank(x))


def test_check_frontend_match_names_both_sides_on_one_line() -> None:
    whisper, kaldi = frontend_to_dict(WhisperFbankConfig()), frontend_to_dict(FbankConfig())
    check_frontend_match(whisper, dict(whisper), "the model in exp/w", "features of x.jsonl.gz")
    check_frontend_match(kaldi, FbankConfig().to_dict(), "the model in exp/w", "features of x.jsonl.gz")  # legacy dict
    with pytest.raises(DsrUserError) as e:
        check_frontend_match(whisper, kaldi, "the model in exp/w", "features of data/fbank/x_cuts_test.jsonl.gz")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == (
        "features of data/fbank/x_cuts_test.jsonl.gz are kaldi-fbank (num_mel_bins 80) but the model in "
        "exp/w was trained on whisper-fbank (num_mel_bins 80); recompute them with: "
        "dsr features --feature-type whisper-fbank"
    )
    with pytest.raises(
        DsrUserError,
        match=r"whisper-fbank \(num_mel_bins 80\) but .* whisper-fbank \(num_mel_bins 128\)"
        r".*--feature-type whisper-fbank --num-mel-bins 128",
    ):
        check_frontend_match(
            frontend_to_dict(WhisperFbankConfig(num_mel_bins=128)),
            whisper,
            "the model in exp/w",
            "features of c.jsonl.gz",
        )
    with pytest.raises(DsrUserError, match=r"high_freq -400.0.*high_freq -200.0"):
        check_frontend_match(frontend_to_dict(FbankConfig(high_freq=-200.0)), kaldi, "the model in exp/k", "features")


def test_frontend_of_cuts_reads_the_first_cut_and_defaults_old_cuts_to_kaldi() -> None:
    feats = Features(
        type="kaldi-fbank",
        num_frames=100,
        num_features=80,
        frame_shift=0.01,
        sampling_rate=16000,
        start=0.0,
        duration=1.0,
        storage_type="lilcom_chunky",
        storage_path="x.lca",
        storage_key="0",
    )
    old = MonoCut(id="a", start=0.0, duration=1.0, channel=0, features=feats)
    new = MonoCut(
        id="b",
        start=0.0,
        duration=1.0,
        channel=0,
        features=feats,
        custom={"frontend": frontend_to_dict(WhisperFbankConfig(num_mel_bins=128))},
    )
    assert frontend_of_cuts([old, new]) == frontend_to_dict(FbankConfig())
    assert frontend_of_cuts([new, old]) == frontend_to_dict(WhisperFbankConfig(num_mel_bins=128))
    assert frontend_of_cuts([]) is None
    no_features = MonoCut(id="c", start=0.0, duration=1.0, channel=0)
    assert frontend_of_cuts([no_features]) is None
    # The wiring hook: a checkpoint without a recorded front end (None) is kaldi-fbank, like old cuts.
    check_cuts_frontend([old], None, "old.jsonl.gz", "the model in exp/k")
    check_cuts_frontend([no_features], frontend_to_dict(WhisperFbankConfig()), "audio.jsonl.gz", "the model in exp/w")
    with pytest.raises(
        DsrUserError,
        match=r"^features of new.jsonl.gz are whisper-fbank \(num_mel_bins 128\) but "
        r"the model in exp/k was trained on kaldi-fbank \(num_mel_bins 80\)",
    ):
        check_cuts_frontend([new], None, "new.jsonl.gz", "the model in exp/k")


# ---------------------------------------------------------------- dsr features and the other users


def _tiny_manifests(root: Path) -> Path:
    """root/m/tiny_{recordings,supervisions}_test.jsonl.gz: three utterances of 1.0 to 1.3 s."""
    manifests = root / "m"
    manifests.mkdir()
    recs, sups = [], []
    for i, seconds in enumerate((1.0, 1.2345, 1.3)):
        rec = Recording.from_file(audio(root / "wav" / f"u{i}.wav", seconds=seconds, seed=i), recording_id=f"u{i}")
        recs.append(rec)
        sups.append(SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0.0, duration=rec.duration, text="a b"))
    RecordingSet.from_recordings(recs).to_file(manifests / "tiny_recordings_test.jsonl.gz")
    SupervisionSet.from_segments(sups).to_file(manifests / "tiny_supervisions_test.jsonl.gz")
    return manifests


def _features(manifests: Path, out: Path, *extra: str):
    args = [
        "features",
        "--corpus",
        "tiny",
        "--split",
        "test",
        "--manifest-dir",
        str(manifests),
        "--out-dir",
        str(out),
        "-j",
        "1",
        *extra,
    ]
    return CliRunner().invoke(app, args)


def test_cli_whisper_fbank_writes_cuts_that_carry_their_front_end(tmp_path: Path) -> None:
    manifests, out = _tiny_manifests(tmp_path), tmp_path / "f"
    res = _features(manifests, out, "--feature-type", "whisper-fbank")
    assert res.exit_code == 0, res.output
    cuts = load_manifest(out / "tiny_cuts_test.jsonl.gz")
    assert len(cuts) == 3
    for cut in cuts:
        assert cut.features.type == "whisper-fbank"
        assert frontend_from_dict(cut.custom["frontend"]) == WhisperFbankConfig()
        x, _ = sf.read(tmp_path / "wav" / f"{cut.id}.wav", dtype="float32")
        feats = cut.load_features()
        assert feats.shape == (cut.num_frames, 80) == (whisper_num_frames(len(x)), 80)
        # lilcom stores multiples of 2^-8 for whisper-fbank (lhotse's default 2^-5 would be off by 0.016).
        assert np.abs(feats - compute_whisper_fbank(x)).max() < 0.0025
    assert frontend_of_cuts(cuts) == frontend_to_dict(WhisperFbankConfig())
    marker = json.loads(done_marker(out, "features-tiny-test").read_text())
    assert marker["frontend"] == frontend_to_dict(WhisperFbankConfig())


def test_cli_recomputes_when_the_front_end_changes(tmp_path: Path) -> None:
    manifests, out = _tiny_manifests(tmp_path), tmp_path / "f"
    cuts_file = out / "tiny_cuts_test.jsonl.gz"
    assert _features(manifests, out, "--feature-type", "whisper-fbank").exit_code == 0
    res = _features(manifests, out)  # kaldi-fbank, the default
    assert res.exit_code == 0, res.output
    assert "skip" not in res.output
    cuts = load_manifest(cuts_file)
    assert {c.features.type for c in cuts} == {"kaldi-fbank"}
    assert frontend_of_cuts(cuts) == frontend_to_dict(FbankConfig())
    res = _features(manifests, out)
    assert res.exit_code == 0 and "skip" in res.output  # same settings: done
    res = _features(manifests, out, "--feature-type", "whisper-fbank", "--num-mel-bins", "128")
    assert res.exit_code == 0 and "skip" not in res.output
    assert load_manifest(cuts_file)[0].load_features().shape[1] == 128
    # A marker from before front ends were recorded means kaldi-fbank.
    marker = done_marker(out, "features-tiny-test")
    marker.write_text(json.dumps({"summary": "old"}))
    assert "skip" in _features(manifests, out).output
    assert "skip" not in _features(manifests, out, "--feature-type", "whisper-fbank").output


def test_cli_rejects_bad_front_end_options(tmp_path: Path) -> None:
    manifests, out = _tiny_manifests(tmp_path), tmp_path / "f"
    for extra, match in (
        (("--feature-type", "mfcc"), "--feature-type"),
        (
            ("--feature-type", "whisper-fbank", "--num-mel-bins", "100"),
            "--num-mel-bins: whisper-fbank num_mel_bins must be 80 or 128 (got 100)",
        ),
    ):
        res = _features(manifests, out, *extra)
        assert res.exit_code != 0
        assert isinstance(res.exception, DsrUserError) and match in str(res.exception)
    assert not (out / "tiny_cuts_test.jsonl.gz").exists()


def test_decode_computes_recording_only_cuts_with_the_given_front_end(tmp_path: Path) -> None:
    rec = Recording.from_file(audio(tmp_path / "r.wav", seconds=1.1, seed=4), recording_id="r")
    cut = MonoCut(id="r", start=0.0, duration=rec.duration, channel=0, recording=rec)
    x, _ = sf.read(tmp_path / "r.wav", dtype="float32")
    whisper = cut_features(cut, WhisperFbankConfig()).numpy()
    assert np.allclose(whisper, compute_whisper_fbank(x), atol=1e-6)
    assert np.allclose(cut_features(cut).numpy(), compute_fbank(x), atol=1e-6)  # the default stays kaldi-fbank


def test_gain_and_warp_follow_the_whisper_scale() -> None:
    t = np.arange(16000) / 16000
    rng = np.random.default_rng(3)
    x = (0.1 * np.sin(2 * np.pi * 1000 * t) + 0.001 * rng.standard_normal(t.size)).astype(np.float32)
    cfg = WhisperFbankConfig()
    base = torch.from_numpy(compute_whisper_fbank(x, cfg))[None]
    # +6 dB of recording level == RandomGain's shift for 6 dB on this scale.
    louder = torch.from_numpy(compute_whisper_fbank(x * 10 ** (6 / 20), cfg))[None]
    gain = RandomGain(6.0, fbank=cfg)
    assert torch.allclose(louder - base, torch.full_like(base, 6 * gain.per_db), atol=1e-4)
    # Warping by 1.2 moves the 1 kHz tone's peak bin to the bin centred nearest 1.2 kHz.
    warp = MelFrequencyWarp(0.3, fbank=cfg)
    assert torch.equal(warp.warp(base, torch.tensor([1.0])), base)
    peak = int(base[0, 50].argmax())
    warped_peak = int(warp.warp(base, torch.tensor([1.2]))[0, 50].argmax())
    target = int(np.argmin(np.abs(warp.centre_hz.numpy() - 1.2 * warp.centre_hz[peak].item())))
    assert warped_peak != peak and abs(warped_peak - target) <= 1
