"""``dsr prune``: structured pruning of a trained model (attention heads, feed-forward channels, whole
layers, subsampling channels)."""

from __future__ import annotations

from pathlib import Path

import typer

from dsr.cli.common import console
from dsr.errors import DsrUserError, OptionError


def prune(
    out: Path = typer.Option(..., "--out", help="The pruned checkpoint to write (e.g. exp/x-pruned/pruned.pt)."),
    exp_dir: Path | None = typer.Option(None, "--exp-dir", help="Experiment directory with checkpoints."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="One checkpoint file instead of --exp-dir."),
    epoch: int = typer.Option(0, "--epoch", help="With --exp-dir: prune epoch-E.pt (0 = the newest checkpoint)."),
    avg: int = typer.Option(1, "--avg", min=1, help="With --exp-dir: average over the last AVG epochs."),
    use_averaged_model: bool = typer.Option(
        True, "--use-averaged-model/--no-use-averaged-model", help="As dsr decode."
    ),
    ffn_keep: float = typer.Option(1.0, "--ffn-keep", help="Fraction of feed-forward channels kept, in (0, 1]."),
    drop_layers: int = typer.Option(0, "--drop-layers", min=0, help="Conformer layers to remove."),
    drop_heads: int = typer.Option(
        0, "--drop-heads", min=0, help="Attention heads to remove, over all (kept) layers; each layer keeps one."
    ),
    subsampling_keep: float = typer.Option(
        1.0, "--subsampling-keep", help="Fraction of each subsampling convolution's channels kept, in (0, 1]."
    ),
    cuts: Path | None = typer.Option(None, "--cuts", help="Cuts with features to score layers on (--drop-layers)."),
    num_utts: int = typer.Option(20, "--num-utts", min=1, help="Cuts of --cuts used to score layers."),
) -> None:
    """Remove the least important attention heads, feed-forward and subsampling channels (weight magnitude)
    and the layers that change their input least (on --cuts), and write a smaller checkpoint;
    fine-tune it with dsr train --init-from and the printed model flags, then decode or export
    it as any other.

    Example:

        dsr prune --exp-dir exp/conformer --epoch 10 --avg 3 --ffn-keep 0.5 --drop-layers 2 --drop-heads 4 --cuts data/fbank/synth_cuts_dev.jsonl.gz --out exp/pruned/pruned.pt

        dsr train --config conf/train.yaml --exp-dir exp/pruned --init-from exp/pruned/pruned.pt --ffn-dim 384 --num-encoder-layers 4 --encoder-layer-heads 3,2,3,4
    """
    from dsr.models.prune import PruneOptions, prune_checkpoint

    try:
        report = prune_checkpoint(out, PruneOptions(ffn_keep, drop_layers, drop_heads, subsampling_keep), exp_dir, checkpoint, epoch,
                                  avg, use_averaged_model, cuts, num_utts)  # fmt: skip
    except OptionError as e:  # prune_checkpoint's arguments and PruneOptions' fields are these flags' names
        raise DsrUserError(e.as_flags()) from None
    before, after = report["parameters_before"], report["parameters_after"]
    dropped = report.get("dropped_layers", [])
    heads = report["encoder_layer_heads"][1]
    console.print(f"[green]done[/] prune: {before:,} -> {after:,} parameters ({100 * after / before:.0f} %), "
                  f"ffn_dim {report['ffn_dim'][0]} -> {report['ffn_dim'][1]}, dropped layers {dropped}, "
                  f"heads per layer {'/'.join(map(str, heads))}, subsampling channels "
                  f"{'/'.join(map(str, report['subsampling_channels'][1]))} -> {out}; "
                  f"fine-tune with: dsr train --init-from {out} {report['finetune_flags']} ...")  # fmt: skip
