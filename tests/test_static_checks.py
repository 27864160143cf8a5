"""Static checks over ``dsr/``: the type checker (mypy, configured in pyproject.toml's [tool.mypy]).

Usage:
    .venv/bin/python -m pytest tests/test_static_checks.py -q     # needs the dev extra: bash tools/setup.sh --dev
    .venv/bin/python -m mypy dsr                                   # the same check by hand

mypy runs with this interpreter (``python -m mypy``), so it sees the installed torch, numpy and
transformers with their own annotations; a cold run takes ~50 s on one core (then its cache).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (bash tools/setup.sh --dev, or pip install -e '.[dev]')")
def test_mypy_reports_no_errors() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "dsr"], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=900)
    assert proc.returncode == 0, f"mypy dsr failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
