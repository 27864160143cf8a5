"""dsr: a speech-recognition training toolkit (pruned RNN-T + CTC, LLM n-best rescoring)."""

__version__ = "0.1.0"
