"""Split policies: map an utterance id to ``train``/``dev``/``test``.

A policy is any ``Callable[[str], str]``.  The helpers here build policies from a
*key* (speaker, prompt, ...) so that everything sharing a key lands in the same
split -- e.g. all takes of one ARCTIC prompt, or every file of a held-out speaker.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Mapping

SplitOf = Callable[[str], str]

_FSDD_RE = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")
_ARCTIC_RE = re.compile(r"^(arctic_[ab]\d{4})(?:_.+)?$")

# FSDD's four speakers; yweweler is held out for test by default so that the
# test set measures an unseen voice.
FSDD_TEST_SPEAKERS: tuple[str, ...] = ("yweweler",)


def fsdd_speaker_of(utt_id: str) -> str:
    """Speaker of a Free Spoken Digit Dataset id ``<digit>_<speaker>_<index>``."""
    m = _FSDD_RE.match(utt_id)
    if not m:
        raise ValueError(f"not an FSDD utterance id (<digit>_<speaker>_<index>): {utt_id!r}")
    return m.group(2)


def arctic_prompt_of(utt_id: str) -> str:
    """Prompt of a CMU ARCTIC take ``arctic_aNNNN_<take>`` -> ``arctic_aNNNN``.

    Splitting by this key keeps all takes of a prompt (near-duplicates) together.
    """
    m = _ARCTIC_RE.match(utt_id)
    if not m:
        raise ValueError(f"not an ARCTIC utterance id (arctic_aNNNN[_<take>]): {utt_id!r}")
    return m.group(1)


def split_by_key(
    key_of: Callable[[str], str],
    held_out: Mapping[str, Collection[str]],
    default: str | SplitOf = "train",
) -> SplitOf:
    """Policy sending ids whose key is in ``held_out[split]`` to ``split``, the rest to ``default``.

    ``default`` may itself be a policy, e.g. :func:`split_by_hash` to carve a dev
    set out of the non-held-out speakers.
    """
    owner: dict[str, str] = {}
    for split, keys in held_out.items():
        if isinstance(keys, str):
            raise ValueError(f"held_out[{split!r}] must be a collection of keys, not the string {keys!r}")
        for key in keys:
            if key in owner:
                raise ValueError(f"key {key!r} is held out for both {owner[key]!r} and {split!r}")
            owner[key] = split

    def split_of(utt_id: str) -> str:
        split = owner.get(key_of(utt_id))
        if split is not None:
            return split
        return default(utt_id) if callable(default) else default

    return split_of


def split_by_hash(
    key_of: Callable[[str], str],
    fractions: Mapping[str, float],
    seed: int = 0,
    default: str = "train",
) -> SplitOf:
    """Policy putting about ``fractions[split]`` of the *keys* into each split, the rest into ``default``.

    The assignment hashes ``(seed, key)``, so it is stable across runs, machines
    and corpus growth (adding files never moves existing keys).
    """
    if any(not 0.0 <= f <= 1.0 for f in fractions.values()) or sum(fractions.values()) > 1.0:
        raise ValueError(f"fractions must be in [0, 1] and sum to at most 1, got {dict(fractions)}")
    if default in fractions:
        raise ValueError(f"default split {default!r} must not also be in fractions")
    # Sorted so that the mapping's insertion order does not change the result.
    bounds: list[tuple[float, str]] = []
    acc = 0.0
    for split in sorted(fractions):
        acc += fractions[split]
        bounds.append((acc, split))

    def split_of(utt_id: str) -> str:
        digest = hashlib.sha1(f"{seed}\0{key_of(utt_id)}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        for upper, split in bounds:
            if u < upper:
                return split
        return default

    return split_of


def fsdd_split(
    test_speakers: Collection[str] = FSDD_TEST_SPEAKERS, dev_fraction: float = 0.1, seed: int = 0
) -> SplitOf:
    """FSDD policy: ``test_speakers`` -> test; of the others, ~``dev_fraction`` of files -> dev."""
    return split_by_key(
        fsdd_speaker_of, {"test": test_speakers}, default=split_by_hash(str, {"dev": dev_fraction}, seed)
    )


def arctic_split(dev_fraction: float = 0.05, test_fraction: float = 0.1, seed: int = 0) -> SplitOf:
    """ARCTIC policy: prompts (never takes) hashed into dev/test/train."""
    return split_by_hash(arctic_prompt_of, {"dev": dev_fraction, "test": test_fraction}, seed)
