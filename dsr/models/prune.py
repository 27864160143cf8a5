"""Structured pruning of a trained Conformer: attention heads, feed-forward channels, whole layers
and the channels of the convolutional subsampling.

All keep the model a plain dsr model of a smaller configuration (``encoder_layer_heads``,
``ffn_dim``, ``num_encoder_layers``), so the pruned checkpoint loads, trains (``dsr train
--init-from``), decodes and exports (``dsr export onnx``) like any other.

Importance measures (stated, so that results can be compared):

* **Feed-forward channel** j of a module ``Linear(D, F) -> SiLU -> Linear(F, D)``:
  ``||W_in[j, :]||_2 * ||W_out[:, j]||_2``, the weight-magnitude bound on how much the channel
  can move the module's output per unit of input.  Each of a layer's two feed-forward modules
  keeps its own top ``round(keep * F)`` channels (the same count everywhere, so one
  ``ffn_dim`` describes the model).
* **Layer**: how much it changes its input on real features: the mean over valid frames of
  ``1 - cos(x_in, x_out)`` of the layer's input and output.  The layers that change the
  residual stream least are dropped; the next layer then reads the previous one's output.
* **Attention head** h of a layer: ``||W_o[:, h] W_v[h] diag(g)||_2``, the spectral norm of
  the head's value-to-output path from the attention's LayerNorm'd input (``g`` its gain):
  the most the head can add to the residual stream per unit of normalised input, whatever
  it attends to (attention weights are a convex combination).  The heads are ranked across
  the (kept) layers, which all read a LayerNorm'd stream (every layer ends with one), and
  the lowest go, each layer keeping at least one; so layers may keep different numbers of
  heads (``ModelConfig.encoder_layer_heads``), each of the original head size.  What a
  removed head adds regardless of its input, ``W_o[:, h] (W_v[h] b + b_v[h])`` (``b`` the
  LayerNorm's bias), is folded into the output projection's bias, so a head whose
  ``W_o[:, h] W_v[h] diag(g)`` is zero (score 0) is removed exactly.
* **Subsampling channel** (the front end ``Conv2d(1, C1) -> SiLU -> Conv2d(C1, C2) -> SiLU ->
  Linear(C2 F', D)``): the same bound as a feed-forward channel, ``||W_in[c]||_2 *
  ||W_out[:, c]||_2`` over all of the channel's weights: for a second-convolution channel its
  3x3 kernels and its F' columns of the linear projection; then, among the kept second-layer
  channels, for a first-convolution channel its kernel and its kernels in the second
  convolution.  A channel whose kernels and bias are zero outputs SiLU(0) = 0 and is removed
  exactly.  This front end runs at the input frame rate, so on a small model it costs as much
  as one or two Conformer layers: the second convolution's ``C1 * C2`` products per position
  dominate it, and keeping half of both channels divides that by four.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsr.errors import OptionError
from dsr.models.config import ModelConfig, build_model, count_parameters
from dsr.models.conformer import ConformerLayer, _FeedForward, _SelfAttention
from dsr.models.subsampling import Conv2dSubsampling
from dsr.models.transducer import HybridTransducer


@dataclass(frozen=True)
class PruneOptions:
    """``ffn_keep``: fraction of feed-forward channels kept, in (0, 1]; ``drop_layers``: how
    many Conformer layers to remove (needs features to score them); ``drop_heads``: how many
    attention heads to remove from the (kept) layers together, each layer keeping one or more;
    ``subsampling_keep``: fraction of each subsampling convolution's channels kept, in (0, 1]."""

    ffn_keep: float = 1.0
    drop_layers: int = 0
    drop_heads: int = 0
    subsampling_keep: float = 1.0

    def validate(self, cfg: ModelConfig) -> None:
        """:class:`~dsr.errors.OptionError` (a ValueError) naming the option when it cannot
        apply to a model of ``cfg``."""
        if cfg.encoder_type != "conformer":
            raise OptionError(f"only Conformer encoders can be pruned (got encoder_type {cfg.encoder_type!r})")
        if not 0.0 < self.ffn_keep <= 1.0:
            raise OptionError(f"{{ffn_keep}} must be in (0, 1] (got {self.ffn_keep})")
        if not 0.0 < self.subsampling_keep <= 1.0:
            raise OptionError(f"{{subsampling_keep}} must be in (0, 1] (got {self.subsampling_keep})")
        if min(round(self.subsampling_keep * c) for c in cfg.subsampling_channels) < 1:
            raise OptionError(
                f"{{subsampling_keep}} {self.subsampling_keep} keeps no channel of subsampling_channels "
                f"{tuple(cfg.subsampling_channels)}"
            )
        if round(self.ffn_keep * cfg.ffn_dim) < 1:
            raise OptionError(f"{{ffn_keep}} {self.ffn_keep} keeps no channel of ffn_dim {cfg.ffn_dim}")
        if not 0 <= self.drop_layers < cfg.num_encoder_layers:
            raise OptionError(
                f"{{drop_layers}} must be in [0, {cfg.num_encoder_layers - 1}] for {cfg.num_encoder_layers} layers "
                f"(got {self.drop_layers})"
            )
        # Whichever layers are dropped, the kept ones can lose at least this many heads.
        removable = sorted(h - 1 for h in layer_heads(cfg))[: cfg.num_encoder_layers - self.drop_layers]
        if not 0 <= self.drop_heads <= sum(removable):
            raise OptionError(
                f"{{drop_heads}} must be in [0, {sum(removable)}] for {cfg.num_encoder_layers - self.drop_layers} "
                f"kept layers of {'/'.join(map(str, layer_heads(cfg)))} heads, each keeping one (got {self.drop_heads})"
            )


def layer_heads(cfg: ModelConfig) -> tuple[int, ...]:
    """The attention heads of each Conformer layer of a model of ``cfg``."""
    return cfg.encoder_layer_heads or (cfg.num_heads,) * cfg.num_encoder_layers


def head_importance(attn: _SelfAttention) -> torch.Tensor:
    """(H,) importance of the heads of one attention module: the spectral norm of each head's
    ``W_o[:, h] W_v[h] diag(g)`` (see module docstring)."""
    h, dh = attn.num_heads, attn.head_dim
    d = attn.norm.weight.numel()
    w_v = attn.qkv.weight[2 * h * dh :].view(h, dh, d) * attn.norm.weight  # (H, Dh, D)
    w_o = attn.out.weight.view(d, h, dh).transpose(0, 1)  # (H, D, Dh)
    return torch.linalg.matrix_norm(w_o @ w_v, ord=2)


def _head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(K,) head indices -> (K Dh,) their rows of one of q/k/v (their columns of ``out``)."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).flatten()


def prune_heads(attn: _SelfAttention, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """The weights of ``attn`` with only the heads ``keep`` (sorted indices), by parameter name
    within the module (``qkv.weight``, ...); the removed heads' constant output is folded into
    ``out.bias``."""
    h, dh = attn.num_heads, attn.head_dim
    removed = torch.tensor([i for i in range(h) if i not in set(keep.tolist())], dtype=torch.long)
    kept_rows, removed_rows = _head_rows(keep, dh), _head_rows(removed, dh)
    qkv_rows = torch.cat([kept_rows + part * h * dh for part in range(3)])
    w_qkv, b_qkv = attn.qkv.weight, attn.qkv.bias
    # Attention weights sum to 1, so a removed head's value bias (and the LayerNorm's bias
    # through W_v) reaches the output unchanged, whatever the head attends to.
    constant_v = w_qkv[2 * h * dh + removed_rows] @ attn.norm.bias + b_qkv[2 * h * dh + removed_rows]
    out_bias = attn.out.bias + attn.out.weight[:, removed_rows] @ constant_v if len(removed) else attn.out.bias
    return {
        "qkv.weight": w_qkv[qkv_rows].clone(), "qkv.bias": b_qkv[qkv_rows].clone(),
        "out.weight": attn.out.weight[:, kept_rows].clone(), "out.bias": out_bias.clone(),
    }  # fmt: skip


def heads_to_drop(scores: list[torch.Tensor], count: int) -> list[list[int]]:
    """The ``count`` lowest-scoring heads over all layers, each layer keeping at least one:
    per layer, the sorted indices of its dropped heads.  ``scores``: (H_i,) per layer."""
    ranked = sorted((float(s), layer, head) for layer, layer_scores in enumerate(scores)
                    for head, s in enumerate(layer_scores))  # fmt: skip
    dropped: list[list[int]] = [[] for _ in scores]
    for _, layer, head in ranked:
        if sum(map(len, dropped)) == count:
            break
        if len(dropped[layer]) < len(scores[layer]) - 1:
            dropped[layer].append(head)
    if sum(map(len, dropped)) != count:
        raise ValueError(f"cannot drop {count} heads from layers of {[len(s) for s in scores]} heads keeping one each")
    return [sorted(d) for d in dropped]


def ffn_channel_importance(ffn: _FeedForward) -> torch.Tensor:
    """(F,) importance of the hidden channels of a ``_FeedForward`` module (see module docstring)."""
    lin_in, lin_out = ffn.net[1], ffn.net[3]
    assert isinstance(lin_in, nn.Linear) and isinstance(lin_out, nn.Linear)  # _FeedForward: LN, Linear, SiLU, Linear
    w_in, w_out = lin_in.weight, lin_out.weight  # (F, D), (D, F)
    return w_in.norm(dim=1) * w_out.norm(dim=0)


def subsampling_channel_importance(
    sub: Conv2dSubsampling, keep_second: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C1,), (C2,) importance of the channels of the subsampling's first and second convolution
    (see module docstring); the first layer's is taken over the second-layer channels
    ``keep_second`` (sorted indices; None = all)."""
    conv1, conv2 = sub.conv[0], sub.conv[2]
    assert isinstance(conv1, nn.Conv2d) and isinstance(conv2, nn.Conv2d)  # Conv2d, SiLU, Conv2d, SiLU
    c2 = conv2.out_channels
    w_out = sub.out.weight.view(sub.out.out_features, c2, -1)  # (D, C2, F'): columns are channel-major
    second = conv2.weight.flatten(1).norm(dim=1) * w_out.transpose(0, 1).flatten(1).norm(dim=1)
    w2 = conv2.weight if keep_second is None else conv2.weight[keep_second]
    first = conv1.weight.flatten(1).norm(dim=1) * w2.transpose(0, 1).flatten(1).norm(dim=1)
    return first, second


def prune_subsampling(sub: Conv2dSubsampling, keep_first: int, keep_second: int) -> dict[str, torch.Tensor]:
    """The weights of ``sub`` with only its ``keep_first`` / ``keep_second`` most important
    channels of the two convolutions (in their original order), by parameter name within the
    module (``conv.0.weight``, ...)."""
    _, second = subsampling_channel_importance(sub)
    k2 = second.argsort(descending=True)[:keep_second].sort().values
    first, _ = subsampling_channel_importance(sub, k2)
    k1 = first.argsort(descending=True)[:keep_first].sort().values
    conv1, conv2 = sub.conv[0], sub.conv[2]
    assert isinstance(conv1, nn.Conv2d) and isinstance(conv2, nn.Conv2d)
    assert conv1.bias is not None and conv2.bias is not None
    d = sub.out.out_features
    return {
        "conv.0.weight": conv1.weight[k1].clone(), "conv.0.bias": conv1.bias[k1].clone(),
        "conv.2.weight": conv2.weight[k2][:, k1].clone(), "conv.2.bias": conv2.bias[k2].clone(),
        "out.weight": sub.out.weight.view(d, conv2.out_channels, -1)[:, k2].reshape(d, -1).clone(),
    }  # fmt: skip


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
    """A smaller copy of ``model``: layers, then attention heads of the kept layers,
    feed-forward channels and subsampling channels removed by importance.

    Args:
        model: the trained model (not modified).
        cfg: its configuration.
        options: what to remove.
        features, lengths: (N, T, F) features and (N,) lengths to score layers with; needed
            when ``options.drop_layers`` > 0.

    Returns:
        The pruned model (eval mode), its configuration, and a report: the dropped layer
        indices, the layer scores, the dropped heads (``[layer, head]`` in the original
        numbering) and all heads' scores, the subsampling channels before and after,
        parameter counts before and after.
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
    layers = [layer for layer in model.conformer_encoder().layers if isinstance(layer, ConformerLayer)]
    dropped_heads: list[list[int]] = [[] for _ in keep_layers]
    if options.drop_heads:
        scores_of_heads = [head_importance(layers[i].attn) for i in keep_layers]
        dropped_heads = heads_to_drop(scores_of_heads, options.drop_heads)
        report["head_scores"] = {i: [round(float(s), 6) for s in sc] for i, sc in zip(keep_layers, scores_of_heads)}
        report["dropped_heads"] = [[i, h] for i, heads in zip(keep_layers, dropped_heads) for h in heads]
    heads_before = layer_heads(cfg)
    heads_after = tuple(heads_before[i] - len(d) for i, d in zip(keep_layers, dropped_heads))
    new_ffn = round(options.ffn_keep * cfg.ffn_dim)
    channels = cfg.subsampling_channels
    new_channels = (round(options.subsampling_keep * channels[0]), round(options.subsampling_keep * channels[1]))
    new_cfg = replace(
        cfg, ffn_dim=new_ffn, num_encoder_layers=len(keep_layers), subsampling_channels=new_channels,
        # Every layer with all heads is the plain configuration (old checkpoints' form).
        encoder_layer_heads=() if set(heads_after) == {cfg.num_heads} else heads_after,
    )  # fmt: skip
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
        attn = layers[kept].attn
        if dropped_heads[i]:
            keep = torch.tensor([h for h in range(attn.num_heads) if h not in dropped_heads[i]], dtype=torch.long)
            for name, value in prune_heads(attn, keep).items():
                new_state[f"encoder.layers.{i}.attn.{name}"] = value
        for name in ("ffn1", "ffn2"):
            ffn = getattr(model.conformer_encoder().layers[kept], name)
            # Kept channels in their original order (any order computes the same function).
            keep = ffn_channel_importance(ffn).argsort(descending=True)[:new_ffn].sort().values
            prefix = f"encoder.layers.{i}.{name}.net"
            new_state[f"{prefix}.1.weight"] = ffn.net[1].weight[keep].clone()
            new_state[f"{prefix}.1.bias"] = ffn.net[1].bias[keep].clone()
            new_state[f"{prefix}.3.weight"] = ffn.net[3].weight[:, keep].clone()
    if new_channels != tuple(channels):
        sub = model.conformer_encoder().subsampling
        for name, value in prune_subsampling(sub, *new_channels).items():
            new_state[f"encoder.subsampling.{name}"] = value
    pruned.load_state_dict(new_state)
    report["parameters_after"] = count_parameters(pruned)
    report["ffn_dim"] = [cfg.ffn_dim, new_ffn]
    report["num_encoder_layers"] = [cfg.num_encoder_layers, len(keep_layers)]
    report["encoder_layer_heads"] = [list(heads_before), list(heads_after)]
    report["subsampling_channels"] = [list(channels), list(new_channels)]
    return pruned, new_cfg, report


def finetune_flags(cfg: ModelConfig) -> str:
    """The ``dsr train`` model flags that rebuild a pruned model of ``cfg`` (with the other
    model options of the run it was trained with)."""
    flags = f"--ffn-dim {cfg.ffn_dim} --num-encoder-layers {cfg.num_encoder_layers}"
    if cfg.encoder_layer_heads:
        flags += f" --encoder-layer-heads {','.join(map(str, cfg.encoder_layer_heads))}"
    if tuple(cfg.subsampling_channels) != ModelConfig().subsampling_channels:
        flags += f" --subsampling-channels {','.join(map(str, cfg.subsampling_channels))}"
    return flags


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
    flags that rebuild the pruned shape.  A bad argument or option is an
    :class:`~dsr.errors.OptionError` naming it (``cuts``, ``drop_layers``), which ``dsr prune``
    shows as its flag.
    """
    from dsr.features.frontend import check_cuts_frontend, frontend_from_dict, frontend_to_dict
    from dsr.models.checkpoint import load_checkpoint, resolve_model_checkpoint, save_checkpoint

    if (exp_dir is None) == (checkpoint is None):
        raise OptionError("give exactly one of {exp_dir} (with {epoch}/{avg}) or {checkpoint}")
    if checkpoint is not None:
        ckpt, tag = load_checkpoint(checkpoint, "checkpoint"), Path(checkpoint).stem
    else:
        ckpt, tag = resolve_model_checkpoint(Path(exp_dir), epoch, avg, use_averaged_model)  # type: ignore[arg-type]
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    try:
        options.validate(cfg)
    except OptionError as e:  # the same error, saying which model (its fields stay fields for the CLI to rename)
        raise OptionError(f"cannot prune {exp_dir or checkpoint}: {e.template}") from e
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    frontend = frontend_to_dict(frontend_from_dict(ckpt.get("frontend") or {}))
    features = lengths = None
    if options.drop_layers:
        if cuts is None:
            raise OptionError("{drop_layers} scores the layers on real features: give {cuts} (e.g. the dev cuts)")
        from lhotse import CutSet

        if not Path(cuts).is_file():
            raise OptionError(f"{{cuts}} {cuts} does not exist; run dsr features first")
        cut_list = [c for c in CutSet.from_file(cuts) if c.has_features][:num_utts]
        if not cut_list:
            raise OptionError(f"{{cuts}} {cuts} has no cut with features; run dsr features first")
        check_cuts_frontend(cut_list, frontend, str(cuts), f"the model of {exp_dir or checkpoint}")
        feats = [torch.from_numpy(c.load_features()) for c in cut_list]
        lengths = torch.tensor([f.size(0) for f in feats])
        features = nn.utils.rnn.pad_sequence(feats, batch_first=True)
    pruned, new_cfg, report = prune_model(model, cfg, options, features, lengths)
    report["pruned_from"] = f"{exp_dir or checkpoint} ({tag})"
    report["importance"] = ("ffn: ||W_in[j]|| * ||W_out[:, j]||; layers: mean 1 - cos(input, output); "
                            "heads: spectral norm of W_o[:, h] W_v[h] diag(LayerNorm gain); "
                            "subsampling channels: ||kernels in|| * ||weights out||")  # fmt: skip
    report["finetune_flags"] = finetune_flags(new_cfg)
    save_checkpoint(Path(out), {"model_config": new_cfg.to_dict(), "model": pruned.state_dict(),
                                "frontend": frontend, "prune_report": report})  # fmt: skip
    return report
