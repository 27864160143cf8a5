"""``dsr prepare ...``: corpora -> lhotse manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dsr.cli.common import already_done, console, finish, show_progress
from dsr.errors import DsrUserError

app = typer.Typer(
    help="Prepare lhotse manifests from a corpus: the embedded synthetic corpus, a folder, or a Kaldi data dir.",
    no_args_is_help=True,
)

_POLICIES = ("fsdd-speaker", "arctic-prompt")


def _report(reports) -> str:
    for r in reports:
        console.print(f"  {r.summary()}", highlight=False)
        for utt, reason in r.skipped:
            console.print(f"    [yellow]skipped[/] {utt}: {reason}", highlight=False)
    kept = sum(r.kept for r in reports)
    skipped = sum(len(r.skipped) for r in reports)
    hours = sum(r.duration_s for r in reports) / 3600
    return f"{kept} utterances ({hours:.2f} h) kept, {skipped} skipped, in {len(reports)} split(s)"


@app.command("synth")
def synth(
    corpus_dir: Path = typer.Option(Path("data/synth"), "--corpus-dir", help="Where the synthesised wav files go."),
    manifest_dir: Path = typer.Option(Path("data/manifests"), "--manifest-dir", help="Where manifests go."),
    num_train: int = typer.Option(4000, "--num-train", min=1, help="Training utterances."),
    num_dev: int = typer.Option(200, "--num-dev", min=0, help="Dev utterances (held-out voices and sentences; 0 = none)."),
    num_test: int = typer.Option(300, "--num-test", min=0, help="Test utterances (held-out voices and sentences; 0 = none)."),
    num_train_words: int = typer.Option(
        0, "--num-train-words", min=0, help="Extra isolated-word training utterances (vocabulary drills)."),
    text_source: str = typer.Option(
        "sentences", "--text-source", help="What the voices say: sentences (voice-assistant grammar) or digits "
        "(1..--max-digits digit words, e.g. pretraining for FSDD)."),
    max_digits: int = typer.Option(1, "--max-digits", min=1, help="With --text-source digits: longest digit string."),
    sample_rate: int = typer.Option(
        16000, "--sample-rate", help="Sample rate of the written audio: 16000, or 8000 to band-limit like an 8 kHz corpus."),
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
    """
    from dsr.data.synth import SAMPLE_RATES, TEXT_SOURCES, prepare_synth

    if text_source not in TEXT_SOURCES:
        raise DsrUserError(f"--text-source must be one of {', '.join(TEXT_SOURCES)}, got {text_source}")
    if sample_rate not in SAMPLE_RATES:
        raise DsrUserError(f"--sample-rate must be one of {', '.join(map(str, SAMPLE_RATES))}, got {sample_rate}")
    if already_done(manifest_dir, "prepare-synth", force):
        return
    reports = prepare_synth(corpus_dir, manifest_dir, num_train=num_train, num_dev=num_dev, num_test=num_test,
                            seed=seed, num_jobs=num_jobs, progress=show_progress(),
                            num_train_words=num_train_words, text_source=text_source, max_digits=max_digits,
                            sample_rate=sample_rate)
    finish(manifest_dir, "prepare-synth", _report(reports))


@app.command("folder")
def folder(
    audio_dir: Path = typer.Option(..., "--audio-dir", help="Folder with <utt-id>.wav/.flac files (searched recursively)."),
    transcripts: Path = typer.Option(..., "--transcripts", help="Text file of 'utt-id<TAB>text' lines."),
    corpus: str = typer.Option(..., "--corpus", help="Corpus name used in manifest file names."),
    split: Optional[str] = typer.Option(None, "--split", help="Put every utterance into this split."),
    split_policy: Optional[str] = typer.Option(
        None, "--split-policy", help="Make train/dev/test by key instead: fsdd-speaker (held-out --test-key speakers) "
        "or arctic-prompt (by prompt, never by take)."),
    test_keys: list[str] = typer.Option([], "--test-key", help="With fsdd-speaker: speaker(s) held out for test."),
    manifest_dir: Path = typer.Option(Path("data/manifests"), "--manifest-dir", help="Where manifests go."),
    max_duration: Optional[float] = typer.Option(None, "--max-duration", help="Skip utterances longer than this (s)."),
    force: bool = typer.Option(False, "--force", help="Rebuild the manifests even if already done."),
) -> None:
    """Import a folder of audio files and a transcripts file.

    Any sample rate, mono or stereo.  Unreadable audio and empty or implausibly
    long transcripts are skipped and listed; a transcript line whose audio file
    is missing stops with an error naming it.

    Examples:

        dsr prepare folder --audio-dir ../shared/data/fsdd/audio --transcripts ../shared/data/fsdd/transcripts.tsv --corpus fsdd --split-policy fsdd-speaker --test-key yweweler

        dsr prepare folder --audio-dir my/audio --transcripts my/text.tsv --corpus mine --split train
    """
    from dsr.data import folder as fol
    from dsr.data import splits

    if (split is None) == (split_policy is None):
        raise DsrUserError("give exactly one of --split NAME or --split-policy {fsdd-speaker,arctic-prompt}")
    stage = f"prepare-{corpus}" + (f"-{split}" if split else "")
    if already_done(manifest_dir, stage, force):
        return
    if split is not None:
        reports = [fol.prepare_folder(audio_dir, transcripts, manifest_dir, corpus, split, max_duration)]
    elif split_policy == "fsdd-speaker":
        policy = splits.fsdd_split(test_speakers=test_keys or splits.FSDD_TEST_SPEAKERS)
        reports = fol.prepare_folder_splits(audio_dir, transcripts, manifest_dir, corpus, policy, max_duration,
                                            speaker_of=splits.fsdd_speaker_of)
    elif split_policy == "arctic-prompt":
        reports = fol.prepare_folder_splits(audio_dir, transcripts, manifest_dir, corpus, splits.arctic_split(),
                                            max_duration)
    else:
        raise DsrUserError(f"--split-policy {split_policy!r} is unknown; choose from {', '.join(_POLICIES)}")
    finish(manifest_dir, stage, _report(reports))


@app.command("kaldi-dir")
def kaldi_dir(
    data_dir: Path = typer.Option(..., "--data-dir", help="Kaldi data directory (wav.scp, text, [segments], [utt2spk])."),
    corpus: str = typer.Option(..., "--corpus", help="Corpus name used in manifest file names."),
    split: str = typer.Option(..., "--split", help="Split name, e.g. train."),
    manifest_dir: Path = typer.Option(Path("data/manifests"), "--manifest-dir", help="Where manifests go."),
    max_duration: Optional[float] = typer.Option(None, "--max-duration", help="Skip utterances longer than this (s)."),
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
