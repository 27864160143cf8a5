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

from dsr.errors import DsrUserError


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


def check_feature_storage(cuts: CutSet, manifest: Path | str) -> None:
    """Raise :class:`DsrUserError` naming the first feature file that is missing or shorter than its cuts need.

    Only sizes are compared (one ``stat`` per storage file, no feature is read), which
    catches a feature file cut short by a full disk or an interrupted copy before
    training starts, instead of a decompression traceback in the middle of an epoch.
    Storage types other than ``lilcom_chunky`` (dsr's) are only checked for existence.
    """
    needed: dict[str, tuple[int, str]] = {}
    for cut in cuts:
        feats = cut.features if isinstance(cut, MonoCut) else None
        if feats is None:
            continue
        path = str(feats.storage_path)
        end = 0
        if feats.storage_type == "lilcom_chunky":
            offsets = [int(v) for v in str(feats.storage_key).split(",") if v.strip()]
            end = offsets[0] + sum(offsets[1:]) if offsets else 0
        if path not in needed or end > needed[path][0]:
            needed[path] = (end, cut.id)
    fix = f"fix: recompute the features of {manifest} (dsr features ... --force)"
    for path, (end, cut_id) in needed.items():
        if not os.path.exists(path):
            raise DsrUserError(f"feature file {path} (cut {cut_id} of {manifest}) does not exist; {fix}")
        size = os.path.getsize(path) if os.path.isfile(path) else end
        if size < end:
            raise DsrUserError(
                f"feature file {path} is truncated: {size} bytes, cut {cut_id} of {manifest} needs {end}; {fix}"
            )
