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
    lines += rescoring_table([r for r in rows if "oracle_wer" in r])
    path = Path(exp_dir) / "results.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def rescoring_table(rows: list[dict]) -> list[str]:
    """Markdown lines comparing first pass, n-best oracle and LLM-rescored WER ([] without rescoring rows).

    The LLM time counts only texts scored in that run (saved scores are free), so it is
    reported next to the first pass's decoding time of the same split.
    """
    if not rows:
        return []
    lines = ["", "N-best rescoring (dsr rescore):", "",
             "| method | LLM | split | first-pass WER % | oracle WER % | rescored WER % | rel. reduction % | weights "
             "| decode s | LLM s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        first, res = r["first_pass_wer"], r["rescored_wer"]
        rel = 100.0 * (first - res) / first if first > 0 else 0.0
        w = r.get("weights", {})
        weights = f"λ={w.get('lm_weight', 0):g} β={w.get('length_bonus', 0):g}"
        if w.get("ctc_weight"):
            weights += f" ctc={w['ctc_weight']:g}"
        decode_s = r.get("decode_seconds")
        lines.append(f"| {r['method']} | {llm_label(r.get('llm', ''))} | {r['split']} | {first:.2f} "
                     f"| {r['oracle_wer']:.2f} | {res:.2f} | {rel:.1f} | {weights} | {'-' if decode_s is None else f'{decode_s:.1f}'} | {r['llm_seconds']:.1f} |")
    return lines


def llm_label(signature: str) -> str:
    """Short name of the LLM in a scorer signature: the model file or directory name, plus the
    sentence-boundary tokens when they were chosen explicitly (``<path>|...|eos=1:<bos>,<eos>``)."""
    name = Path(signature.split("|", 1)[0]).name
    _, _, boundary = signature.partition("|eos=")
    _, colon, tokens = boundary.partition(":")
    # Markdown tables split cells at '|', which the tokens (<|endoftext|>) contain.
    return (f"{name} ({tokens})" if colon else name).replace("|", "\\|")
