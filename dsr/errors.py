"""Errors that the CLI turns into a one-line message and a non-zero exit code.

Raise :class:`DsrUserError` for anything the *user* can fix (a missing file, a bad
option, an unreadable manifest).  The message must name the file or option and
say what to do.  Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
from typing import Callable


class DsrUserError(Exception):
    """A problem with the user's input, reported without a traceback."""


class OptionError(DsrUserError, ValueError):
    """A bad value of a library options object (e.g. :class:`dsr.training.config.TrainConfig`),
    said in the options' own terms.

    The message names options as ``{field_name}`` (``{not:field_name}`` for a false boolean);
    ``str(e)`` shows them as the fields they are (``num_epochs``, ``use_transducer=False``), and
    a front end shows them as it calls them with :meth:`renamed`, e.g. the CLI's
    ``--num-epochs`` and ``--no-use-transducer``.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        super().__init__(self.renamed(lambda name, negated: f"{name}=False" if negated else name))

    def renamed(self, name_of: Callable[[str, bool], str]) -> str:
        """The message with each option named ``name_of(field_name, negated)``."""
        return re.sub(r"\{(not:)?([a-z][a-z0-9_]*)\}", lambda m: name_of(m.group(2), bool(m.group(1))), self.template)

    def as_flags(self) -> str:
        """The message naming command-line flags: ``--field-name``, ``--no-field-name``."""
        return self.renamed(lambda name, negated: f"--{'no-' if negated else ''}{name.replace('_', '-')}")
