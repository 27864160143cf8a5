"""Collect ``result.json`` files of every decoding run into one table."""

from __future__ import annotations

import json
from pathlib import Path

from dsr.utils import write_json_atomic, write_text_atomic


def collect_results(exp_dir: Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in sorted(Path(exp_dir).glob("decode/*/*/result.json"))]
    return sorted(rows, key=lambda r: (r["split"], r["method"]))


def write_results(exp_dir: Path, rows: list[dict]) -> Path:
    """Write results.json and a Markdown table results.md; returns the .md path."""
    write_json_atomic(Path(exp_dir) / "results.json", rows)
    lines = ["| method | split | checkpoint | WER % | errors / words | utts | RTF |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['split']} | {r['checkpoint']} | {r['wer']:.2f} | {r['errors']} / {r['ref_words']} "
            f"| {r['num_utts']} | {r['rtf']:.4f} |"
        )
    path = Path(exp_dir) / "results.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
