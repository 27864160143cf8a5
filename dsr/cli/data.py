"""``dsr prepare ...``: corpora -> lhotse manifests."""

from __future__ import annotations

from pathlib import Path

import typer

from dsr.cli.common import already_done, console, finish, show_progress
from dsr.errors import DsrUserError, OptionError

app = typer.Typer(
    help="Prepare lhotse manifests from a corpus: the embedded synthetic corpus, a folder, a Kaldi data dir, "
    "LibriSpeech, AISHELL or MUSAN.",
    no_args_is_help=True,
)

_POLICIES = ("fsdd-speaker", "arctic-prompt")


def _report(reports) -> str:
    for r in reports:
        console.print(f"  {r.summary()}", highlight=False)
        for utt, reason in r.skipped:
            console.print(f"    [yellow]skipped[/] {utt}: {reason}", highlight=False)
        for utt, reason in getattr(r, "warned", ()):
            console.print(f"    [yellow]warning[/] {utt}: {reason}", highlight=False)
    kept = sum(r.kept for r in reports)
    skipped = sum(len(r.skipped) for r in reports)
    hours = sum(r.duration_s for r in reports) / 3600
    return f"{kept} utterances ({hours:.2f} h) kept, {skipped} skipped, in {len(reports)} split(s)"


@app.command("synth")
def synth(
    corpus_dir: Path = typer.Option(Path("data/synth"), "--corpus-dir", help="Where the synthesised wav files go."),
    manifest_dir: Path = typer.Option(Path("data/manifests"), "--manifest-dir", help="Where manifests go."),
    num_train: int = typer.Option(4000, "--num-train", min=1, help="Training utterances."),
    num_dev: int = typer.Option(
        200, "--num-dev", min=0, help="Dev utterances (held-out voices and sentences; 0 = none)."
    ),
    num_test: int = typer.Option(
        300, "--num-test", min=0, help="Test utterances (held-out voices and sentences; 0 = none)."
    ),
    num_train_words: int = typer.Option(
        0, "--num-train-words", min=0, help="Extra isolated-word training utterances (vocabulary drills)."
    ),
    text_source: str = typer.Option(
        "sentences",
        "--text-source",
        help="What the voices say: sentences (voice-assistant grammar), digits "
        "(1..--max-digits digit words, e.g. pretraining for FSDD) or file (sentences of --text-file).",
    ),
    text_file: Path | None = typer.Option(
        None,
        "--text-file",
        help="With --text-source file: plain text to read sentences from (e.g. tools/public_domain_text.py's output).",
    ),
    exclude_text: Path | None = typer.Option(
        None,
        "--exclude-text",
        help="With --text-source file: texts (one per "
        "line, or a transcripts.tsv) whose sentences and 5-grams never go into "
        "the corpus, e.g. an evaluation set's prompts.",
    ),
    max_digits: int = typer.Option(1, "--max-digits", min=1, help="With --text-source digits: longest digit string."),
    sample_rate: int = typer.Option(
        16000,
        "--sample-rate",
        help="Sample rate of the written audio: 16000, or 8000 to band-limit like an 8 kHz corpus.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for sentences, voices, rates and pitches."),
    num_jobs: int = typer.Option(2, "--num-jobs", "-j", min=1, help="Parallel synthesis processes."),
    force: bool = typer.Option(False, "--force", help="Rebuild the manifests even if already done."),
) -> None:
    """Synthesise the embedded corpus offline with espeak-ng, flite and festival.

    Test voices and test sentences never occur in train.  Needs the Debian
    packages espeak-ng, flite, festival (tools/setup.sh installs them).
    An interrupted run reuses the audio already written.

    Example:

        dsr prepare synth --corpus-dir data/synth --manifest-dir data/manifests --num-train 4000 -j 2
        dsr prepare synth --text-source digits --sample-rate 8000 --num-train 3000 --num-dev 0 --num-test 0
        dsr prepare synth --text-source file --text-file data/pd_text.txt --exclude-text ../shared/data/arctic_cathy/transcripts.tsv
    """
    from dsr.data.text_corpus import read_exclude_texts
    from dsr.synth.corpus import SAMPLE_RATES, TEXT_SOURCES, prepare_synth

    if text_source not in TEXT_SOURCES:
        raise DsrUserError(f"--text-source must be one of {', '.join(TEXT_SOURCES)}, got {text_source}")
    if (text_source == "file") != (text_file is not None):
        raise DsrUserError("--text-file goes with --text-source file, and --text-source file needs --text-file")
    if exclude_text is not None and text_source != "file":
        raise DsrUserError("--exclude-text applies to --text-source file only")
    if sample_rate not in SAMPLE_RATES:
        raise DsrUserError(f"--sample-rate must be one of {', '.join(map(str, SAMPLE_RATES))}, got {sample_rate}")
    if already_done(manifest_dir, "prepare-synth", force):
        return
    reports = prepare_synth(
        corpus_dir,
        manifest_dir,
        num_train=num_train,
        num_dev=num_dev,
        num_test=num_test,
        seed=seed,
        num_jobs=num_jobs,
        progress=show_progress(),
        num_train_words=num_train_words,
        text_source=text_source,
        max_digits=max_digits,
        sample_rate=sample_rate,
        text_file=text_file,
        exclude_texts=read_exclude_texts(exclude_text) if exclude_text is not None else (),
    )
    finish(manifest_dir, "prepare-synth", _report(reports))


@app.command("folder")
def folder(
    audio_dir: Path = typer.Option(
        ..., "--audio-dir", help="Folder with <utt-id>.wav/.flac files (searched recursively)."
    ),
    transcripts: Path = typer.Option(..., "--transcripts", help="Text file of 'utt-id<TAB>text' lines."),
    corpus: str = typer.Option(..., "--corpus", help="Corpus name used in manifest file names."),
    split: str | None = typer.Option(None, "--split", help="Put every utterance into this split."),
    split_policy: str | None = typer.Option(
        None,
        "--split-policy",
        help="Make train/dev/test by key instead: fsdd-speaker (held-out --test-key speakers) "
        "or arctic-prompt (by prompt, never by take).",
    ),
    test_keys: list[str] = typer.Option([], "--test-key", help="With fsdd-speaker: speaker(s) held out for test."),
    dev_fraction: float = typer.Option(
        0.05, "--dev-fraction", min=0.0, max=1.0, help="With arctic-prompt: share of the prompts that go to dev."
    ),
    test_fraction: float = typer.Option(
        0.1, "--test-fraction", min=0.0, max=1.0, help="With arctic-prompt: share of the prompts that go to test."
    ),
    seed: int = typer.Option(
        0, "--seed", help="With arctic-prompt: seed of the prompt hash (another seed, another split)."
    ),
    manifest_dir: Path = typer.Option(Path("data/manifests"), "--manifest-dir", help="Where manifests go."),
    max_duration: float | None = typer.Option(None, "--max-duration", help="Skip utterances longer than this (s)."),
    force: bool = typer.Option(False, "--force", help="Rebuild the manifests even if already done."),
) -> None:
    """Import a folder of audio files and a transcripts file.

    Any sample rate, mono or stereo.  Unreadable audio and empty or implausibly
    long transcripts are skipped and listed; a transcript line whose audio file
    is missing stops with an error naming it.

    Examples:

        dsr prepare folder --audio-dir ../shared/data/fsdd/audio --transcripts ../shared/data/fsdd/transcripts.tsv --corpus fsdd --split-policy fsdd-speaker --test-key yweweler

        dsr prepare folder --audio-dir ../shared/data/arctic_cathy/audio --transcripts ../shared/data/arctic_cathy/transcripts.tsv --corpus arctic --split-policy arctic-prompt --dev-fraction 0.1 --test-fraction 0.1

        dsr prepare folder --audio-dir my/audio --transcripts my/text.tsv --corpus mine --split train
    """
    from dsr.data import folder as fol
    from dsr.data import splits

    if (split is None) == (split_policy is None):
        raise DsrUserError("give exactly one of --split NAME or --split-policy {fsdd-speaker,arctic-prompt}")
    stage = f"prepare-{corpus}" + (f"-{split}" if split else "")
    # Edited transcripts or added/removed audio files re-run the import.
    inputs: dict[str, Path] = {"transcripts": transcripts, "audio_dir": audio_dir}
    options = {
        "split": split,
        "split_policy": split_policy,
        "test_keys": list(test_keys),
        "dev_fraction": dev_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "max_duration": max_duration,
    }
    if already_done(manifest_dir, stage, force, inputs=inputs, options=options):
        return
    if split is not None:
        reports = [fol.prepare_folder(audio_dir, transcripts, manifest_dir, corpus, split, max_duration)]
    elif split_policy == "fsdd-speaker":
        policy = splits.fsdd_split(test_speakers=test_keys or splits.FSDD_TEST_SPEAKERS)
        reports = fol.prepare_folder_splits(
            audio_dir, transcripts, manifest_dir, corpus, policy, max_duration, speaker_of=splits.fsdd_speaker_of
        )
    elif split_policy == "arctic-prompt":
        if dev_fraction + test_fraction > 1.0:
            raise DsrUserError(
                f"--dev-fraction {dev_fraction} + --test-fraction {test_fraction} exceed 1; "
                "leave some prompts for train"
            )
        reports = fol.prepare_folder_splits(
            audio_dir,
            transcripts,
            manifest_dir,
            corpus,
            splits.arctic_split(dev_fraction, test_fraction, seed),
            max_duration,
        )
    else:
        raise DsrUserError(f"--split-policy {split_policy!r} is unknown; choose from {', '.join(_POLICIES)}")
    finish(manifest_dir, stage, _report(reports), inputs=inputs, options=options)


@app.command("kaldi-dir")
def kaldi_dir(
    data_dir: Path = typer.Option(
        ..., "--data-dir", help="Kaldi data directory (wav.scp, text, [segments], [utt2spk])."
    ),
    corpus: str = typer.Option(..., "--corpus", help="Corpus name used in manifest file names."),
    split: str = typer.Option(..., "--split", help="Split name, e.g. train."),
    manifest_dir: Path = typer.Option(Path("data/manifests"), "--manifest-dir", help="Where manifests go."),
    max_duration: float | None = typer.Option(None, "--max-duration", help="Skip utterances longer than this (s)."),
    force: bool = typer.Option(False, "--force", help="Rebuild the manifests even if already done."),
) -> None:
    """Import a Kaldi data directory.

    wav.scp entries must be file paths (piped commands are rejected with a message).

    Example:

        dsr prepare kaldi-dir --data-dir /kaldi/egs/x/data/train --corpus x --split train
    """
    from dsr.data.kaldi_dir import prepare_kaldi_dir

    stage = f"prepare-{corpus}-{split}"
    if already_done(manifest_dir, stage, force):
        return
    report = prepare_kaldi_dir(data_dir, manifest_dir, corpus, split, max_duration)
    finish(manifest_dir, stage, _report([report]))


# --- published corpora (lhotse's recipes' layouts and downloaders) -------------------------

_CORPUS_DIR_HELP = "An existing copy of the corpus (see the layout below)."
_DOWNLOAD = typer.Option(False, "--download", help="Download from OpenSLR first (needs the network); kept once done.")
_DOWNLOAD_DIR = typer.Option(Path("download"), "--download-dir", help="Where --download puts archives and the corpus.")
_BASE_URL = typer.Option(
    None,
    "--base-url",
    help="With --download: OpenSLR mirror, e.g. https://us.openslr.org/resources "
    "(default http://www.openslr.org/resources).",
)
_MANIFEST_DIR = typer.Option(Path("data/manifests"), "--manifest-dir", help="Where manifests go.")
_NUM_JOBS = typer.Option(2, "--num-jobs", "-j", min=1, help="Parallel processes that decode-check the audio.")
_FORCE = typer.Option(False, "--force", help="Rebuild the manifests even if already done.")


def _source(corpus_dir: Path | None, download: bool) -> None:
    """Exactly one of an existing copy or a download."""
    from dsr.errors import DsrUserError

    if download and corpus_dir is not None:
        raise DsrUserError("give --corpus-dir DIR (an existing copy) or --download, not both")
    if not download and corpus_dir is None:
        raise DsrUserError(
            "give --corpus-dir DIR for an existing copy, or --download (with --download-dir) to fetch it"
        )


def _pending(manifest_dir: Path, corpus: str, splits: list[str], force: bool) -> list[str]:
    """The splits whose manifests are not done yet (each split has its own marker, so adding a part later works)."""
    return [s for s in splits if not already_done(manifest_dir, f"prepare-{corpus}-{s}", force)]


def _finish_splits(manifest_dir: Path, reports) -> None:
    """One marker per split, holding its summary and every skipped item with the reason."""
    for r in reports:
        for item, reason in r.skipped:
            console.print(f"    [yellow]skipped[/] {item}: {reason}", highlight=False)
        finish(manifest_dir, f"prepare-{r.corpus}-{r.split}", r.summary(), {"skipped": [list(p) for p in r.skipped]})


def _split_list(values: list[str]) -> list[str]:
    """Repeated options, each also allowed to be a comma- or space-separated list (as recipes pass them)."""
    return [item for v in values for item in v.replace(",", " ").split()]


@app.command("librispeech")
def librispeech(
    corpus_dir: Path | None = typer.Option(None, "--corpus-dir", help=_CORPUS_DIR_HELP),
    download: bool = _DOWNLOAD,
    download_dir: Path = _DOWNLOAD_DIR,
    base_url: str | None = _BASE_URL,
    dataset_parts: list[str] = typer.Option(
        [],
        "--dataset-parts",
        help="Parts (repeatable or comma-separated): mini_librispeech, librispeech (all 7), "
        "or train-clean-100, train-clean-360, train-other-500, dev-clean, dev-other, test-clean, test-other, "
        "train-clean-5, dev-clean-2.  Default: every part in --corpus-dir.",
    ),
    manifest_dir: Path = _MANIFEST_DIR,
    num_jobs: int = _NUM_JOBS,
    force: bool = _FORCE,
) -> None:
    """LibriSpeech / Mini LibriSpeech: one split per part, named like the part (dev-clean, train-clean-100, ...).

    Layout of --corpus-dir (the LibriSpeech folder the archives unpack to):
    <part>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt and <speaker>-<chapter>-<n>.flac.
    Unreadable audio and empty transcripts are skipped and listed; a transcript
    line whose FLAC is missing stops with an error naming it.

    Examples:

        dsr prepare librispeech --corpus-dir /data/LibriSpeech --dataset-parts train-clean-100,dev-clean,test-clean -j 8

        dsr prepare librispeech --download --download-dir download --dataset-parts mini_librispeech
    """
    from dsr.data import librispeech as ls

    _source(corpus_dir, download)
    parts = ls.resolve_parts(_split_list(dataset_parts))
    if download and not parts:
        from dsr.errors import DsrUserError

        raise DsrUserError("--download needs --dataset-parts, e.g. mini_librispeech or train-clean-100,dev-clean")
    if corpus_dir is not None and not parts:
        parts = ls.parts_present(corpus_dir)  # empty: prepare_librispeech names the problem
    todo = _pending(manifest_dir, ls.CORPUS, parts, force) if parts else []
    if parts and not todo:
        return
    if download:
        corpus_dir = ls.download_librispeech(download_dir, todo, **({"base_url": base_url} if base_url else {}))
    assert corpus_dir is not None  # _source: an existing copy or a download
    _finish_splits(manifest_dir, ls.prepare_librispeech(corpus_dir, manifest_dir, todo, num_jobs))


@app.command("aishell")
def aishell(
    corpus_dir: Path | None = typer.Option(None, "--corpus-dir", help=_CORPUS_DIR_HELP),
    download: bool = _DOWNLOAD,
    download_dir: Path = _DOWNLOAD_DIR,
    base_url: str | None = _BASE_URL,
    manifest_dir: Path = _MANIFEST_DIR,
    num_jobs: int = _NUM_JOBS,
    force: bool = _FORCE,
) -> None:
    """AISHELL-1 (Mandarin): splits train, dev, test; text as characters without word spaces.

    Layout of --corpus-dir (the folder holding data_aishell/):
    data_aishell/transcript/aishell_transcript_v0.8.txt and data_aishell/wav/{train,dev,test}/<speaker>/<utt-id>.wav.
    Wavs without a transcript line and unreadable audio are skipped and listed.

    Examples:

        dsr prepare aishell --corpus-dir /data/aishell -j 8

        dsr prepare aishell --download --download-dir download
    """
    from dsr.data import aishell as ai

    _source(corpus_dir, download)
    if not _pending(manifest_dir, ai.CORPUS, list(ai.SPLITS), force):
        return
    if download:
        corpus_dir = ai.download_aishell(download_dir, **({"base_url": base_url} if base_url else {}))
    # The three splits share one transcript file and are written together.
    assert corpus_dir is not None  # _source: an existing copy or a download
    _finish_splits(manifest_dir, ai.prepare_aishell(corpus_dir, manifest_dir, num_jobs))


@app.command("musan")
def musan(
    corpus_dir: Path | None = typer.Option(None, "--corpus-dir", help=_CORPUS_DIR_HELP),
    download: bool = _DOWNLOAD,
    download_dir: Path = _DOWNLOAD_DIR,
    base_url: str | None = _BASE_URL,
    parts: list[str] = typer.Option(
        ["music", "speech", "noise"],
        "--part",
        help="MUSAN parts (repeatable or comma-separated): music, speech, noise.",
    ),
    manifest_dir: Path = _MANIFEST_DIR,
    num_jobs: int = _NUM_JOBS,
    force: bool = _FORCE,
) -> None:
    """MUSAN music/speech/noise: recordings-only manifests (musan_recordings_<part>.jsonl.gz) for noise augmentation.

    Layout of --corpus-dir (the musan folder): {music,speech,noise}/<source>/*.wav.
    Unreadable files are skipped and listed.

    Examples:

        dsr prepare musan --corpus-dir /data/musan -j 8

        dsr prepare musan --download --download-dir download --part noise
    """
    from dsr.data import musan as mu

    _source(corpus_dir, download)
    todo = _pending(manifest_dir, mu.CORPUS, mu.check_parts(_split_list(parts)), force)
    if not todo:
        return
    try:
        if download:
            corpus_dir = mu.download_musan(download_dir, **({"base_url": base_url} if base_url else {}))
        assert corpus_dir is not None  # _source: an existing copy or a download
        reports = mu.prepare_musan(corpus_dir, manifest_dir, todo, num_jobs)
    except OptionError as e:  # prepare_musan's parts are --part; its other arguments are their flags
        raise DsrUserError(e.as_flags({"parts": "--part"})) from None
    _finish_splits(manifest_dir, reports)
