"""Write public-domain English text for TTS pretraining (dsr prepare synth --text-source file).

Usage:
    python tools/public_domain_text.py --out data/pd_text.txt
    dsr prepare synth --text-source file --text-file data/pd_text.txt \
        --exclude-text ../shared/data/arctic_cathy/transcripts.tsv --num-train 8000 --num-dev 200 --num-test 0

Sources, both in Debian main (tools/setup.sh --pretrain-text installs them):
  * the King James Bible (package bible-kjv-text, read with its `bible` tool): public domain;
  * the `fortunes` collection (package fortunes, files under /usr/share/games/fortunes,
    the offensive `off/` subfolder left out), free text.
Never add the CMU ARCTIC prompt list or any evaluation transcripts here: `--exclude-text`
keeps an evaluation set's sentences out of what is synthesised.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

FORTUNES_DIR = Path("/usr/share/games/fortunes")


def bible_lines() -> list[str]:
    """Every verse, without its reference (``Ge1:1 In the beginning ...`` -> ``In the beginning ...``)."""
    try:
        out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True).stdout
    except FileNotFoundError as e:
        raise SystemExit(
            "the `bible` tool is missing: apt-get install bible-kjv (or tools/setup.sh --pretrain-text)"
        ) from e
    return [line.split(" ", 1)[1] for line in out.splitlines() if " " in line]


def fortune_lines() -> list[str]:
    """Paragraphs of the fortune files (entries are separated by ``%`` lines), one per line."""
    if not FORTUNES_DIR.is_dir():
        raise SystemExit(f"{FORTUNES_DIR} is missing: apt-get install fortunes (or tools/setup.sh --pretrain-text)")
    lines: list[str] = []
    for path in sorted(p for p in FORTUNES_DIR.iterdir() if p.is_file() and not p.suffix):
        text = path.read_text(encoding="utf-8", errors="replace")
        lines += [" ".join(entry.split()) for entry in text.split("\n%\n") if entry.strip()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="text file to write (one passage per line)")
    args = parser.parse_args()
    lines = bible_lines() + fortune_lines()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {len(lines)} passages to {args.out}")


if __name__ == "__main__":
    main()
