"""Offline TTS engines (espeak-ng, flite, festival): find voices, synthesise 16 kHz mono wavs.

A :class:`Voice` is ``(engine, name, variant)``; only espeak-ng has variants
(``-v en-us+m3``).  Per utterance, speaking rate and pitch are varied through
:class:`SynthParams` (relative factors, mapped onto each engine's own knobs).

Engines write their native rate (espeak-ng 22.05 kHz, flite kal 8 kHz, festival
HTS 32 kHz, ...); :func:`finish_audio` downmixes, resamples in Python with
``scipy.signal.resample_poly`` (sox may be absent), trims long silences to
:data:`KEEP_SILENCE_S` on each side and writes 16-bit PCM atomically.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from dsr.errors import DsrUserError
from dsr.utils import atomic_path

logger = logging.getLogger("dsr")

SAMPLE_RATE = 16000
ENGINES = ("espeak-ng", "flite", "festival")
INSTALL_HINT = "apt-get install espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts (or run tools/setup.sh)"

# espeak-ng's 'fast_test' variant is documented in its own file as unstable.
ESPEAK_VARIANT_BLOCKLIST = frozenset({"fast"})
# awb_time is a limited-domain voice: it can only say clock times.
FLITE_VOICE_BLOCKLIST = frozenset({"awb_time"})
# Festival voices whose intonation is set by linear-regression targets (pitch can be shifted).
_FESTIVAL_LR_PITCH = ("_diphone",)

# Leading/trailing silence longer than this is cut (engines differ a lot here,
# festival diphone voices pad generously); a little is kept so that onsets are
# not clipped and the model still sees some silence.
KEEP_SILENCE_S = 0.15
_SILENCE_DB = -45.0  # frame RMS this far below the loudest frame counts as silence

_TIMEOUT_S = 60.0  # per engine process; a hung synthesiser must not hang the corpus build


@dataclass(frozen=True, order=True)
class Voice:
    """One synthetic speaker: engine, voice name and (espeak-ng only) variant."""

    engine: str
    name: str
    variant: str = ""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.variant and self.engine != "espeak-ng":
            raise ValueError(f"only espeak-ng voices have variants, got {self!r}")

    @property
    def key(self) -> str:
        """Human-readable key used in voice-split patterns: ``espeak-ng/en-us+m3``, ``flite/slt``."""
        return f"{self.engine}/{self.name}" + (f"+{self.variant}" if self.variant else "")

    @property
    def id(self) -> str:
        """Id-safe name used as speaker id and utterance-id prefix: ``espeak_en-us_m3``."""
        fields = [self.engine.replace("-ng", ""), self.name] + ([self.variant] if self.variant else [])
        # '_' separates the fields, so it must not occur inside them.
        return "_".join(re.sub(r"[^A-Za-z0-9-]", "-", f) for f in fields)


@dataclass(frozen=True)
class SynthParams:
    """Relative speaking rate (>1 faster) and pitch (>1 higher); 1.0 is the voice's default."""

    rate: float = 1.0
    pitch: float = 1.0

    def __post_init__(self) -> None:
        if not (0.25 <= self.rate <= 4.0 and 0.25 <= self.pitch <= 4.0):
            raise ValueError(f"rate and pitch must be in [0.25, 4], got {self}")


# -- voice discovery -----------------------------------------------------------


def _run(cmd: Sequence[str], input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), input=input_text, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)


def _espeak_voices() -> list[Voice]:
    if not shutil.which("espeak-ng"):
        return []
    bases: list[str] = []
    for line in _run(["espeak-ng", "--voices=en"]).stdout.splitlines()[1:]:
        fields = line.split()
        # Columns: Pty Language Age/Gender VoiceName File [Other...]; mbrola voices
        # (mb/...) need separately packaged databases, so only the built-in gmw/ ones.
        if len(fields) >= 5 and fields[4].startswith("gmw/") and fields[1].startswith("en"):
            bases.append(fields[1])
    variants: list[str] = []
    for line in _run(["espeak-ng", "--voices=variant"]).stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5 and fields[4].startswith("!v/"):
            variant = fields[4][3:]
            if variant not in ESPEAK_VARIANT_BLOCKLIST:
                variants.append(variant)
    return [
        Voice("espeak-ng", base, variant) for base in sorted(set(bases)) for variant in ["", *sorted(set(variants))]
    ]


def _flite_voices() -> list[Voice]:
    if not shutil.which("flite"):
        return []
    out = _run(["flite", "-lv"]).stdout
    names = out.split(":", 1)[1].split() if ":" in out else []
    return [Voice("flite", n) for n in sorted(set(names)) if n not in FLITE_VOICE_BLOCKLIST]


def _festival_voices() -> list[Voice]:
    if not shutil.which("festival"):
        return []
    with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as f:
        f.write("(print (voice.list))\n")
        script = f.name
    try:
        out = _run(["festival", "-b", script]).stdout
    finally:
        Path(script).unlink()
    m = re.search(r"\(([^()]*)\)", out)
    return [Voice("festival", n) for n in sorted(set(m.group(1).split()))] if m else []


@functools.lru_cache(maxsize=1)
def available_voices() -> tuple[Voice, ...]:
    """All usable voices of the installed engines (cached for the process)."""
    voices = (*_espeak_voices(), *_flite_voices(), *_festival_voices())
    by_engine = {e: [v for v in voices if v.engine == e] for e in ENGINES}
    for engine, vs in by_engine.items():
        if not vs:
            logger.info("TTS %s: not available", engine)
        elif engine == "espeak-ng":
            bases = sorted({v.name for v in vs})
            logger.info(
                "TTS espeak-ng: %d base voices (%s) x %d variants (plus plain)",
                len(bases),
                ", ".join(bases),
                len(vs) // len(bases) - 1,
            )
        else:
            logger.info("TTS %s: %s", engine, ", ".join(v.name for v in vs))
    return voices


def require_voices() -> tuple[Voice, ...]:
    """:func:`available_voices`, or :class:`DsrUserError` when no engine is installed."""
    voices = available_voices()
    if not voices:
        raise DsrUserError(f"no TTS engine found (espeak-ng, flite, festival); fix: {INSTALL_HINT}")
    return voices


# -- synthesis -------------------------------------------------------------------


class SynthesisError(RuntimeError):
    """An engine failed for one utterance (or a festival batch); the message says why."""


def espeak_command(voice: Voice, params: SynthParams, wav: Path) -> list[str]:
    """espeak-ng command reading the text from stdin; rate 175 wpm and pitch 50 are its defaults."""
    spec = voice.name + (f"+{voice.variant}" if voice.variant else "")
    speed = round(175 * params.rate)
    pitch = min(99, max(0, round(50 + 150 * (params.pitch - 1.0))))
    return ["espeak-ng", "-v", spec, "-s", str(speed), "-p", str(pitch), "-w", str(wav), "--stdin"]


def flite_command(voice: Voice, params: SynthParams, text: str, wav: Path) -> list[str]:
    """flite command; ``f0_shift`` works for kal/awb/slt (rms ignores it), ``duration_stretch`` for all."""
    return [
        "flite", "-voice", voice.name,
        "--setf", f"duration_stretch={1.0 / params.rate:.4f}",
        "--setf", f"f0_shift={params.pitch:.4f}",
        "-t", text, "-o", str(wav),
    ]  # fmt: skip


def synthesize_raw(voice: Voice, text: str, params: SynthParams, wav: Path) -> None:
    """Run espeak-ng or flite once, writing the engine's native-rate wav to ``wav``."""
    if voice.engine == "espeak-ng":
        proc = _run(espeak_command(voice, params, wav), input_text=text)
    elif voice.engine == "flite":
        proc = _run(flite_command(voice, params, text, wav))
    else:
        raise ValueError("festival voices are synthesised in batches: use synthesize_festival_batch")
    if proc.returncode != 0 or not wav.is_file() or wav.stat().st_size <= 44:
        detail = " ".join(proc.stderr.split())[:200] or f"exit code {proc.returncode}, no audio"
        raise SynthesisError(f"{voice.key}: {detail}")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival_script(voice: Voice, items: Sequence[tuple[str, SynthParams, Path]]) -> str:
    """A festival scheme script synthesising every ``(text, params, wav)`` with one voice.

    One process for many utterances: festival's start-up (~0.3-0.7 s) would
    otherwise dominate.  Rate uses ``Duration_Stretch`` (``-r`` for HTS voices);
    pitch scales the diphone voices' target mean F0 (HTS voices keep theirs).
    """
    lr_pitch = voice.name.endswith(_FESTIVAL_LR_PITCH)
    hts = "hts" in voice.name
    # Keep the voice's own settings so each utterance scales them, not the previous one's.
    lines = [f"(voice_{voice.name})"]
    lines += ["(set! dsr_lr int_lr_params)"] if lr_pitch else []
    lines += ["(set! dsr_hts hts_engine_params)"] if hts else []
    for text, params, wav in items:
        lines.append(f"(Parameter.set 'Duration_Stretch {1.0 / params.rate:.4f})")
        if lr_pitch:
            lines.append(
                "(set! int_lr_params (cons (list 'target_f0_mean "
                f"(* {params.pitch:.4f} (cadr (assoc 'target_f0_mean dsr_lr)))) dsr_lr))"
            )
        if hts:
            lines.append(f'(set! hts_engine_params (cons (list "-r" {params.rate:.4f}) dsr_hts))')
        lines.append(
            f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) {_scheme_string(str(wav))} 'riff)"
        )
    return "\n".join(lines) + "\n"


def synthesize_festival_batch(voice: Voice, items: Sequence[tuple[str, SynthParams, Path]], work_dir: Path) -> None:
    """Synthesise a batch with one festival process; missing outputs are the caller's to report."""
    if voice.engine != "festival":
        raise ValueError(f"not a festival voice: {voice.key}")
    with tempfile.NamedTemporaryFile("w", suffix=".scm", dir=work_dir, delete=False, encoding="utf-8") as f:
        f.write(festival_script(voice, items))
        script = Path(f.name)
    try:
        proc = subprocess.run(
            ["festival", "-b", str(script)], capture_output=True, text=True,
            timeout=_TIMEOUT_S + 5.0 * len(items), check=False,
        )  # fmt: skip
    finally:
        script.unlink()
    if proc.returncode != 0:
        logger.warning(
            "festival %s exited with %d: %s", voice.key, proc.returncode, " ".join(proc.stderr.split())[:300]
        )


def trim_silence(audio: np.ndarray, sample_rate: int, keep_s: float = KEEP_SILENCE_S) -> np.ndarray:
    """Cut leading/trailing silence down to ``keep_s`` seconds (frame RMS below -45 dB of the peak frame)."""
    frame = max(1, sample_rate // 100)  # 10 ms
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1))
    if not np.any(rms > 0):
        return audio
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (_SILENCE_DB / 20))
    keep = int(keep_s * sample_rate)
    start = max(0, loud[0] * frame - keep)
    end = min(len(audio), (loud[-1] + 1) * frame + keep)
    return audio[start:end]


def finish_audio(raw: Path, out: Path, sample_rate: int = SAMPLE_RATE) -> float:
    """Read an engine's wav, make it mono at ``sample_rate`` (default 16 kHz), trim silence,
    write ``out`` atomically; return seconds.  A lower rate band-limits the voice like a
    telephone-band corpus (FSDD is 8 kHz), so its features match that corpus's."""
    try:
        audio, rate = sf.read(str(raw), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as exc:
        raise SynthesisError(f"engine wrote unreadable audio: {exc}") from None
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        g = math.gcd(rate, sample_rate)
        audio = resample_poly(audio, sample_rate // g, rate // g).astype(np.float32)
    audio = trim_silence(audio, sample_rate)
    if len(audio) < sample_rate // 10 or not np.any(audio):
        raise SynthesisError(f"engine produced {len(audio) / sample_rate:.2f} s of audio")
    # Resampling can overshoot full scale a little; PCM_16 would wrap, not clip.
    audio = np.clip(audio, -1.0, 1.0)
    with atomic_path(out) as tmp:
        sf.write(str(tmp), audio, sample_rate, subtype="PCM_16", format="WAV")
    return len(audio) / sample_rate
