"""faster-whisper as a reference decode method (``dsr decode --pretrained NAME -m faster-whisper``).

It transcribes each cut's audio with faster-whisper (CTranslate2) greedy, without
timestamps, previous-text conditioning or VAD: the settings dsr's zero-shot
``whisper-greedy`` reproduces.  Its rows in a results table are scored by dsr's scorer,
so Whisper and dsr are compared on the same normalised words.  The audio is the cut's
recording, or, for cuts made by ``dsr features`` (which keep no recording), the source
file named in ``cut.custom["source"]`` (speed-perturbed copies cannot be reproduced).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from lhotse.cut import Cut

from dsr.errors import DsrUserError
from dsr.features.audio import load_audio_mono, load_recording_mono

logger = logging.getLogger("dsr")

SAMPLING_RATE = 16000


def cut_audio(cut: Cut) -> np.ndarray:
    """16 kHz mono samples of ``cut`` (its recording, or its ``custom["source"]`` file)."""
    if cut.has_recording:
        return load_recording_mono(cut.recording, cut.start, cut.duration, SAMPLING_RATE)
    custom = cut.custom or {}
    if "source" not in custom:
        raise ValueError("the cut has no recording and no custom source file")
    if float(custom.get("speed", 1.0)) != 1.0:
        raise ValueError(f"speed-perturbed copy ({custom['speed']}x) of {custom['source']}")
    return load_audio_mono(custom["source"], SAMPLING_RATE)


def ctranslate2_dir(path: Path) -> Path:
    """A directory faster-whisper can open: ``path`` itself, or (for a model whose
    ``model.bin`` is split in parts, such as the whisper-base wheels) a cached copy
    with the parts joined."""
    path = Path(path)
    if (path / "model.bin").is_file():
        return path
    parts = sorted(path.glob("model.bin.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1] or 0))
    if not parts:
        raise DsrUserError(f"{path} is not a CTranslate2 model directory (no model.bin): faster-whisper cannot read it")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dsr" / "ctranslate2" / path.name
    target = cache / "model.bin"
    size = sum(p.stat().st_size for p in parts)
    if not (target.is_file() and target.stat().st_size == size):
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / "model.bin.tmp"
        with open(tmp, "wb") as out:
            for p in parts:
                out.write(p.read_bytes())
        tmp.replace(target)
    for f in path.iterdir():
        if not f.name.startswith("model.bin") and not (cache / f.name).exists():
            (cache / f.name).symlink_to(f.resolve())
    return cache


class FasterWhisperReference:
    """faster-whisper's greedy transcription of cuts, in dsr's decode loop."""

    def __init__(
        self, pretrained: str, num_threads: int = 0, compute_type: str = "float32", language: str = "en"
    ) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise DsrUserError(
                "the faster-whisper method needs the faster-whisper package: bash tools/setup.sh --whisper"
            ) from e
        from dsr.models.whisper.load import resolve_pretrained

        model_dir = ctranslate2_dir(resolve_pretrained(pretrained))
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=num_threads or 0)
        self.language = language

    def transcribe(self, audio: np.ndarray) -> str:
        segments, _ = self.model.transcribe(
            audio,
            beam_size=1,
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
            language=self.language,
        )
        return "".join(s.text for s in segments)
