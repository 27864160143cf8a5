"""Entry point of the ``dsr`` command.

User errors (:class:`dsr.errors.DsrUserError`, and the ``OSError`` of a path the user
gave -- a read-only folder, a "folder" that is a file, a full disk) print one red line
and exit 2; other exceptions are bugs and keep their traceback.  ``--debug`` shows the
traceback for user errors too.  Ctrl-C prints that a re-run resumes and exits 130.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

import typer
import typer.core

from dsr import __version__
from dsr.cli import data, decode, export, features, lang, lm, prune, pseudo_label, rescore, whisper
from dsr.cli.common import console, setup_logging
from dsr.errors import DsrUserError, OptionError


class Interrupted(Exception):
    """Ctrl-C during a command, carried past typer (which would turn it into a quiet exit 130) to :func:`run`."""


class _Commands(typer.core.TyperGroup):
    """The root group, with ``train`` built only when it is asked for.

    ``dsr train``'s flags are generated from the training config, so building the command
    imports ``dsr.training``; ``dsr transcribe`` and ``dsr decode`` must not pay for that
    (inference stands apart from training).  ``dsr --help`` still lists it, in its place.
    """

    _lazy = {"train": "lang"}  # lazy command -> the command it is listed after

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(super().list_commands(ctx))
        for name, after in self._lazy.items():
            names.insert(names.index(after) + 1 if after in names else len(names), name)
        return names

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name == "train" and "train" not in self.commands:
            from dsr.cli import train

            single = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="rich")
            single.command("train", context_settings={"ignore_unknown_options": False})(train.train)
            self.add_command(typer.main.get_command(single), "train")
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: Any) -> Any:
        # Every subcommand runs inside the root group's invoke, nested groups (prepare, lm, ...) too.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            raise Interrupted() from e


app = typer.Typer(
    cls=_Commands,
    name="dsr",
    help=(
        "dsr: speech recognition training toolkit (pruned RNN-T + CTC).\n\n"
        "Each stage reads and writes files, so recipes can stop and resume anywhere:\n\n"
        "prepare -> features -> lang -> train -> decode -> rescore -> results.  "
        "See egs/synth/run.sh for a complete recipe."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(data.app, name="prepare")
app.command("features")(features.features)
app.command("lang")(lang.lang)
app.command("decode")(decode.decode)
app.command("transcribe")(decode.transcribe)
app.command("results")(decode.results)
app.command("rescore")(rescore.rescore)
app.command("pseudo-label")(pseudo_label.pseudo_label)
app.add_typer(lm.app, name="lm")
app.add_typer(whisper.app, name="whisper")
app.add_typer(export.app, name="export")
app.command("prune")(prune.prune)

_DEBUG = {"on": False}

# OSErrors that a user's path or disk causes, and what to do about each.  Other errnos
# (EBADF, EINVAL, ...) come from dsr's own code and stay tracebacks.
_USER_OS_ERRORS = {
    errno.EACCES: "give yourself write/read permission there or choose another path",
    errno.EPERM: "give yourself write/read permission there or choose another path",
    errno.EROFS: "choose a folder on a writable file system",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path or move that file",
    errno.EISDIR: "pass a file, not a folder",
    errno.EEXIST: "remove or rename what is in the way, or choose another path",
    errno.ENOENT: "check the path",
    errno.ENOSPC: "free disk space or choose another folder",
    errno.EDQUOT: "free disk space or choose another folder",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def user_os_error(exc: OSError) -> str | None:
    """One line for an ``OSError`` about a path (with its fix), or None when it looks like a bug.

    Only errors that carry a file name and an errno from :data:`_USER_OS_ERRORS` count:
    an ``OSError`` without a path cannot be tied to the user's input.
    """
    if exc.filename is None or exc.errno not in _USER_OS_ERRORS:
        return None
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{where}: {exc.strerror or type(exc).__name__}; fix: {_USER_OS_ERRORS[exc.errno]}"


def _version(value: bool) -> None:
    if value:
        print(f"dsr {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for every error."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug-level log messages."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _DEBUG["on"] = debug
    setup_logging(verbose)


def run() -> None:
    try:
        app()
    except DsrUserError as e:
        if _DEBUG["on"] or "--debug" in sys.argv:
            raise
        # An OptionError that its command did not rename names fields: each field is the flag
        # --field-name, the commands' convention (commands whose flags differ rename them first).
        message = e.as_flags() if isinstance(e, OptionError) else str(e)
        console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as e:
        line = user_os_error(e)
        if line is None or _DEBUG["on"] or "--debug" in sys.argv:
            raise
        console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (Interrupted, KeyboardInterrupt):  # a bare KeyboardInterrupt: Ctrl-C outside any command
        console.print("[red]interrupted[/]; re-run the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    run()
