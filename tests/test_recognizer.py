"""dsr.Recognizer, the Python API: loaded once; files, arrays and cuts manifests give what
``dsr transcribe`` / ``dsr decode`` give; token timestamps in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny_corpus import write_feature_cuts

from dsr.models import ModelConfig, build_model

torch.set_num_threads(1)
TEXTS = ["turn on the kitchen lights", "set a timer for five minutes", "what is the weather in paris"]
BPE_METHODS = (
    "greedy",
    "ctc-greedy",
    "modified-beam-search",
    "ctc-prefix-beam-search",
    "transducer-attention-rescoring",
)


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> dict[str, Path]:
    """A lang dir, a random-weight hybrid checkpoint (transducer, CTC, attention decoder), feature
    cuts and three noise files (one 8 kHz stereo)."""
    from dsr.lang.bpe import Tokenizer, train_bpe
    from dsr.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("recognizer")
    train_bpe(TEXTS * 30, root / "lang", vocab_size=40)
    config = ModelConfig(
        feature_dim=80,
        encoder_dim=32,
        num_encoder_layers=1,
        num_heads=4,
        ffn_dim=64,
        conv_kernel_size=5,
        subsampling_channels=(4, 8),
        decoder_dim=24,
        joiner_dim=40,
        vocab_size=Tokenizer(root / "lang").vocab_size,
        attention_decoder_layers=1,
        attention_decoder_dim=16,
        attention_decoder_heads=2,
        attention_decoder_ffn_dim=32,
    )
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():  # sharper heads emit a mix of blanks and tokens
        model.joiner.output_linear.weight.mul_(3.0)
        for m in model.ctc_output.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(3.0)
    save_checkpoint(root / "exp" / "epoch-1.pt", {"model_config": config.to_dict(), "model": model.state_dict()})
    cuts = write_feature_cuts(root, TEXTS, (150, 110, 80))
    rng = np.random.default_rng(0)
    files = []
    for i, (sr, channels, seconds) in enumerate([(16000, 1, 1.3), (8000, 2, 0.9), (16000, 1, 2.0)]):
        path = root / f"a{i}.wav"
        sf.write(path, 0.1 * rng.standard_normal((int(sr * seconds), channels)).astype(np.float32), sr)
        files.append(path)
    return {"root": root, "exp": root / "exp", "lang": root / "lang", "cuts": cuts, "files": files}


def _recognizer(exp: dict[str, Path], **kw):
    import dsr

    return dsr.Recognizer(exp["exp"], exp["lang"], device="cpu", **kw)


def test_same_text_as_dsr_transcribe_and_as_the_search_itself(exp):
    """The CLI prints what the API returns, and that is the plain per-file pipeline: the checkpoint's
    front end, the encoder and the method's search, one file at a time."""
    from typer.testing import CliRunner

    from dsr.cli.main import app
    from dsr.decoding.greedy import transducer_greedy_search
    from dsr.features.audio import load_audio_mono
    from dsr.features.fbank import compute_fbank
    from dsr.lang.bpe import Tokenizer
    from dsr.models.checkpoint import load_checkpoint

    model = build_model(ModelConfig.from_dict(load_checkpoint(exp["exp"] / "epoch-1.pt")["model_config"]))
    model.load_state_dict(load_checkpoint(exp["exp"] / "epoch-1.pt")["model"])
    model.eval()
    tokenizer = Tokenizer(exp["lang"])
    model.unk_id = tokenizer.unk_id  # what decoding sets from the lang dir: <unk> is searched as blank
    by_hand = []
    with torch.inference_mode():
        for f in exp["files"]:
            feats = torch.from_numpy(compute_fbank(load_audio_mono(f)))
            enc, lens = model.encode(feats[None], torch.tensor([feats.shape[0]]))
            by_hand.append(tokenizer.decode(transducer_greedy_search(model, enc, lens)[0]))
    assert any(by_hand)  # the random model says something
    for method in ("greedy", "modified-beam-search", "ctc-prefix-beam-search"):
        api = [t.text for t in _recognizer(exp, method=method).transcribe(exp["files"])]
        proc = CliRunner().invoke(
            app,
            [
                "transcribe",
                "--exp-dir",
                str(exp["exp"]),
                "--lang-dir",
                str(exp["lang"]),
                "--device",
                "cpu",
                "-m",
                method,
                *map(str, exp["files"]),
            ],
        )
        assert proc.exit_code == 0, proc.output
        cli = [line.split("\t", 1) for line in proc.stdout.splitlines()]
        assert [Path(f) for f, _ in cli] == exp["files"]
        assert [t for _, t in cli] == api
        if method == "greedy":
            assert api == by_hand


def test_arrays_and_files_give_identical_transcripts(exp):
    rec = _recognizer(exp, method="ctc-prefix-beam-search")
    from_files = rec.transcribe(exp["files"])
    arrays, rates = [], set()
    for f in exp["files"]:
        samples, sr = sf.read(f, dtype="float32")  # (T,) or (T, 2)
        arrays.append((samples, sr))
        rates.add(sr)
    assert rates == {8000, 16000}
    from_arrays = [rec.transcribe(samples, sample_rate=sr)[0] for samples, sr in arrays]
    assert [(t.text, t.tokens, t.timestamps, t.duration) for t in from_arrays] == [
        (t.text, t.tokens, t.timestamps, t.duration) for t in from_files
    ]
    assert [t.source for t in from_arrays] == ["array 0"] * 3
    # a list of arrays of one rate at once
    same_rate = [a for a, sr in arrays if sr == 16000]
    assert [t.text for t in rec.transcribe(same_rate, sample_rate=16000)] == [
        t.text for t, (_, sr) in zip(from_files, arrays) if sr == 16000
    ]
    with pytest.raises(ValueError, match="sample_rate"):
        rec.transcribe(same_rate[0])


@pytest.mark.parametrize("method", BPE_METHODS)
def test_timestamps_are_monotonic_and_within_the_audio(exp, method):
    transcripts = _recognizer(exp, method=method).transcribe(exp["files"])
    assert sum(len(t.tokens) for t in transcripts) > 0
    for t in transcripts:
        assert len(t.timestamps) == len(t.tokens)
        assert all(a <= b for a, b in zip(t.timestamps, t.timestamps[1:])), t.timestamps
        assert all(0.0 <= s < t.duration for s in t.timestamps), (t.timestamps, t.duration)
        # the pieces spell the text (sentencepiece marks word starts with U+2581, writes <unk> as " ⁇ ")
        spelled = "".join(t.tokens).replace("\u2581", " ").replace("<unk>", " \u2047 ")
        assert spelled.split() == t.text.split()


def test_the_model_is_loaded_once(exp, monkeypatch):
    from dsr.decoding import recognizer as module

    calls = []
    real = module.load_decoding_model

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "load_decoding_model", counting)
    rec = _recognizer(exp)
    first = rec.transcribe(exp["files"])
    samples, sr = sf.read(exp["files"][0], dtype="float32")
    rec.transcribe(samples, sample_rate=sr)
    rec.transcribe(exp["cuts"])
    assert rec.transcribe(exp["files"]) == first
    assert len(calls) == 1


def test_a_cuts_manifest_gives_what_dsr_decode_gives(exp, tmp_path):
    from dsr.decoding.decode import decode

    (res,) = decode(
        exp["exp"],
        exp["cuts"],
        exp["lang"],
        methods=("modified-beam-search",),
        device="cpu",
        progress=False,
        beam_size=3,
    )
    hyps = {}
    for line in (res.out_dir / "recogs.txt").read_text().splitlines():
        utt, field = line.split(":\t", 1)
        if field.startswith("hyp="):
            hyps[utt] = " ".join(eval(field[4:]))  # the list of words recogs.txt writes
    transcripts = _recognizer(exp, method="modified-beam-search", beam_size=3).transcribe(exp["cuts"])
    assert [t.source for t in transcripts] == ["u0", "u1", "u2"]
    assert {t.source: " ".join(t.text.split()) for t in transcripts} == hyps


def test_batched_files_give_the_one_at_a_time_text(exp):
    rec = _recognizer(exp)
    one = rec.transcribe(exp["files"], max_duration=0)
    batched = rec.transcribe(exp["files"], max_duration=100.0)
    assert [t.text for t in batched] == [t.text for t in one]
    assert [t.source for t in batched] == [str(f) for f in exp["files"]]


def test_unreadable_inputs_are_named_or_listed(exp, tmp_path):
    from dsr.errors import DsrUserError

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + bytes(50))
    rec = _recognizer(exp)
    with pytest.raises(DsrUserError, match="bad.wav"):
        rec.transcribe([exp["files"][0], bad])
    skipped: list = []
    out = rec.transcribe([exp["files"][0], bad, np.zeros(160, np.float32)], sample_rate=16000, unreadable=skipped)
    assert [t.source for t in out] == [str(exp["files"][0])]
    assert [s for s, _ in skipped] == [str(bad), "array 2"] and "too short" in skipped[1][1]


def test_bad_options_are_value_errors_in_field_terms(exp):
    import dsr
    from dsr.errors import OptionError

    with pytest.raises(ValueError, match="^method: 'nope' is unknown"):
        dsr.Recognizer(exp["exp"], exp["lang"], method="nope")
    with pytest.raises(OptionError, match="^lang_dir: is required"):
        dsr.Recognizer(exp["exp"])
    with pytest.raises(OptionError, match="^hotwords_file: needs method"):
        dsr.Recognizer(exp["exp"], exp["lang"], hotwords_file=exp["root"] / "hot.txt")


def test_import_dsr_stays_cheap():
    import subprocess
    import sys

    code = "import sys, dsr; print('torch' in sys.modules, 'lhotse' in sys.modules, hasattr(dsr, 'Recognizer'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.split() == ["False", "False", "True"], out.stderr


def test_a_checkpoint_file_instead_of_an_exp_dir(exp):
    import dsr

    by_file = dsr.Recognizer(checkpoint=exp["exp"] / "epoch-1.pt", lang_dir=exp["lang"], device="cpu")
    assert [t.text for t in by_file.transcribe(exp["files"])] == [
        t.text for t in _recognizer(exp).transcribe(exp["files"])
    ]
    assert by_file.loaded.tag == "epoch-1"


def test_lang_dir_and_checkpoint_errors_name_fields_in_python_and_flags_in_the_cli(exp, tmp_path):
    """Another vocabulary, or a checkpoint file that is not there: dsr.Recognizer's OptionError
    names the field (``lang_dir``, ``checkpoint``); dsr decode and dsr transcribe print the same
    line with the flag (``--lang-dir``, ``--checkpoint``), exit code 2."""
    from test_stage_reruns import dsr as dsr_cli
    from test_stage_reruns import one_line_error

    import dsr
    from dsr.errors import OptionError
    from dsr.lang.bpe import Tokenizer, train_bpe

    other = tmp_path / "lang30"
    train_bpe(TEXTS * 30, other, vocab_size=30)
    trained = Tokenizer(exp["lang"]).vocab_size
    missing = tmp_path / "nope.pt"
    vocab = f"{{}} {other} has 30 tokens but the model in {exp['exp']} was trained with {trained}; fix: give the {{}} "
    cases = [  # (Recognizer's arguments, the decode/transcribe flags, the message with {} for the field)
        (dict(exp_dir=exp["exp"], lang_dir=other), ["--exp-dir", exp["exp"], "--lang-dir", other],
         vocab + "the model was trained with"),
        (dict(checkpoint=missing, lang_dir=exp["lang"]),
         ["--exp-dir", tmp_path / "out", "--checkpoint", missing, "--lang-dir", exp["lang"]],
         f"{{}} {missing} does not exist; train first or give another {{}}"),
    ]  # fmt: skip
    for (kwargs, flags, message), field in zip(cases, ("lang_dir", "checkpoint")):
        with pytest.raises(OptionError) as raised:
            dsr.Recognizer(**kwargs, device="cpu")
        assert str(raised.value) == message.format(field, field)
        flag = "--" + field.replace("_", "-")
        for command in (["decode", "--cuts", exp["cuts"]], ["transcribe", exp["files"][0]]):
            line = one_line_error(dsr_cli(*command, *flags, "--device", "cpu"))
            assert line == "error: " + message.format(flag, flag), line
