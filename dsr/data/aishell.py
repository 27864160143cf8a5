"""AISHELL-1 (OpenSLR 33, Mandarin read speech) -> dsr manifests.

Layout, as lhotse's ``prepare_aishell`` reads it; the corpus dir is the folder
holding ``data_aishell`` (``<download-dir>/aishell`` after a download)::

    data_aishell/transcript/aishell_transcript_v0.8.txt   "<utt-id> 词 词 ..." lines, all splits
    data_aishell/wav/{train,dev,test}/<speaker>/<utt-id>.wav

Splits keep AISHELL's names: ``train``, ``dev``, ``test``.

Text: lhotse's AISHELL normalisation (full-width letters to ASCII, upper case),
then the spaces of the transcript's word segmentation are removed, as lhotse and
icefall do: the segmentation is an annotation choice, not something heard, and
Chinese is scored by characters (CER, which ignores spaces anyway).  Finally
:func:`dsr.data.normalize.normalize_text`, which keeps CJK characters (they are
``\\w``) and drops punctuation, so the manifests hold what the tokenizer and the
scorer will see.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lhotse.recipes.aishell import download_aishell as _lhotse_download
from lhotse.recipes.aishell import text_normalize as _lhotse_text_normalize

from dsr.data.corpus_import import OPENSLR_URL, Entry, import_utterances, require_dir, run_download
from dsr.data.normalize import normalize_text
from dsr.data.report import PrepareReport
from dsr.errors import DsrUserError, OptionError

logger = logging.getLogger("dsr")

CORPUS = "aishell"
SPLITS = ("train", "dev", "test")
TRANSCRIPT = Path("data_aishell/transcript/aishell_transcript_v0.8.txt")


def normalize_aishell_text(text: str) -> str:
    """lhotse's AISHELL normalisation, word spaces removed, then dsr's :func:`normalize_text`.

    >>> normalize_aishell_text("而 对 楼市 成交 ｋ 线")
    '而对楼市成交K线'
    """
    return normalize_text(_lhotse_text_normalize(text).replace(" ", ""))


def download_aishell(download_dir: Path, base_url: str = OPENSLR_URL) -> Path:
    """Download and unpack AISHELL-1 into ``download_dir/aishell`` with lhotse's downloader (done parts are kept).

    Returns the corpus dir to pass to :func:`prepare_aishell`.
    """
    return run_download(_lhotse_download, f"{base_url}/33/data_aishell.tgz", Path(download_dir), base_url=base_url)


def read_transcripts(path: Path) -> dict[str, str]:
    """utt-id -> raw transcript; a repeated id keeps its last line, as lhotse does, with a warning."""
    texts: dict[str, str] = {}
    repeated: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        utt_id, _, text = line.strip().partition(" ")
        if not utt_id:
            continue
        if utt_id in texts:
            repeated.append(utt_id)
        texts[utt_id] = text
    if repeated:
        logger.warning(
            "%s: %d ids appear on several lines, the last line is used (e.g. %s)",
            path,
            len(repeated),
            ", ".join(repeated[:3]),
        )
    return texts


def read_split(corpus_dir: Path, split: str, texts: dict[str, str], report: PrepareReport) -> list[Entry]:
    """One entry per wav of the split; a wav with no transcript line is skipped into ``report``."""
    wav_dir = Path(corpus_dir) / "data_aishell" / "wav" / split
    if not wav_dir.is_dir() or not any(wav_dir.iterdir()):
        tarballs = sorted((wav_dir.parent).glob("*.tar.gz")) if wav_dir.parent.is_dir() else []
        fix = (
            f"unpack the speaker archives in {wav_dir.parent} (e.g. {tarballs[0].name}), or download it: "
            "dsr prepare aishell --download"
            if tarballs
            else "unpack data_aishell.tgz completely, or download it: dsr prepare aishell --download"
        )
        raise DsrUserError(f"AISHELL {split} audio folder {wav_dir} is missing or empty; fix: {fix}")
    entries: list[Entry] = []
    for wav in sorted(wav_dir.rglob("*.wav")):
        if wav.stem not in texts:
            report.skip(wav.stem, f"no transcript: {wav.stem} is not in {TRANSCRIPT.name}")
            logger.warning("%s/%s: skipping %s: no line in %s", CORPUS, split, wav, TRANSCRIPT.name)
            continue
        # The speaker is the folder the wav sits in (S0002), as in lhotse's recipe.
        entries.append(Entry(wav.stem, wav, texts[wav.stem], wav.parent.name))
    return entries


def prepare_aishell(corpus_dir: Path, manifest_dir: Path, num_jobs: int = 1) -> list[PrepareReport]:
    """Write ``aishell_{recordings,supervisions}_{train,dev,test}.jsonl.gz``; one report per split.

    Wavs without a transcript line, unreadable audio and empty transcripts are
    skipped and listed in the reports.
    """
    corpus_dir = require_dir(
        Path(corpus_dir),
        "AISHELL corpus dir",
        "give the folder holding data_aishell/ (e.g. download/aishell) as {corpus_dir}, "
        "or download it: dsr prepare aishell --download",
    )
    transcript = corpus_dir / TRANSCRIPT
    if not transcript.is_file():
        nested = corpus_dir / "aishell"
        fix = (
            f"give {{corpus_dir}} {nested}"
            if (nested / TRANSCRIPT).is_file()
            else "give the folder holding data_aishell/ (unpacked from data_aishell.tgz) as {corpus_dir}"
        )
        raise OptionError(f"{transcript} does not exist; fix: {fix}")
    texts = read_transcripts(transcript)
    reports = []
    for split in SPLITS:
        report = PrepareReport(CORPUS, split)
        entries = read_split(corpus_dir, split, texts, report)
        reports.append(
            import_utterances(
                entries,
                manifest_dir,
                CORPUS,
                split,
                num_jobs=num_jobs,
                language="Chinese",
                normalize=normalize_aishell_text,
                report=report,
            )
        )
    return reports
