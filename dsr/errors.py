"""Errors that the CLI turns into a one-line message and a non-zero exit code.

Raise :class:`DsrUserError` for anything the *user* can fix (a missing file, a bad
option, an unreadable manifest).  The message must name the file or option and
say what to do.  Everything else is a bug and keeps its traceback.
"""


class DsrUserError(Exception):
    """A problem with the user's input, reported without a traceback."""
