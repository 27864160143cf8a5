"""LibriSpeech (OpenSLR 12) and Mini LibriSpeech (OpenSLR 31) -> dsr manifests.

Layout, as lhotse's ``prepare_librispeech`` reads it; the corpus dir is the
``LibriSpeech`` folder that the archives unpack to::

    LibriSpeech/<part>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   "<utt-id> TEXT" lines
    LibriSpeech/<part>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac

Splits are named after the parts (``train-clean-100``, ``dev-clean``,
``test-other``, Mini LibriSpeech's ``train-clean-5`` and ``dev-clean-2``), as in
icefall: they are valid dsr split names and say which part is meant, which
``train``/``dev``/``test`` could not once several train or test parts exist.
So ``dsr features --corpus librispeech --split dev-clean`` reads
``librispeech_{recordings,supervisions}_dev-clean.jsonl.gz``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from lhotse.recipes.librispeech import LIBRISPEECH, MINI_LIBRISPEECH
from lhotse.recipes.librispeech import download_librispeech as _lhotse_download

from dsr.data.corpus_import import OPENSLR_URL, Entry, import_utterances, require_dir, run_download
from dsr.data.normalize import normalize_text
from dsr.data.report import PrepareReport
from dsr.errors import DsrUserError, OptionError

logger = logging.getLogger("dsr")

CORPUS = "librispeech"
ALL_PARTS: tuple[str, ...] = LIBRISPEECH + MINI_LIBRISPEECH
# The group names lhotse's download_librispeech understands, expanded here so
# that each part is downloaded, checked and reported on its own.
PART_GROUPS: dict[str, tuple[str, ...]] = {"librispeech": LIBRISPEECH, "mini_librispeech": MINI_LIBRISPEECH}


def resolve_parts(dataset_parts: Sequence[str]) -> list[str]:
    """Expand ``librispeech``/``mini_librispeech`` and check every name; order kept, duplicates dropped."""
    parts: list[str] = []
    for name in dataset_parts:
        expanded = PART_GROUPS.get(name, (name,))
        for part in expanded:
            if part not in ALL_PARTS:
                raise DsrUserError(
                    f"LibriSpeech part {part!r} is unknown; fix: use {', '.join(PART_GROUPS)} or one of {', '.join(ALL_PARTS)}"
                )
            if part not in parts:
                parts.append(part)
    return parts


def _openslr_url(base_url: str, part: str) -> str:
    resource = 12 if part in LIBRISPEECH else 31
    return f"{base_url}/{resource}/{part}.tar.gz"


def download_librispeech(download_dir: Path, dataset_parts: Sequence[str], base_url: str = OPENSLR_URL) -> Path:
    """Download and unpack the parts into ``download_dir/LibriSpeech`` (lhotse's downloader; finished parts are kept).

    Returns the corpus dir to pass to :func:`prepare_librispeech`.
    """
    parts = resolve_parts(dataset_parts)
    if not parts:
        raise OptionError("nothing to download; fix: name the parts in {dataset_parts}, e.g. mini_librispeech")
    corpus_dir = Path(download_dir) / "LibriSpeech"
    for part in parts:
        corpus_dir = run_download(
            _lhotse_download, _openslr_url(base_url, part), Path(download_dir), dataset_parts=part, base_url=base_url
        )
    return corpus_dir


def parts_present(corpus_dir: Path) -> list[str]:
    """The known parts that have a folder in ``corpus_dir``, in lhotse's order."""
    return [p for p in ALL_PARTS if (Path(corpus_dir) / p).is_dir()]


def read_part(corpus_dir: Path, part: str) -> list[Entry]:
    """One entry per transcript line of the part; a line whose FLAC is missing is a layout error."""
    part_dir = require_dir(
        Path(corpus_dir) / part,
        "LibriSpeech part folder",
        f"download or unpack {part}, or drop it from {{dataset_parts}}",
    )
    entries: list[Entry] = []
    for trans in sorted(part_dir.rglob("*.trans.txt")):
        for line_no, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            audio = trans.parent / f"{utt_id}.flac"
            if not audio.is_file():
                raise DsrUserError(
                    f"{audio} does not exist (listed in {trans} line {line_no}); fix: restore the file from the "
                    f"{part} archive or remove that line"
                )
            # The speaker is the id up to its first '-', as in lhotse's recipe.
            entries.append(Entry(utt_id, audio, text, utt_id.split("-", 1)[0]))
    if not entries:
        raise DsrUserError(f"{part_dir} has no *.trans.txt lines; fix: unpack the complete {part} archive there")
    return entries


def prepare_librispeech(
    corpus_dir: Path,
    manifest_dir: Path,
    dataset_parts: Sequence[str] = (),
    num_jobs: int = 1,
) -> list[PrepareReport]:
    """Write ``librispeech_{recordings,supervisions}_<part>.jsonl.gz`` for each part.

    ``dataset_parts`` empty means every part found in ``corpus_dir``.  Texts go
    through :func:`dsr.data.normalize.normalize_text` (LibriSpeech's are already
    upper case with apostrophes, so they are unchanged).  Unusable utterances are
    skipped and listed in the reports, one per part.
    """
    corpus_dir = require_dir(
        Path(corpus_dir),
        "LibriSpeech corpus dir",
        "give the LibriSpeech folder (holding train-clean-100/, dev-clean/, ...) as {corpus_dir}, "
        "or download it: dsr prepare librispeech --download",
    )
    parts = resolve_parts(dataset_parts) if dataset_parts else parts_present(corpus_dir)
    if not parts:
        nested = corpus_dir / "LibriSpeech"
        fix = (
            f"give {{corpus_dir}} {nested}"
            if nested.is_dir()
            else "give the folder holding train-clean-100/, dev-clean/, ... as {corpus_dir}"
        )
        raise OptionError(f"{corpus_dir} holds no LibriSpeech part folder; fix: {fix}")
    reports = []
    for part in parts:
        entries = read_part(corpus_dir, part)
        reports.append(
            import_utterances(
                entries, manifest_dir, CORPUS, part, num_jobs=num_jobs, language="English", normalize=normalize_text
            )
        )
    return reports
