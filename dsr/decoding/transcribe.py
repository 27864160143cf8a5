"""``dsr transcribe FILE...``: decode audio files of any sample rate / channel count.

A thin layer over :class:`dsr.decoding.recognizer.Recognizer` (which loads the model once)
for the command line and for callers that want ``(file, text)`` pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsr.decoding.options import TranscribeOptions
from dsr.decoding.recognizer import Recognizer
from dsr.features.frontend import FrontendConfig


def transcribe_files(
    files: list[Path],
    options: TranscribeOptions,
    unreadable: list[tuple[Path, str]] | None = None,
    frontend: FrontendConfig | None = None,
) -> list[tuple[Path, str]]:
    """Return ``(file, text)`` for each file, decoded with ``options``.

    A file that cannot be read (missing, corrupt, empty or too short) raises DsrUserError
    naming it, unless ``unreadable`` is a list: it then gets ``(file, reason)`` and every
    other file is still transcribed.  ``frontend`` overrides the front end the checkpoint
    records (the one its model was trained on).
    """
    recognizer = Recognizer(options=options, frontend=frontend)
    skipped: list[tuple[str, str]] | None = [] if unreadable is not None else None
    out = [(Path(t.source), t.text) for t in recognizer.transcribe([Path(f) for f in files], unreadable=skipped)]
    if unreadable is not None and skipped:
        unreadable += [(Path(f), reason) for f, reason in skipped]
    return out


def transcribe(
    files: list[Path],
    exp_dir: Path | str | None = None,
    lang_dir: Path | str | None = None,
    unreadable: list[tuple[Path, str]] | None = None,
    frontend: FrontendConfig | None = None,
    **options: Any,
) -> list[tuple[Path, str]]:
    """:func:`transcribe_files` with the :class:`TranscribeOptions` as keyword arguments
    (``method``, ``epoch``, ``avg``, ``device``, ``beam_size``, ``hotwords_file``, ...)."""
    opts = TranscribeOptions(exp_dir=exp_dir, lang_dir=lang_dir, **options)  # type: ignore[arg-type]
    return transcribe_files(files, opts, unreadable, frontend)
