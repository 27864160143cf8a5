"""The field helper of every stage's options dataclass (decode, transcribe, features, rescore).

Its own module, below every stage package, so that a stage's options do not import another
stage's (features and LM rescoring sit beside decoding, not above it).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def opt(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with its CLI help (and ``flag`` / ``short`` / ``cli`` / ``negatable`` /
    ``min`` / ``max`` overrides, see :mod:`dsr.cli.options`) in its metadata."""
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return field(default_factory=lambda: value, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})
