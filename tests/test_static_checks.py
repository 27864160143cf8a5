"""Static checks: the type checker over ``dsr/`` (mypy, pyproject.toml's [tool.mypy]) and the
linter and formatter over the code (ruff, [tool.ruff]).

Usage:
    .venv/bin/python -m pytest tests/test_static_checks.py -q     # needs the dev extra: bash tools/setup.sh --dev
    .venv/bin/python -m mypy dsr                                   # the same checks by hand
    .venv/bin/python -m ruff check dsr tests bench tools
    .venv/bin/python -m ruff format --check dsr tests bench tools  # `ruff format dsr tests bench tools` fixes it

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


@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed (bash tools/setup.sh --dev, or pip install -e '.[dev]')",
)
def test_mypy_reports_no_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "dsr"], cwd=ROOT, capture_output=True, text=True, check=False, timeout=900
    )
    assert proc.returncode == 0, f"mypy dsr failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"


RUFF_PATHS = ["dsr", "tests", "bench", "tools"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *RUFF_PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


_NO_RUFF = pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None,
    reason="ruff is not installed (bash tools/setup.sh --dev, or pip install -e '.[dev]')",
)


@_NO_RUFF
def test_ruff_lint_is_clean() -> None:
    proc = _ruff("check", "--output-format", "concise")
    assert proc.returncode == 0, f"ruff check failed:\n{proc.stdout}{proc.stderr}"


@_NO_RUFF
def test_code_is_ruff_formatted() -> None:
    proc = _ruff("format", "--check")
    assert proc.returncode == 0, (
        f"ruff format --check failed (run `ruff format {' '.join(RUFF_PATHS)}`):\n{proc.stdout}"
    )
