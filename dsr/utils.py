"""Small helpers shared by every stage: atomic writes, done-markers, logging."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

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


# Inputs up to this size are hashed (a manifest, a transcripts file: milliseconds); larger
# ones are fingerprinted by size and modification time, which any rewrite changes.
_HASH_MAX_BYTES = 256 << 20


def input_fingerprint(paths: Mapping[str, Path | str]) -> dict[str, str]:
    """What a stage read, as ``{role: fingerprint}`` to store in its done-marker.

    A file's fingerprint is its size and sha256 (size and mtime above 256 MiB); a folder's
    is one sha256 over every file's relative path, size and mtime (its audio is not
    read); a missing path is ``"missing"``.  Comparing two of these tells whether the
    stage would read the same thing again.
    """
    out: dict[str, str] = {}
    for role, path in sorted(paths.items()):
        path = Path(path)
        if path.is_file():
            st = path.stat()
            if st.st_size <= _HASH_MAX_BYTES:
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                out[role] = f"file size={st.st_size} sha256={digest.hexdigest()}"
            else:
                out[role] = f"file size={st.st_size} mtime_ns={st.st_mtime_ns}"
        elif path.is_dir():
            digest = hashlib.sha256()
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    child = Path(root) / name
                    try:
                        st = child.stat()
                    except OSError:  # a dangling link is part of the listing too
                        digest.update(f"{child.relative_to(path)}\0missing\n".encode())
                        continue
                    digest.update(f"{child.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            out[role] = f"dir sha256={digest.hexdigest()}"
        else:
            out[role] = "missing"
    return out


def changed_inputs(out_dir: Path | str, stage: str, inputs: dict[str, str], options: dict[str, Any]) -> list[str]:
    """What differs between a finished ``stage``'s marker and ``inputs`` / ``options`` now.

    Returns e.g. ``["input supervisions", "option speed_factors"]``; empty when the stage
    would read the same thing with the same settings, or when its marker predates input
    recording (nothing to compare: it is trusted as before).
    """
    info = read_done_info(out_dir, stage)
    if "inputs" not in info:
        return []
    done_inputs, done_options = info.get("inputs") or {}, info.get("options") or {}
    changed = [f"input {k}" for k in sorted(set(done_inputs) | set(inputs)) if done_inputs.get(k) != inputs.get(k)]
    # Options go through JSON in the marker; compare them the same way.
    now = json.loads(json.dumps(options))
    changed += [f"option {k}" for k in sorted(set(done_options) | set(now)) if done_options.get(k) != now.get(k)]
    return changed


def die_with_parent(parent_pid: int) -> None:
    """Make this (worker) process exit when ``parent_pid`` dies, even by SIGKILL.

    A pool's workers outlive a SIGKILLed parent (no Python code runs to stop them) and
    hang on forever.  On Linux the kernel sends them SIGKILL when the parent goes
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread polls the parent's pid.
    Meant as a ``ProcessPoolExecutor`` / ``multiprocessing.Pool`` ``initializer``.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0:
                # The parent may have died before prctl ran: then nobody will send the signal.
                if os.getppid() != parent_pid:
                    os._exit(1)
                return
        except (OSError, AttributeError):  # no libc prctl: fall back to polling
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
