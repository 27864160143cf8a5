"""Console, logging and the skip-if-done convention shared by all subcommands."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from dsr.utils import changed_inputs, input_fingerprint, is_done, mark_done, read_done_info

# Wide when not a terminal, so log lines in files and CI output are not wrapped mid-path.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def setup_logging(verbose: bool = False, log_file: Path | None = None) -> None:
    """Rich log lines on stderr; an optional plain log file for the experiment directory."""
    level = logging.DEBUG if verbose else logging.INFO
    logger = logging.getLogger("dsr")
    logger.setLevel(level)
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        logger.addHandler(RichHandler(console=console, show_path=False, rich_tracebacks=False, log_time_format="[%X]"))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(fh)
    logger.propagate = False


def show_progress() -> bool:
    return sys.stderr.isatty()


def already_done(
    out_dir: Path, stage: str, force: bool, inputs: dict[str, Path] | None = None, options: dict[str, Any] | None = None
) -> bool:
    """True (and a message) when ``stage`` finished before and ``--force`` was not given.

    With ``inputs`` (role -> path read by the stage) and ``options``, a stage whose
    marker recorded other inputs or options is not done: it is redone, with a line
    saying what changed (e.g. ``prepare --force`` rewrote the manifests ``features`` read).
    """
    if force or not is_done(out_dir, stage):
        return False
    if inputs is not None:
        changed = changed_inputs(out_dir, stage, input_fingerprint(inputs), options or {})
        if changed:
            console.print(f"[yellow]redo[/] {stage}: changed since it ran in {out_dir}: {', '.join(changed)}")
            return False
    info = read_done_info(out_dir, stage)
    console.print(f"[yellow]skip[/] {stage}: already done in {out_dir} ({info.get('summary', '')}); --force to redo")
    return True


def finish(
    out_dir: Path,
    stage: str,
    summary: str,
    info: dict[str, Any] | None = None,
    inputs: dict[str, Path] | None = None,
    options: dict[str, Any] | None = None,
) -> None:
    """Mark ``stage`` done and print its one-line summary.

    ``inputs`` / ``options``: what the stage read and with which settings, recorded so that
    :func:`already_done` can tell a changed input from a finished stage.  Fingerprint the
    inputs *before* the stage runs if it may change them; pass them as ``info["inputs"]``.
    """
    extra: dict[str, Any] = {}
    if inputs is not None:
        extra = {"inputs": input_fingerprint(inputs), "options": options or {}}
    mark_done(out_dir, stage, {"summary": summary, **extra, **(info or {})})
    console.print(f"[green]done[/] {stage}: {summary}")
