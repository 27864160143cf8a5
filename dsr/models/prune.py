"""Structured pruning of a trained Conformer: feed-forward channels and whole layers.

Both keep the model a plain dsr model of a smaller configuration (``ffn_dim``,
``num_encoder_layers``), so the pruned checkpoint loads, trains (``dsr train --init-from``),
decodes and exports (``dsr export onnx``) like any other.

Importance measures (stated, so that results can be compared):

* **Feed-forward channel** j of a module ``Linear(D, F) -> SiLU -> Linear(F, D)``:
  ``||W_in[j, :]||_2 * ||W_out[:, j]||_2``, the weight-magnitude bound on how much the channel
  can move the module's output per unit of input.  Each of a layer's two feed-forward modules
  keeps its own top ``round(keep * F)`` channels (the same count everywhere, so one
  ``ffn_dim`` describes the model).
* **Layer**: how much it changes its input on real features: the mean over valid frames of
  ``1 - cos(x_in, x_out)`` of the layer's input and output.  The layers that change the
  residual stream least are dropped; the next layer then reads the previous one's output.

Attention heads are not pruned: dsr's attention derives the head size from
``encoder_dim / num_heads``, so fewer heads of the same size is not a configuration the
model can be rebuilt from without a per-layer head count in ``ModelConfig``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsr.models.config import ModelConfig, build_model, count_parameters
from dsr.models.conformer import _FeedForward
from dsr.models.transducer import HybridTransducer


@dataclass(frozen=True)
class PruneOptions:
    """``ffn_keep``: fraction of feed-forward channels kept, in (0, 1]; ``drop_layers``: how
    many Conformer layers to remove (needs features to score them)."""

    ffn_keep: float = 1.0
    drop_layers: int = 0

    def validate(self, cfg: ModelConfig) -> None:
        """ValueError naming the option when it cannot apply to a model of ``cfg``."""
        if cfg.encoder_type != "conformer":
            raise ValueError(f"only Conformer encoders can be pruned (got encoder_type {cfg.encoder_type!r})")
        if not 0.0 < self.ffn_keep <= 1.0:
            raise ValueError(f"ffn_keep must be in (0, 1] (got {self.ffn_keep})")
        if round(self.ffn_keep * cfg.ffn_dim) < 1:
            raise ValueError(f"ffn_keep {self.ffn_keep} keeps no channel of ffn_dim {cfg.ffn_dim}")
        if not 0 <= self.drop_layers < cfg.num_encoder_layers:
            raise ValueError(
                f"drop_layers must be in [0, {cfg.num_encoder_layers - 1}] for {cfg.num_encoder_layers} layers "
                f"(got {self.drop_layers})"
            )


def ffn_channel_importance(ffn: _FeedForward) -> torch.Tensor:
    """(F,) importance of the hidden channels of a ``_FeedForward`` module (see module docstring)."""
    lin_in, lin_out = ffn.net[1], ffn.net[3]
    assert isinstance(lin_in, nn.Linear) and isinstance(lin_out, nn.Linear)  # _FeedForward: LN, Linear, SiLU, Linear
    w_in, w_out = lin_in.weight, lin_out.weight  # (F, D), (D, F)
    return w_in.norm(dim=1) * w_out.norm(dim=0)


@torch.no_grad()
def layer_importance(model: HybridTransducer, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(num_layers,) mean ``1 - cos`` between each Conformer layer's input and output frames.

    Args:
        features: (N, T, F) raw features (the model normalises them).
        lengths: (N,) valid frames.
    """
    encoder = model.conformer_encoder()
    scores: list[torch.Tensor] = []
    valid: dict[str, torch.Tensor] = {}

    def hook(layer: nn.Module, args: tuple, output: torch.Tensor) -> None:
        x_in = args[0]
        cos = nn.functional.cosine_similarity(x_in, output, dim=-1)  # (N, T')
        mask = valid["mask"]
        scores.append(((1.0 - cos) * mask).sum() / mask.sum())

    t_out = int(encoder.output_lengths(torch.tensor(features.size(1))))
    enc_lens = encoder.output_lengths(lengths)
    valid["mask"] = (torch.arange(t_out)[None, :] < enc_lens[:, None]).float()
    handles = [layer.register_forward_hook(hook) for layer in encoder.layers]
    try:
        model.encode(features, lengths)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(scores)


@torch.no_grad()
def prune_model(
    model: HybridTransducer,
    cfg: ModelConfig,
    options: PruneOptions,
    features: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
) -> tuple[HybridTransducer, ModelConfig, dict[str, Any]]:
    """A smaller copy of ``model``: feed-forward channels and layers removed by importance.

    Args:
        model: the trained model (not modified).
        cfg: its configuration.
        options: what to remove.
        features, lengths: (N, T, F) features and (N,) lengths to score layers with; needed
            when ``options.drop_layers`` > 0.

    Returns:
        The pruned model (eval mode), its configuration, and a report: the dropped layer
        indices, the layer scores, parameter counts before and after.
    """
    options.validate(cfg)
    if options.drop_layers and (features is None or lengths is None):
        raise ValueError("dropping layers needs features to score them (features, lengths)")
    model = model.eval()
    report: dict[str, Any] = {"parameters_before": count_parameters(model)}
    keep_layers = list(range(cfg.num_encoder_layers))
    if options.drop_layers:
        assert features is not None and lengths is not None
        scores = layer_importance(model, features, lengths)
        dropped = sorted(scores.argsort()[: options.drop_layers].tolist())
        keep_layers = [i for i in keep_layers if i not in dropped]
        report["layer_scores"] = [round(float(s), 6) for s in scores]
        report["dropped_layers"] = dropped
    new_ffn = round(options.ffn_keep * cfg.ffn_dim)
    new_cfg = replace(cfg, ffn_dim=new_ffn, num_encoder_layers=len(keep_layers))
    pruned = build_model(new_cfg).eval()
    state = copy.deepcopy(model.state_dict())
    new_state: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("encoder.layers."):
            _, _, old, rest = key.split(".", 3)
            if int(old) not in keep_layers:
                continue
            key = f"encoder.layers.{keep_layers.index(int(old))}.{rest}"
        new_state[key] = value
    for i, kept in enumerate(keep_layers):
        for name in ("ffn1", "ffn2"):
            ffn = getattr(model.conformer_encoder().layers[kept], name)
            # Kept channels in their original order (any order computes the same function).
            keep = ffn_channel_importance(ffn).argsort(descending=True)[:new_ffn].sort().values
            prefix = f"encoder.layers.{i}.{name}.net"
            new_state[f"{prefix}.1.weight"] = ffn.net[1].weight[keep].clone()
            new_state[f"{prefix}.1.bias"] = ffn.net[1].bias[keep].clone()
            new_state[f"{prefix}.3.weight"] = ffn.net[3].weight[:, keep].clone()
    pruned.load_state_dict(new_state)
    report["parameters_after"] = count_parameters(pruned)
    report["ffn_dim"] = [cfg.ffn_dim, new_ffn]
    report["num_encoder_layers"] = [cfg.num_encoder_layers, len(keep_layers)]
    return pruned, new_cfg, report


def prune_checkpoint(
    out: Path,
    options: PruneOptions,
    exp_dir: Path | None = None,
    checkpoint: Path | None = None,
    epoch: int = 0,
    avg: int = 1,
    use_averaged_model: bool = True,
    cuts: Path | None = None,
    num_utts: int = 20,
) -> dict[str, Any]:
    """Prune the model of ``exp_dir`` (epoch/avg as ``dsr decode``) or ``checkpoint`` and write
    ``out``, a checkpoint that ``dsr decode --checkpoint``-style loaders, ``dsr train --init-from``
    and ``dsr export onnx --checkpoint`` read.  Layers are scored on the first ``num_utts``
    cuts of ``cuts`` (features computed by ``dsr features``).  Returns the report (also stored
    in the checkpoint as ``prune_report``), with ``finetune_flags``: the ``dsr train`` model
    flags that rebuild the pruned shape.
    """
    from dsr.errors import DsrUserError
    from dsr.features.frontend import check_cuts_frontend, frontend_from_dict, frontend_to_dict
    from dsr.models.checkpoint import load_checkpoint, resolve_model_checkpoint, save_checkpoint

    if (exp_dir is None) == (checkpoint is None):
        raise DsrUserError("give exactly one of --exp-dir (with --epoch/--avg) or --checkpoint")
    if checkpoint is not None:
        ckpt, tag = load_checkpoint(checkpoint), Path(checkpoint).stem
    else:
        ckpt, tag = resolve_model_checkpoint(Path(exp_dir), epoch, avg, use_averaged_model)  # type: ignore[arg-type]
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    try:
        options.validate(cfg)
    except ValueError as e:
        raise DsrUserError(f"cannot prune {exp_dir or checkpoint}: {e}") from e
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    frontend = frontend_to_dict(frontend_from_dict(ckpt.get("frontend") or {}))
    features = lengths = None
    if options.drop_layers:
        if cuts is None:
            raise DsrUserError("--drop-layers scores the layers on real features: pass --cuts (e.g. the dev cuts)")
        from lhotse import CutSet

        if not Path(cuts).is_file():
            raise DsrUserError(f"--cuts {cuts} does not exist; run dsr features first")
        cut_list = [c for c in CutSet.from_file(cuts) if c.has_features][:num_utts]
        if not cut_list:
            raise DsrUserError(f"--cuts {cuts} has no cut with features; run dsr features first")
        check_cuts_frontend(cut_list, frontend, str(cuts), f"the model of {exp_dir or checkpoint}")
        feats = [torch.from_numpy(c.load_features()) for c in cut_list]
        lengths = torch.tensor([f.size(0) for f in feats])
        features = nn.utils.rnn.pad_sequence(feats, batch_first=True)
    pruned, new_cfg, report = prune_model(model, cfg, options, features, lengths)
    report["pruned_from"] = f"{exp_dir or checkpoint} ({tag})"
    report["importance"] = "ffn: ||W_in[j]|| * ||W_out[:, j]||; layers: mean 1 - cos(input, output)"
    report["finetune_flags"] = f"--ffn-dim {new_cfg.ffn_dim} --num-encoder-layers {new_cfg.num_encoder_layers}"
    save_checkpoint(Path(out), {"model_config": new_cfg.to_dict(), "model": pruned.state_dict(),
                                "frontend": frontend, "prune_report": report})  # fmt: skip
    return report
