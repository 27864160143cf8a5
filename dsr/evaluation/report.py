"""Collect ``result.json`` files of every decoding run into one table (Markdown, JSON and rich).

The rows of other experiments can join the table (``dsr results --also-exp-dir``, e.g. a
speech-LLM beside the transducer it is compared with): each row records the exp dir it came
from, and a table of several exp dirs gets an ``exp`` column.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dsr.utils import write_json_atomic, write_text_atomic


def collect_results(exp_dir: Path, also: Sequence[Path] = ()) -> list[dict]:
    """Every ``result.json`` under ``exp_dir/decode`` and then under each ``also`` dir's, with the
    exp dir it came from (``"exp_dir"``); sorted by split, then exp dir (in the order given), then
    method."""
    rows = []
    for rank, d in enumerate([exp_dir, *also]):
        for p in sorted(Path(d).glob("decode/*/*/result.json")):
            rows.append((rank, {**json.loads(p.read_text()), "exp_dir": str(d)}))
    return [r for _, r in sorted(rows, key=lambda x: (x[1]["split"], x[0], x[1]["method"]))]


def several_exp_dirs(rows: list[dict]) -> bool:
    return len({r.get("exp_dir") for r in rows}) > 1


def row_label(row: dict, rows: list[dict]) -> str:
    """The row's method, prefixed by its exp dir's name when ``rows`` come from several exp dirs."""
    if several_exp_dirs(rows) and row.get("exp_dir"):
        return f"{Path(row['exp_dir']).name}: {row['method']}"
    return row["method"]


def _num(fmt: str) -> Callable[[Any], str]:
    # Results written before a field existed (or a field that does not apply, e.g. CUDA memory on the CPU) show "-".
    return lambda v: "-" if v is None else format(v, fmt)


def _latency(key: str) -> Callable[[dict], str]:
    return lambda r: _num(".0f")((r.get("latency_ms") or {}).get(key))


# (header, cell of a result row).
COLUMNS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("method", lambda r: r["method"]),
    ("split", lambda r: r["split"]),
    ("checkpoint", lambda r: r["checkpoint"]),
    ("WER %", lambda r: f"{r['wer']:.2f}"),
    ("CER %", lambda r: _num(".2f")(r.get("cer"))),
    ("errors / words", lambda r: f"{r['errors']} / {r['ref_words']}"),
    (
        "utts",
        lambda r: str(r["num_utts"]) + (f" (+{r['num_unreadable']} unreadable)" if r.get("num_unreadable") else ""),
    ),
    ("RTF", lambda r: f"{r['rtf']:.4f}"),
    ("p50 ms", _latency("p50")),  # per-utterance latency (see dsr.decoding.decode)
    ("p90 ms", _latency("p90")),
    ("peak RSS +MB", lambda r: _num(".0f")(r.get("peak_rss_delta_mb"))),
    ("CUDA peak MB", lambda r: _num(".0f")(r.get("cuda_peak_mb"))),
)


def table_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of the summary table; CUDA memory only when some run used CUDA,
    the exp dir only when the rows come from several."""
    columns = [c for c in COLUMNS if c[0] != "CUDA peak MB" or any(r.get("cuda_peak_mb") is not None for r in rows)]
    if several_exp_dirs(rows):
        columns.insert(0, ("exp", lambda r: r.get("exp_dir") or "-"))
    return [h for h, _ in columns], [[cell(r) for _, cell in columns] for r in rows]


def write_results(exp_dir: Path, rows: list[dict]) -> Path:
    """Write results.json and a Markdown table results.md; returns the .md path."""
    write_json_atomic(Path(exp_dir) / "results.json", rows)
    headers, cells = table_rows(rows)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    lines += rescoring_table([r for r in rows if "oracle_wer" in r])
    path = Path(exp_dir) / "results.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def rich_table(rows: list[dict], title: str) -> Any:
    """The same table as results.md, as a :class:`rich.table.Table` for the terminal (a
    checkpoint shared by every row moves into the title, to leave the numbers room)."""
    from rich.table import Table

    headers, cells = table_rows(rows)
    checkpoints = {r["checkpoint"] for r in rows}
    if len(checkpoints) == 1:
        drop = headers.index("checkpoint")
        headers, cells = headers[:drop] + headers[drop + 1 :], [c[:drop] + c[drop + 1 :] for c in cells]
        title = f"{title} ({checkpoints.pop()})"
    table = Table(title=title)
    for h in headers:
        table.add_column(h, justify="left" if h in ("exp", "method", "split", "checkpoint") else "right")
    for row in cells:
        table.add_row(*row)
    return table


def rescoring_table(rows: list[dict]) -> list[str]:
    """Markdown lines comparing first pass, n-best oracle and LLM-rescored WER ([] without rescoring rows).

    The LLM time counts only texts scored in that run (saved scores are free), so it is
    reported next to the first pass's decoding time of the same split.  After an n-best
    expansion (``dsr decode --expand-lexicon``) the oracle of the search's own hypotheses
    follows in brackets; after tuning, so does the WER of the best weights without the LLM.
    """
    if not rows:
        return []
    lines = [
        "",
        "N-best rescoring (dsr rescore):",
        "",
        "| method | LLM | split | first-pass WER % | oracle WER % | rescored WER % | rel. reduction % | weights "
        "| decode s | LLM s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        first, res = r["first_pass_wer"], r["rescored_wer"]
        rel = 100.0 * (first - res) / first if first > 0 else 0.0
        w = r.get("weights", {})
        weights = f"λ={w.get('lm_weight', 0):g} β={w.get('length_bonus', 0):g}"
        if w.get("ctc_weight"):
            weights += f" ctc={w['ctc_weight']:g}"
        if w.get("attention_weight"):
            weights += f" att={w['attention_weight']:g}"
        decode_s = r.get("decode_seconds")
        oracle = f"{r['oracle_wer']:.2f}"
        searched = r.get("search_oracle_wer")
        if searched is not None and searched != r["oracle_wer"]:
            oracle += f" ({searched:.2f} before expansion)"
        rescored = f"{res:.2f}"
        if r.get("without_llm_wer") is not None:
            rescored += f" ({r['without_llm_wer']:.2f} without the LLM)"
        lines.append(
            f"| {r['method']} | {llm_label(r.get('llm', ''))} | {r['split']} | {first:.2f} "
            f"| {oracle} | {rescored} | {rel:.1f} | {weights} | {'-' if decode_s is None else f'{decode_s:.1f}'} | {r['llm_seconds']:.1f} |"
        )
    return lines


def llm_label(signature: str) -> str:
    """Short name of the LLM in a scorer signature: the model file or directory name, plus the
    sentence-boundary tokens when they were chosen explicitly (``<path>|...|eos=1:<bos>,<eos>``)."""
    name = Path(signature.split("|", 1)[0]).name
    _, _, boundary = signature.partition("|eos=")
    _, colon, tokens = boundary.partition(":")
    # Markdown tables split cells at '|', which the tokens (<|endoftext|>) contain.
    return (f"{name} ({tokens})" if colon else name).replace("|", "\\|")
