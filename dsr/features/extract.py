"""Stage ``dsr features``: lhotse manifests -> cuts with log-mel features stored as lilcom.

Reads   ``<manifest_dir>/<corpus>_{recordings,supervisions}_<split>.jsonl.gz``
Writes  ``<out_dir>/<corpus>_cuts_<split>.jsonl.gz`` and ``<out_dir>/<corpus>_feats_<split>/*.lca``

Every recording is downmixed to mono and resampled to 16 kHz by the same code
that ``dsr transcribe`` uses, so any input rate or channel count works.  The front end
(kaldi-fbank by default, or whisper-fbank; :mod:`dsr.features.frontend`) is named in each
cut's ``features.type`` and its settings are kept in ``custom["frontend"]``.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lhotse import CutSet, Features, LilcomChunkyWriter, MonoCut, RecordingSet, SupervisionSet, load_manifest
from lhotse.supervision import SupervisionSegment

from dsr.errors import DsrUserError
from dsr.features.audio import load_recording_mono, speed_perturb
from dsr.features.fbank import FbankConfig
from dsr.features.frontend import FrontendConfig, compute_frontend, frontend_to_dict, frontend_type
from dsr.features.noise import NoiseMixing, add_noise
from dsr.features.options import FeaturesOptions
from dsr.utils import atomic_path, die_with_parent

logger = logging.getLogger("dsr")

# Cuts per worker task: large enough to amortise process overhead, small enough for a live progress bar.
_CHUNK = 64

# lilcom stores multiples of 2^tick_power.  lhotse's -5 (error <= 0.016) is 0.07 dB on Kaldi's
# natural-log FBANK; Whisper's log10(power) / 4 is 9.2x more compressed, where the same step
# would be 0.6 dB, so it gets 2^-8 (0.08 dB).
_TICK_POWER = {"kaldi-fbank": -5, "whisper-fbank": -8}


@dataclass
class FeatureReport:
    corpus: str
    split: str
    num_cuts: int = 0
    duration_s: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        s = f"{self.corpus}/{self.split}: {self.num_cuts} cuts, {self.duration_s / 3600:.2f} h"
        if self.skipped:
            s += f", skipped {len(self.skipped)} (" + "; ".join(f"{u}: {r}" for u, r in self.skipped[:3])
            s += ", ..." if len(self.skipped) > 3 else ""
            s += ")"
        return s


def cuts_path(fbank_dir: Path | str, corpus: str, split: str) -> Path:
    return Path(fbank_dir) / f"{corpus}_cuts_{split}.jsonl.gz"


def _manifest(manifest_dir: Path, corpus: str, kind: str, split: str) -> Path:
    p = manifest_dir / f"{corpus}_{kind}_{split}.jsonl.gz"
    if not p.is_file():
        raise DsrUserError(f"manifest {p} does not exist; run the data preparation stage first")
    return p


def _process_chunk(args: tuple) -> tuple[list[MonoCut], list[tuple[str, str]]]:
    """Worker: compute features for (recording, supervision) pairs, one storage file per chunk."""
    items, storage_file, cfg, factors, noise = args
    feature_type, frontend = frontend_type(cfg), frontend_to_dict(cfg)
    cuts: list[MonoCut] = []
    skipped: list[tuple[str, str]] = []
    with LilcomChunkyWriter(storage_file, tick_power=_TICK_POWER[feature_type]) as writer:
        for rec, sup in items:
            try:
                audio = load_recording_mono(rec, sup.start, sup.duration, cfg.sampling_rate)
            except Exception as e:  # any decoding error is a bad file, reported not fatal
                skipped.append((rec.id, f"unreadable audio: {e}"))  # e names the file and the fix
                continue
            for factor in factors:
                suffix = "" if factor == 1.0 else f"_sp{factor}"
                cut_id = sup.id + suffix
                x = speed_perturb(audio, cfg.sampling_rate, factor)
                mixed = None
                if noise is not None:
                    x, mixed = add_noise(x, cfg.sampling_rate, cut_id, noise)
                feats = compute_frontend(x, cfg)
                if feats.shape[0] < 10:
                    skipped.append((sup.id, f"too short for features ({x.shape[0]} samples)"))
                    continue
                duration = round(x.shape[0] / cfg.sampling_rate, 6)
                key = writer.write(cut_id, feats)
                features = Features(
                    type=feature_type,
                    num_frames=feats.shape[0],
                    num_features=feats.shape[1],
                    frame_shift=cfg.frame_shift,
                    sampling_rate=cfg.sampling_rate,
                    start=0.0,
                    duration=duration,
                    storage_type=writer.name,
                    # Absolute, so the cuts work from any working directory (dsr.data.cut_paths).
                    storage_path=str(Path(storage_file).absolute()),
                    storage_key=key,
                    recording_id=cut_id,
                    channels=0,
                )
                new_sup = SupervisionSegment(
                    id=cut_id,
                    recording_id=cut_id,
                    start=0.0,
                    duration=duration,
                    channel=0,
                    text=sup.text,
                    speaker=sup.speaker,
                    language=sup.language,
                )
                # No recording attached: the cut's audio was transformed (downmix, resample,
                # perturbation) and training only needs the features.  custom keeps provenance.
                cuts.append(
                    MonoCut(
                        id=cut_id,
                        start=0.0,
                        duration=duration,
                        channel=0,
                        supervisions=[new_sup],
                        features=features,
                        custom={
                            "source": rec.sources[0].source,
                            "speed": factor,
                            "frontend": frontend,
                            **({"noise": mixed} if mixed else {}),
                        },
                    )
                )
    return cuts, skipped


def compute_features(
    manifest_dir: Path,
    corpus: str,
    split: str,
    out_dir: Path,
    num_jobs: int = 2,
    speed_factors: tuple[float, ...] = (1.0,),
    cfg: FrontendConfig = FbankConfig(),
    progress: bool = True,
    noise: NoiseMixing | None = None,
) -> FeatureReport:
    """Compute features for one split and write its cuts manifest atomically.

    Args:
        cfg: the front end (:class:`FbankConfig` or :class:`~dsr.features.whisper_fbank.WhisperFbankConfig`).
        speed_factors: e.g. (0.9, 1.0, 1.1) to add speed-perturbed copies (train only).
        noise: mix noise into the cuts (the CLI passes it for train splits only; see
            :mod:`dsr.features.noise`); a mixed cut records ``custom["noise"] = {"recording": id, "snr_db": x}``.
    """
    if num_jobs < 1:
        raise ValueError(f"num_jobs must be >= 1, got {num_jobs}")
    if not speed_factors or any(f <= 0 for f in speed_factors):
        raise ValueError(f"speed_factors must be positive, got {speed_factors}")
    manifest_dir, out_dir = Path(manifest_dir), Path(out_dir)
    recordings = load_manifest(_manifest(manifest_dir, corpus, "recordings", split), manifest_cls=RecordingSet)
    supervisions = load_manifest(_manifest(manifest_dir, corpus, "supervisions", split), manifest_cls=SupervisionSet)
    report = FeatureReport(corpus=corpus, split=split)

    items = []
    for sup in supervisions:
        if sup.recording_id not in recordings:
            report.skipped.append((sup.id, f"recording {sup.recording_id} missing from the recordings manifest"))
            continue
        items.append((recordings[sup.recording_id], sup))
    storage_dir = out_dir / f"{corpus}_feats_{split}"
    storage_dir.mkdir(parents=True, exist_ok=True)
    tasks = [
        (items[i : i + _CHUNK], storage_dir / f"feats-{i // _CHUNK:05d}.lca", cfg, tuple(speed_factors), noise)
        for i in range(0, len(items), _CHUNK)
    ]

    from rich.progress import Progress

    all_cuts: list[MonoCut] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{frontend_type(cfg)} {corpus}/{split}", total=len(items))
        if num_jobs == 1 or len(tasks) == 1:
            results = map(_process_chunk, tasks)
            for (cuts, skipped), t in zip(results, tasks):
                all_cuts += cuts
                report.skipped += skipped
                bar.advance(task, len(t[0]))
        else:
            with ProcessPoolExecutor(num_jobs, initializer=die_with_parent, initargs=(os.getpid(),)) as ex:
                for (cuts, skipped), t in zip(ex.map(_process_chunk, tasks), tasks):
                    all_cuts += cuts
                    report.skipped += skipped
                    bar.advance(task, len(t[0]))
    for utt, reason in report.skipped:
        logger.warning("skipped %s: %s", utt, reason)
    cutset = CutSet.from_cuts(all_cuts)
    with atomic_path(cuts_path(out_dir, corpus, split)) as tmp:
        cutset.to_file(tmp)
    report.num_cuts = len(all_cuts)
    report.duration_s = sum(c.duration for c in all_cuts)
    return report


def compute_split(
    options: FeaturesOptions, split: str, progress: bool = True, noise: NoiseMixing | None = None
) -> FeatureReport:
    """:func:`compute_features` for one of ``options.splits``, with its settings.

    Speed perturbation and ``noise`` (loaded once for every split by the caller:
    :func:`dsr.features.noise.load_noise` of ``options.noise``) apply to training splits only
    (:meth:`FeaturesOptions.is_train`).
    """
    return compute_features(
        options.manifest_dir,
        options.corpus,
        split,
        options.out_dir,
        num_jobs=options.num_jobs,
        speed_factors=options.speed_factors(split),
        cfg=options.frontend(),
        progress=progress,
        noise=noise if options.is_train(split) else None,
    )
