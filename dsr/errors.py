"""Errors that the CLI turns into a one-line message and a non-zero exit code.

Raise :class:`DsrUserError` for anything the *user* can fix (a missing file, a bad
option, an unreadable manifest).  The message must name the file or option and
say what to do.  Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable


class DsrUserError(Exception):
    """A problem with the user's input, reported without a traceback."""


class OptionError(DsrUserError, ValueError):
    """A bad value of a library options object (:class:`dsr.training.config.TrainConfig`,
    :class:`dsr.decoding.options.DecodeOptions`, ...), said in the options' own terms; also a
    ``ValueError``.

    Two ways to raise it, one message model: a template naming options as ``{field_name}``
    (``{not:field_name}`` for a false boolean), e.g. ``OptionError("{num_epochs} must be >= 1")``,
    or a field and a message naming other fields in backticks, e.g.
    ``OptionError("nbest", "must be between 1 and `beam_size`")``.  ``str(e)`` names fields
    (``num_epochs``, ``use_transducer=False``); a front end names them as it calls them with
    :meth:`renamed`: the CLI's :meth:`as_flags` (``--num-epochs``) or :meth:`for_flags` (an
    explicit field -> flag map).
    """

    def __init__(self, template_or_field: str, message: str | None = None) -> None:
        if message is None:
            self.field: str | None = None
            self.message = template_or_field
            self.template = template_or_field
            text = self.renamed(lambda name, negated: f"{name}=False" if negated else name)
        else:
            self.field = template_or_field
            self.message = message
            self.template = "{" + template_or_field + "}: " + re.sub(r"`(\w+)`", r"{\1}", message)
            text = f"{template_or_field}: {message}"
        super().__init__(text)

    def renamed(self, name_of: Callable[[str, bool], str]) -> str:
        """The message with each option named ``name_of(field_name, negated)``."""
        return re.sub(r"\{(not:)?([a-z][a-z0-9_]*)\}", lambda m: name_of(m.group(2), bool(m.group(1))), self.template)

    def as_flags(self, flags: dict[str, str] | None = None) -> str:
        """The message naming command-line flags: ``--field-name``, ``--no-field-name``; ``flags``
        maps the fields whose flag is spelled otherwise (``{"parts": "--part"}``)."""
        return self._spelled(lambda name: (flags or {}).get(name) or "--" + name.replace("_", "-"))

    def for_flags(self, flags: dict[str, str]) -> str:
        """The message with each field spelled as its flag (``flags`` maps field -> flag, ``--no-``
        added for a false boolean; fields without one keep their name)."""
        return self._spelled(lambda name: flags.get(name, name))

    def _spelled(self, spelling: Callable[[str], str]) -> str:
        def flag(name: str, negated: bool) -> str:
            spelled = spelling(name)
            if not negated:
                return spelled
            return f"--no-{spelled[2:]}" if spelled.startswith("--") else f"{spelled}=False"

        return self.renamed(flag)
