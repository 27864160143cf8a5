"""The decoding methods' registry, DecodeOptions / TranscribeOptions validation in their own
terms, and the CLI flags generated from them (errors naming the flags)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from dsr.decoding import methods as registry
from dsr.decoding.options import DecodeOptions, ExpandOptions, TranscribeOptions
from dsr.errors import DsrUserError, OptionError


def test_registry_tables_agree_with_each_method_entry():
    for name, m in registry.REGISTRY.items():
        assert m.name == name and m.heads <= set(registry.HEADS)
        assert (name in registry.NBEST_METHODS) == (m.nbest and m.tokens == "bpe")
        if m.first_pass is not None:
            first = registry.REGISTRY[m.first_pass]
            assert first.nbest and "attention" in m.heads and first.heads <= m.heads
        if m.reference:
            assert m.zero_shot and not m.heads
    assert set(registry.EXPANDABLE_METHODS) == {"modified-beam-search", "ctc-prefix-beam-search"}
    assert registry.STREAMING_METHODS == ("greedy",)
    assert set(registry.WHISPER_METHODS) == {"whisper-greedy", "whisper-beam-search"}


class _Model:
    """Stands in for a HybridTransducer: only the head attributes check_method reads."""

    def __init__(self, transducer=True, ctc=True, attention=False, whisper=False):
        self.has_transducer = transducer
        self.ctc_output = object() if ctc else None
        self.attention_decoder = object() if attention or whisper else None
        self.has_whisper_head = whisper


@pytest.mark.parametrize(
    "model,method,missing",
    [
        (_Model(ctc=False), "ctc-greedy", "a CTC head"),
        (_Model(transducer=False), "greedy", "a transducer"),
        (_Model(transducer=False, attention=True), "transducer-attention-rescoring", "a transducer"),
        (_Model(), "ctc-attention-rescoring", "an attention decoder"),
        (_Model(ctc=False), "ctc-attention-rescoring", "a CTC head"),
        (_Model(attention=True), "whisper-greedy", "Whisper's decoder head"),
    ],
)
def test_check_method_names_the_missing_head(model, method, missing):
    with pytest.raises(OptionError, match=f"^method: {method} needs {missing}") as e:
        registry.check_method(model, method)
    assert e.value.field == "method" and isinstance(e.value, ValueError) and isinstance(e.value, DsrUserError)


def test_check_method_accepts_a_model_with_the_heads():
    assert registry.check_method(_Model(whisper=True), "ctc-attention-rescoring").first_pass == "ctc-prefix-beam-search"
    assert registry.check_method(_Model(transducer=False, ctc=True), "ctc-prefix-beam-search").nbest
    with pytest.raises(OptionError, match="unknown; choose from greedy, ctc-greedy"):
        registry.check_method(_Model(), "beam")


def _decode(**kw) -> DecodeOptions:
    return DecodeOptions(**{"exp_dir": Path("exp"), "lang_dir": Path("lang"), **kw})


@pytest.mark.parametrize(
    "kw,field,match",
    [
        (dict(methods=()), "methods", "at least one"),
        (dict(methods=("greedy", "nope")), "methods", "'nope' is unknown"),
        (dict(exp_dir=None), "exp_dir", "is required"),
        (dict(lang_dir=None), "lang_dir", "is required"),
        (dict(beam_size=0), "beam_size", "must be >= 1"),
        (dict(beam_size=2, nbest=3), "nbest", "between 1 and `beam_size`=2"),
        (dict(attention_scale=-1.0), "attention_scale", ">= 0"),
        (dict(max_duration=0.0), "max_duration", "> 0"),
        (dict(avg=0), "avg", ">= 1"),
        (dict(streaming=True, methods=("ctc-greedy",)), "streaming", "greedy only"),
        (dict(chunk_ms=160.0), "chunk_ms", "only apply with `streaming`"),
        (dict(left_context_chunks=2), "chunk_ms", "only apply with `streaming`"),
        (dict(pretrained="whisper-tiny.en", methods=("greedy",)), "pretrained", "zero-shot Whisper"),
        (dict(methods=("faster-whisper",)), "methods", "give `pretrained`"),
        (dict(expand_lexicon=Path("words.txt"), methods=("greedy",)), "expand_lexicon", "n-best methods"),
        (
            dict(pretrained="whisper-tiny.en", methods=("whisper-greedy",), hotwords_file=Path("h.txt")),
            "hotwords_file",
            "lang dir",
        ),
    ],
)
def test_decode_options_reject_bad_values_in_their_own_terms(kw, field, match):
    with pytest.raises(OptionError, match=match) as e:
        _decode(**kw)
    assert e.value.field == field
    assert "--" not in str(e.value)  # the library never speaks in flags


def test_decode_options_defaults_and_normalisation():
    o = _decode(methods="greedy", nbest=None, lang_dir="lang")
    assert o.methods == ("greedy",) and o.nbest == 0 and o.lang_dir == Path("lang")
    assert o.expand == ExpandOptions()
    assert _decode(pretrained="whisper-tiny.en", lang_dir=None, methods=("whisper-greedy", "faster-whisper"))
    with pytest.raises(OptionError, match="^parents: must be >= 1"):
        ExpandOptions(parents=0)


def test_nbest_file_is_one_per_cuts_manifest():
    rescore = dict(lang_dir=None, methods=("speech-llm-greedy", "speech-llm-rescoring"))
    # One path, as the library took it before the flag was repeatable, or several, in --cuts order.
    assert _decode(**rescore, nbest_file="dev.jsonl").nbest_file == (Path("dev.jsonl"),)
    o = _decode(**rescore, nbest_file=("dev.jsonl", Path("test.jsonl")))
    assert o.nbest_file == (Path("dev.jsonl"), Path("test.jsonl"))
    assert o.nbest_files_for(["d.jsonl.gz", "t.jsonl.gz"]) == [Path("dev.jsonl"), Path("test.jsonl")]
    for cuts in (["d.jsonl.gz"], ["d.jsonl.gz", "t.jsonl.gz", "x.jsonl.gz"]):
        with pytest.raises(OptionError, match=f"^nbest_file: 2 given for {len(cuts)} `cuts` manifests; give one") as e:
            o.nbest_files_for(cuts)
        assert e.value.field == "nbest_file"
    with pytest.raises(OptionError, match="is required by speech-llm-rescoring") as e:
        _decode(**rescore, nbest_file=())
    assert e.value.field == "nbest_file"
    # Without speech-llm-rescoring no manifest has one.
    assert _decode(lang_dir=None, methods=("speech-llm-greedy",)).nbest_files_for(["a", "b"]) == [None, None]


def test_transcribe_options():
    assert TranscribeOptions(pretrained="whisper-tiny.en", method="whisper-greedy").lang_dir is None
    for kw, field in [
        (dict(method="faster-whisper"), "method"),
        (dict(method="greedy", hotwords_file="h.txt"), "hotwords_file"),
        (dict(max_duration=-1.0), "max_duration"),
        (dict(exp_dir=None), "exp_dir"),
    ]:
        with pytest.raises(OptionError) as e:
            TranscribeOptions(**{"exp_dir": Path("exp"), "lang_dir": Path("lang"), **kw})
        assert e.value.field == field


def test_every_option_field_has_a_flag_and_its_help():
    from dsr.cli.options import flags_of, option_parameters

    for cls in (DecodeOptions, TranscribeOptions):
        flags = flags_of(cls)
        names = [f.name for f in fields(cls) if f.name != "expand"]
        assert set(names) <= set(flags)
        params = option_parameters(cls)
        assert all(p.default.help for p in params)
    assert flags_of(DecodeOptions)["methods"] == "--method"
    assert flags_of(DecodeOptions)["max_am_drop"] == "--expand-max-am-drop"


def test_for_flags_names_the_flags():
    from dsr.cli.options import flags_of

    e = OptionError("nbest", "must be between 1 and `beam_size`=2 (got 3)")
    assert str(e) == "nbest: must be between 1 and `beam_size`=2 (got 3)"
    assert e.for_flags(flags_of(DecodeOptions)) == "--nbest: must be between 1 and --beam-size=2 (got 3)"
    # A false boolean is its --no- flag.
    e = OptionError("the averaged model needs epoch-2.pt (or pass {not:use_averaged_model}; {methods} greedy)")
    assert e.for_flags(flags_of(DecodeOptions)) == (
        "the averaged model needs epoch-2.pt (or pass --no-use-averaged-model; --method greedy)"
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (
            [
                "decode",
                "--exp-dir",
                "exp",
                "--lang-dir",
                "lang",
                "--cuts",
                "c.jsonl.gz",
                "--nbest",
                "5",
                "--beam-size",
                "2",
                "-m",
                "modified-beam-search",
            ],
            "--nbest: must be between 1 and --beam-size=2",
        ),
        (
            ["decode", "--exp-dir", "exp", "--lang-dir", "lang", "--cuts", "c.jsonl.gz", "--chunk-ms", "160"],
            "--chunk-ms: and --left-context-chunks only apply with --streaming",
        ),
        (["decode", "--exp-dir", "exp", "--cuts", "c.jsonl.gz"], "--lang-dir: is required"),
        (
            [
                "decode",
                "--exp-dir",
                "exp",
                "--lang-dir",
                "lang",
                "--cuts",
                "c.jsonl.gz",
                "--expand-lexicon",
                "w.txt",
                "--expand-parents",
                "0",
                "-m",
                "modified-beam-search",
            ],
            "--expand-parents: must be >= 1",
        ),
        (
            ["transcribe", "--exp-dir", "exp", "--lang-dir", "lang", "-m", "nope", "a.wav"],
            "--method: 'nope' is unknown",
        ),
        (["transcribe", "--exp-dir", "exp", "a.wav"], "--lang-dir: is required"),
        (
            [
                "decode",
                "--exp-dir",
                "exp",
                "--cuts",
                "dev.jsonl.gz",
                "--cuts",
                "test.jsonl.gz",
                "-m",
                "speech-llm-rescoring",
                "--nbest-file",
                "dev.jsonl",
            ],
            "--nbest-file: 1 given for 2 --cuts manifests; give one n-best list per --cuts, in the same order",
        ),
    ],
)
def test_the_cli_reports_option_errors_naming_the_flag(args, message):
    """One line, exit status 2, the flags' spelling (run as the dsr entry point does)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "300"}
    proc = subprocess.run(
        [sys.executable, "-m", "dsr.cli.main", *args], capture_output=True, text=True, env=env, cwd=root, timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr
