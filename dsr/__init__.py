"""dsr: a speech-recognition training toolkit (pruned RNN-T + CTC, LLM n-best rescoring).

``dsr.Recognizer`` is the Python API for inference (:mod:`dsr.decoding.recognizer`); it is
imported on first use, so ``import dsr`` stays cheap (no torch, no lhotse).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Recognizer", "Transcript", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Recognizer", "Transcript"):
        from dsr.decoding import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'dsr' has no attribute {name!r}")
