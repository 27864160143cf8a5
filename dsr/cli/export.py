"""``dsr export onnx``: a trained model as ONNX files in sherpa-onnx's layout."""

from __future__ import annotations

from pathlib import Path

import typer

from dsr.cli.common import already_done, finish
from dsr.errors import DsrUserError, OptionError

app = typer.Typer(help="Deployable exports of a trained model.", no_args_is_help=True)


@app.command("onnx")
def onnx(
    out_dir: Path = typer.Option(..., "--out-dir", help="Where the .onnx files and tokens.txt go (e.g. exp/x/export)."),
    lang_dir: Path = typer.Option(..., "--lang-dir", help="The lang dir the model was trained with (its tokens.txt)."),
    exp_dir: Path | None = typer.Option(None, "--exp-dir", help="Experiment directory with checkpoints."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="One checkpoint file instead of --exp-dir."),
    epoch: int = typer.Option(0, "--epoch", help="With --exp-dir: export epoch-E.pt (0 = the newest checkpoint)."),
    avg: int = typer.Option(1, "--avg", help="With --exp-dir: average the model over the last AVG epochs."),
    use_averaged_model: bool = typer.Option(
        True,
        "--use-averaged-model/--no-use-averaged-model",
        help="Average every model the trainer sampled during the last AVG epochs (as dsr decode).",
    ),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (14-21)."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Also write *.int8.onnx (int8 MatMul weights)."),
    streaming: bool = typer.Option(
        False,
        "--streaming",
        help="A causal model's heads in sherpa-onnx's streaming (OnlineRecognizer) layouts: the transducer as an "
        "online conformer transducer (encoder/decoder/joiner.onnx), the CTC head as an online zipformer2 CTC "
        "model (ctc.onnx).",
    ),
    chunk_ms: float = typer.Option(
        320.0, "--chunk-ms", help="With --streaming: audio per chunk (a multiple of 40 ms)."
    ),
    left_context_chunks: int | None = typer.Option(
        None, "--left-context-chunks", help="With --streaming: chunks of attention left context (default: the model's)."
    ),
    force: bool = typer.Option(False, "--force", help="Export again even if OUT_DIR has a finished export."),
) -> None:
    """Write encoder.onnx, decoder.onnx, joiner.onnx (transducer), ctc.onnx (CTC head), their
    int8 variants and tokens.txt, in the layout sherpa-onnx's offline recognisers read; with
    --streaming, the same files for a causal model in the layouts of its OnlineRecognizer
    (the transducer as an online conformer transducer, ctc.onnx as an online zipformer2 CTC model).

    Example:

        dsr export onnx --exp-dir exp/conformer --epoch 10 --avg 3 --lang-dir data/lang_bpe_256 --out-dir exp/conformer/export

    Then, with sherpa-onnx (pip install sherpa-onnx):

        sherpa-onnx-offline --tokens=exp/conformer/export/tokens.txt --encoder=exp/conformer/export/encoder.onnx
        --decoder=exp/conformer/export/decoder.onnx --joiner=exp/conformer/export/joiner.onnx some.wav

    Streaming (a model trained with --causal --chunk-sizes), as dsr decode --streaming --chunk-ms 320 runs it:

        dsr export onnx --exp-dir exp/causal --lang-dir data/lang_bpe_256 --out-dir exp/causal/export-streaming-320ms --streaming --chunk-ms 320 --left-context-chunks 4

    Then, with sherpa-onnx, the transducer or the CTC head (a model trained with --no-use-transducer has only ctc.onnx):

        sherpa-onnx --tokens=exp/causal/export-streaming-320ms/tokens.txt --encoder=exp/causal/export-streaming-320ms/encoder.onnx
        --decoder=exp/causal/export-streaming-320ms/decoder.onnx --joiner=exp/causal/export-streaming-320ms/joiner.onnx some.wav

        sherpa-onnx --tokens=exp/causal/export-streaming-320ms/tokens.txt --zipformer2-ctc-model=exp/causal/export-streaming-320ms/ctc.onnx some.wav
    """
    from dsr.export.onnx import OnnxExportOptions, export_onnx

    if already_done(out_dir, "export-onnx", force):
        return
    options = OnnxExportOptions(
        out_dir=out_dir, lang_dir=lang_dir, exp_dir=exp_dir, checkpoint=checkpoint, epoch=epoch, avg=avg,
        use_averaged_model=use_averaged_model, opset=opset, int8=int8, streaming=streaming, chunk_ms=chunk_ms,
        left_context_chunks=left_context_chunks,
    )  # fmt: skip
    try:
        result = export_onnx(options)
    except OptionError as e:  # the options' fields are this command's flags
        raise DsrUserError(e.as_flags()) from None
    finish(
        out_dir,
        "export-onnx",
        result.summary(),
        {"files": sorted(result.files), "opset": opset, "streaming": streaming},
    )
