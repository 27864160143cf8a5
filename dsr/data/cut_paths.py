"""Feature storage paths that resolve wherever a cuts manifest is used from.

``dsr features`` used to store ``storage_path`` as given (``data/fbank/x_feats_train/...``,
relative to the directory it ran in), so the same manifest read from another working
directory pointed nowhere: training crashed and decoding called every cut unreadable.
New manifests store absolute paths; for older (or moved) ones :func:`resolve_feature_paths`
looks for each storage file relative to the working directory, then relative to the
manifest's folder (the feature folders sit next to their manifest).
"""

from __future__ import annotations

import os
from pathlib import Path

from lhotse import CutSet
from lhotse.cut import Cut, MonoCut
from lhotse.utils import fastcopy


def _candidates(stored: str, manifest_dir: Path) -> list[Path]:
    """Where a stored path may be, best first: as written (relative to the working directory),
    then under the manifest's folder with ever fewer leading components."""
    path = Path(stored)
    parts = path.parts[1:] if path.is_absolute() else path.parts
    found = [path] + [manifest_dir.joinpath(*parts[k:]) for k in range(len(parts))]
    return found


def resolve_storage_path(stored: str, manifest_dir: Path, cache: dict[str, str] | None = None) -> str:
    """``stored`` as an absolute path that exists, or ``stored`` unchanged when none does
    (the reader then reports the cut as unreadable, naming the stored path)."""
    if cache is not None and stored in cache:
        return cache[stored]
    resolved = stored
    for candidate in _candidates(stored, manifest_dir):
        if candidate.exists():
            resolved = os.path.abspath(candidate)
            break
    if cache is not None:
        cache[stored] = resolved
    return resolved


def resolve_feature_paths(cuts: CutSet, manifest: Path | str) -> CutSet:
    """``cuts`` (read from ``manifest``) with every feature ``storage_path`` made absolute and existing
    where it can be; see :func:`resolve_storage_path`.  Cuts without stored features are unchanged."""
    manifest_dir = Path(manifest).absolute().parent
    cache: dict[str, str] = {}

    def fix(cut: Cut) -> Cut:
        if not isinstance(cut, MonoCut) or cut.features is None:
            return cut
        stored = str(cut.features.storage_path)
        resolved = resolve_storage_path(stored, manifest_dir, cache)
        if resolved == stored:
            return cut
        return fastcopy(cut, features=fastcopy(cut.features, storage_path=resolved))

    return CutSet.from_cuts(fix(c) for c in cuts)
