"""Errors that the CLI turns into a one-line message and a non-zero exit code.

Raise :class:`DsrUserError` for anything the *user* can fix (a missing file, a bad
option, an unreadable manifest).  The message must name the file or option and
say what to do.  Everything else is a bug and keeps its traceback.
"""


class DsrUserError(Exception):
    """A problem with the user's input, reported without a traceback."""


class OptionError(DsrUserError, ValueError):
    """A bad value of one field of a stage's options object (also a ``ValueError``).

    The message speaks in the options' own terms: ``field`` is the dataclass field and
    other fields are named in backticks (`` `beam_size` ``).  The CLI names the flags
    instead (:meth:`for_flags`), so a library user never reads about flags and a command-line
    user never reads about fields.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def for_flags(self, flags: dict[str, str]) -> str:
        """The message with ``field`` and every backticked field spelled as its flag
        (``flags`` maps field -> flag; fields without one keep their name)."""
        import re

        text = re.sub(r"`(\w+)`", lambda m: flags.get(m.group(1), m.group(1)), self.message)
        return f"{flags.get(self.field, self.field)}: {text}"
