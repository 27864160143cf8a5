"""Inference stands apart from training: decoding, transcription, the LM stages and scoring
import no ``dsr.training`` module, statically (the source) and at run time (``-X importtime``
of ``dsr transcribe --help`` / ``dsr decode --help``, and importing the inference modules)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Every package but training itself and the CLI (whose ``dsr train`` command is training's front door).
INFERENCE_PACKAGES = ("decoding", "lm", "evaluation", "data", "models", "features", "lang", "synth", "export")


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import statement in ``path``, wherever it is (function-level too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            # ``from dsr import training`` names the package in the alias
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _is_training(module: str) -> bool:
    return module == "dsr.training" or module.startswith("dsr.training.")


def test_import_scanner_sees_function_level_and_from_imports(tmp_path):
    """The static check below would catch each way of importing training code."""
    src = tmp_path / "m.py"
    src.write_text("import os\nfrom dsr import training\n\ndef f():\n    from dsr.training.trainer import train\n")
    found = {m for _, m in _imported_modules(src) if _is_training(m)}
    assert {"dsr.training", "dsr.training.trainer"} <= found


@pytest.mark.parametrize("package", INFERENCE_PACKAGES)
def test_inference_packages_do_not_import_training(package):
    offenders = [
        f"{p.relative_to(ROOT)}:{line}: {m}"
        for p in sorted((ROOT / "dsr" / package).rglob("*.py"))
        for line, m in _imported_modules(p)
        if _is_training(m)
    ]
    assert not offenders, "inference code imports training code:\n" + "\n".join(offenders)


def _env() -> dict[str, str]:
    # This checkout first, whichever dsr is installed in the environment.
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}


def _importtime_modules(stderr: str) -> list[str]:
    """Module names of ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    names = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                names.append(name)
    return names


@pytest.mark.parametrize("command", ["transcribe", "decode"])
def test_inference_commands_import_no_training_module(command):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dsr.cli.main", command, "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = _importtime_modules(proc.stderr)
    assert "dsr.cli.decode" in modules and "dsr.errors" in modules  # the parser read real output
    assert [m for m in modules if _is_training(m)] == []


def test_train_command_is_still_listed_and_built_when_asked_for():
    """``dsr train`` is built lazily; ``dsr --help`` lists it and ``dsr train --help`` shows its flags."""
    listing = subprocess.run(
        [sys.executable, "-m", "dsr.cli.main", "--help"],
        capture_output=True,
        text=True,
        env={**_env(), "COLUMNS": "200"},
        cwd=ROOT,
        timeout=300,
    )
    assert listing.returncode == 0 and " train " in listing.stdout
    flags = subprocess.run(
        [sys.executable, "-m", "dsr.cli.main", "train", "--help"],
        capture_output=True,
        text=True,
        env={**_env(), "COLUMNS": "200"},
        cwd=ROOT,
        timeout=300,
    )
    assert flags.returncode == 0 and "--num-epochs" in flags.stdout and "--exp-dir" in flags.stdout


def test_loading_the_inference_modules_imports_no_training_module():
    """Not only ``--help``: the modules a decode or transcription runs import no training code."""
    code = (
        "import sys, dsr.decoding.decode, dsr.decoding.transcribe, dsr.decoding.pseudo_label, dsr.lm.rescore; "
        "print(sorted(m for m in sys.modules if m == 'dsr.training' or m.startswith('dsr.training.')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
