"""MUSAN (OpenSLR 17: music, speech and noise) -> recordings manifests for noise augmentation.

Layout, as lhotse's ``prepare_musan`` reads it; the corpus dir is the ``musan``
folder the archive unpacks to::

    musan/music/<source>/music-<source>-<n>.wav
    musan/speech/<source>/speech-<source>-<n>.wav
    musan/noise/<source>/noise-<source>-<n>.wav

Only recordings are written, one manifest per part, named like the other
corpora's with the part as split: ``musan_recordings_{music,speech,noise}.jsonl.gz``.
Nothing here is transcribed speech to train on, so there are no supervisions
(lhotse's music supervisions only carry genre annotations).  Recording ids are
the file stems, which MUSAN makes unique across parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lhotse.recipes.musan import download_musan as _lhotse_download

from dsr.data.corpus_import import OPENSLR_URL, Entry, import_recordings, require_dir, run_download
from dsr.data.report import PrepareReport
from dsr.errors import DsrUserError, OptionError

CORPUS = "musan"
PARTS = ("music", "speech", "noise")


def download_musan(download_dir: Path, base_url: str = OPENSLR_URL) -> Path:
    """Download and unpack MUSAN into ``download_dir/musan`` with lhotse's downloader (kept once done).

    Returns the corpus dir to pass to :func:`prepare_musan`.
    """
    url = f"{base_url}/17/musan.tar.gz"
    return run_download(_lhotse_download, url, Path(download_dir), url=url)


def check_parts(parts: Sequence[str]) -> list[str]:
    """The parts in the order given, duplicates dropped; an unknown one is a user error."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise DsrUserError(f"MUSAN part {unknown[0]!r} is unknown; fix: use {', '.join(PARTS)}")
    return list(dict.fromkeys(parts))


def read_part(corpus_dir: Path, part: str) -> list[Entry]:
    """One entry per wav under ``corpus_dir/part`` (recursively, sorted)."""
    part_dir = require_dir(
        Path(corpus_dir) / part, "MUSAN part folder", f"unpack musan.tar.gz completely, or drop {part} from {{parts}}"
    )
    entries = [Entry(wav.stem, wav) for wav in sorted(part_dir.rglob("*.wav"))]
    if not entries:
        raise OptionError(
            f"{part_dir} has no .wav files; fix: unpack musan.tar.gz completely, or drop {part} from {{parts}}"
        )
    return entries


def prepare_musan(
    corpus_dir: Path, manifest_dir: Path, parts: Sequence[str] = PARTS, num_jobs: int = 1
) -> list[PrepareReport]:
    """Write ``musan_recordings_<part>.jsonl.gz`` per part; unreadable files are skipped and listed."""
    corpus_dir = require_dir(
        Path(corpus_dir),
        "MUSAN corpus dir",
        "give the musan folder (holding music/, speech/, noise/) as {corpus_dir}, "
        "or download it: dsr prepare musan --download",
    )
    parts = check_parts(parts)
    if not parts:
        raise ValueError("parts must name at least one of " + ", ".join(PARTS))
    if not any((corpus_dir / p).is_dir() for p in parts) and (corpus_dir / "musan").is_dir():
        raise OptionError(f"{corpus_dir} holds no MUSAN part folder; fix: give {{corpus_dir}} {corpus_dir / 'musan'}")
    return [
        import_recordings(read_part(corpus_dir, part), manifest_dir, CORPUS, part, num_jobs=num_jobs) for part in parts
    ]
