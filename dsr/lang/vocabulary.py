"""The vocabulary a model was trained with, recorded in its checkpoints and checked where it is used.

A model's output layer indexes the pieces of one ``bpe.model``.  Decoding it with another
lang dir either crashes (a larger vocabulary: token ids past the model's output) or, worse,
prints another vocabulary's pieces with exit 0.  The trainer stores :func:`vocabulary_info`
in every checkpoint; :func:`check_vocabulary` compares it with the lang dir given at
decode/transcribe time and stops with one line naming both sides: an
:class:`~dsr.errors.OptionError` naming ``lang_dir``, which each command shows as its flag.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from dsr.errors import OptionError

logger = logging.getLogger("dsr")


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def vocabulary_info(lang_dir: Path | str, vocab_size: int) -> dict[str, Any]:
    """``{"lang_dir", "size", "bpe_model_sha256", "tokens_sha256"}`` of a lang dir (tokens.txt may be absent)."""
    lang_dir = Path(lang_dir)
    return {
        "lang_dir": str(lang_dir),
        "size": int(vocab_size),
        "bpe_model_sha256": _sha256(lang_dir / "bpe.model"),
        "tokens_sha256": _sha256(lang_dir / "tokens.txt"),
    }


def check_vocabulary(
    recorded: dict[str, Any] | None, model_vocab_size: int, lang_dir: Path | str, lang_vocab_size: int, model_desc: str
) -> None:
    """Raise :class:`~dsr.errors.OptionError` (naming ``lang_dir``) unless ``lang_dir`` holds the
    vocabulary the model was trained with.

    Args:
        recorded: the checkpoint's ``vocabulary`` entry (None for checkpoints from before it
            was recorded: only the sizes are compared, with a warning that the pieces cannot be).
        model_vocab_size: the size of the model's output layer.
        lang_vocab_size: pieces in ``lang_dir``'s ``bpe.model``.
        model_desc: how to name the model in the message, e.g. ``the model in exp/conformer``.
    """
    lang_dir = Path(lang_dir)
    fix = "fix: give the {lang_dir} the model was trained with"
    if recorded is None:
        if model_vocab_size != lang_vocab_size:
            raise OptionError(
                f"{{lang_dir}} {lang_dir} has {lang_vocab_size} tokens but {model_desc} was trained with "
                f"{model_vocab_size}; {fix}"
            )
        logger.warning(
            "%s records no vocabulary checksum (trained by an older dsr): cannot check that %s holds the "
            "tokens it was trained with, only their number (%d)",
            model_desc,
            lang_dir,
            lang_vocab_size,
        )
        return
    now = vocabulary_info(lang_dir, lang_vocab_size)
    trained = f"{model_desc} was trained with {recorded.get('size')} tokens of {recorded.get('lang_dir')}"
    if int(recorded.get("size", model_vocab_size)) != lang_vocab_size or model_vocab_size != lang_vocab_size:
        raise OptionError(f"{{lang_dir}} {lang_dir} has {lang_vocab_size} tokens but {trained}; {fix}")
    for key, name in (("bpe_model_sha256", "bpe.model"), ("tokens_sha256", "tokens.txt")):
        if recorded.get(key) and now[key] and recorded[key] != now[key]:
            raise OptionError(
                f"{{lang_dir}} {lang_dir} has another {name} (sha256 {now[key][:12]}) than {trained} "
                f"(sha256 {recorded[key][:12]}); {fix}"
            )
