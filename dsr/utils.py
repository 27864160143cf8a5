"""Small helpers shared by every stage: atomic writes, done-markers, logging."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger("dsr")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    A reader never sees a half-written artifact, and an interrupted stage leaves
    only a stray ``.tmp`` file behind, never a truncated output.
    The temporary name keeps the final suffixes so that writers which choose a
    format by extension (``.jsonl.gz``, ``.pt``) still do the right thing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix="".join(path.suffixes) or ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; artifacts should get the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path | str, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def done_marker(out_dir: Path | str, stage: str) -> Path:
    """The file whose presence says ``stage`` finished writing into ``out_dir``."""
    return Path(out_dir) / f".done.{stage}"


def is_done(out_dir: Path | str, stage: str) -> bool:
    return done_marker(out_dir, stage).exists()


def mark_done(out_dir: Path | str, stage: str, info: dict[str, Any] | None = None) -> None:
    """Record that ``stage`` finished; ``info`` (counts, options) is kept for humans."""
    write_json_atomic(done_marker(out_dir, stage), info or {})


def read_done_info(out_dir: Path | str, stage: str) -> dict[str, Any]:
    return json.loads(done_marker(out_dir, stage).read_text(encoding="utf-8"))
