"""``dsr whisper convert`` and ``dsr whisper info``: pretrained Whisper weights in dsr's format."""

from __future__ import annotations

from pathlib import Path

import typer

from dsr.cli.common import already_done, console, finish

app = typer.Typer(
    help="Pretrained Whisper models: read OpenAI .pt files, Hugging Face and CTranslate2 (faster-whisper) "
    "directories, and write dsr's format.",
    no_args_is_help=True,
)

_SRC_HELP = (
    "An OpenAI .pt file, a Hugging Face / CTranslate2 / dsr model directory, or a pretrained name: "
    "whisper-tiny.en, whisper-base (bash tools/setup.sh --whisper)."
)


@app.command("convert")
def convert(
    src: str = typer.Argument(..., help=_SRC_HELP),
    out_dir: Path = typer.Argument(..., help="Where model.pt and tokenizer.json go."),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="A tokenizer.json to use instead of the source's (OpenAI .pt files have none)."
    ),
    force: bool = typer.Option(False, "--force", help="Convert again even if already done."),
) -> None:
    """Write a Whisper model in dsr's format: OUT_DIR/model.pt and OUT_DIR/tokenizer.json.

    model.pt is an OpenAI checkpoint (dims, model_state_dict in float32) plus dsr's metadata: the
    source and the tokens faster-whisper suppresses.

    Example:

        dsr whisper convert whisper-tiny.en exp/whisper/tiny.en

        dsr whisper convert ~/models/tiny.pt exp/whisper/tiny --tokenizer ~/models/tokenizer.json
    """
    from dsr.models.whisper.load import load_whisper, save_whisper

    if already_done(out_dir, "whisper-convert", force):
        return
    loaded = load_whisper(src, tokenizer=tokenizer)
    path = save_whisper(loaded, out_dir)
    if loaded.tokenizer_json is None:
        console.print(f"[yellow]warning[/] {src} has no tokenizer; {out_dir} has none either (pass --tokenizer FILE)")
    finish(
        out_dir,
        "whisper-convert",
        f"{loaded.summary()} -> {path}",
        {"source": loaded.source, "source_format": loaded.source_format, "dims": loaded.dims.to_dict()},
    )


@app.command("info")
def info(
    src: str = typer.Argument(..., help=_SRC_HELP),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="A tokenizer.json to use instead of the source's."),
) -> None:
    """Print a Whisper model's format, dimensions, parameter count and special tokens.

    Example:

        dsr whisper info whisper-base
    """
    from dsr.models.whisper.load import load_whisper

    loaded = load_whisper(src, tokenizer=tokenizer)
    lines = [
        f"name: {loaded.name}",
        f"source: {loaded.source}",
        f"format: {loaded.source_format} ({loaded.stored_dtype})",
        *([f"converted from: {loaded.origin}"] if loaded.origin else []),
        f"parameters: {loaded.num_params:,}",
        *(f"{k}: {v}" for k, v in loaded.dims.to_dict().items()),
        f"multilingual: {loaded.multilingual}",
        f"tokenizer: {'yes' if loaded.tokenizer_json is not None else 'none'}",
        f"suppress_tokens: {len(loaded.suppress_tokens)} ids",
        f"suppress_blank: {loaded.suppress_blank}",
    ]
    if loaded.tokenizer_json is not None:
        tok = loaded.tokenizer()
        lines.append(f"prompt: {tok.sot_sequence('en')}")
    typer.echo("\n".join(lines))
