"""Scoring: WER/CER with alignments, reports."""

from dsr.evaluation.wer import ErrorStats, score, write_errs

__all__ = ["ErrorStats", "score", "write_errs"]
