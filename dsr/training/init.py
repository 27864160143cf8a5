"""Fine-tuning helpers: start from another run's weights (``--init-from``) and train only part of the model (``--freeze``).

Both select parameters by name patterns: comma-separated shell-style patterns
(:mod:`fnmatch`, case-sensitive) over the names of ``model.state_dict()``, such as
``encoder.layers.0.attn.qkv.weight``.  A pattern also covers everything under a
module of that name, so ``encoder`` means ``encoder`` and ``encoder.*``, and
``joiner.output_linear`` means the joiner's output layer.
"""

from __future__ import annotations

import logging
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsr.errors import OptionError
from dsr.models.checkpoint import load_checkpoint, resolve_model_checkpoint
from dsr.models.config import ModelConfig

logger = logging.getLogger("dsr")


def split_patterns(text: str) -> list[str]:
    """``"encoder.*, joiner"`` -> ``["encoder.*", "joiner"]``."""
    return [p.strip() for p in text.split(",") if p.strip()]


def name_matches(name: str, pattern: str) -> bool:
    """True if ``name`` matches ``pattern`` or lies under a module that ``pattern`` names."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


def _select(names: list[str], patterns: list[str], option: str) -> set[str]:
    """The names matched by any pattern; a pattern that matches nothing is an
    :class:`~dsr.errors.OptionError` on the TrainConfig field ``option`` (a typo must not pass)."""
    selected: set[str] = set()
    for pattern in patterns:
        hits = {n for n in names if name_matches(n, pattern)}
        if not hits:
            modules = sorted({n.split(".")[0] for n in names})
            raise OptionError(
                f"{{{option}}} {pattern!r} matches no parameter name; names start with {', '.join(modules)} "
                "(e.g. 'encoder.*', 'joiner.output_linear')"
            )
        selected |= hits
    return selected


def _checkpoint_weights(source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """(weights, checkpoint, description) of a checkpoint file or an experiment directory."""
    path = Path(source)
    if path.is_dir():
        # The weights that `dsr decode --exp-dir` uses by default: the newest epoch,
        # with the running average of that epoch's models when the checkpoint has it.
        ckpt, tag = resolve_model_checkpoint(path)
        what = f"{path} ({tag})"
    elif path.is_file():
        ckpt, what = load_checkpoint(path, "init_from"), str(path)
    else:
        raise OptionError(f"{{init_from}} {source}: no such checkpoint file or experiment directory")
    weights = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(weights, dict):
        raise OptionError(f"{{init_from}} {what} holds no model weights; give a checkpoint written by dsr train")
    return weights, ckpt, what


def _check_encoder_type(ckpt: dict[str, Any], model_config: ModelConfig | None, what: str) -> None:
    """A Whisper-encoder checkpoint needs a --pretrained run (the architecture comes from Whisper), a
    Conformer one a run without it: say so instead of listing every weight that does not fit."""
    theirs = ckpt.get("model_config") if isinstance(ckpt, dict) else None
    if model_config is None or not isinstance(theirs, dict):
        return
    their_type = theirs.get("encoder_type", "conformer")
    if their_type == model_config.encoder_type:
        return
    if their_type == "whisper":
        name = ckpt.get("pretrained") or "NAME"  # dsr train writes it into every Whisper-based checkpoint
        raise OptionError(
            f"{{init_from}} {what} is a model on a pretrained Whisper encoder: add {{pretrained}} {name} "
            "(the Whisper it was trained from) so that this run builds the same architecture"
        )
    raise OptionError(f"{{init_from}} {what} is a dsr Conformer model, not one on Whisper: drop {{pretrained}}")


def _config_differences(ckpt: dict[str, Any], model_config: ModelConfig | None) -> str:
    """``"; the checkpoint's model has vocab_size 48 (this run: 128)"`` or ``""``."""
    if model_config is None or not isinstance(ckpt.get("model_config"), dict):
        return ""
    try:
        theirs = ModelConfig.from_dict(ckpt["model_config"]).to_dict()
    except (TypeError, ValueError):
        return ""
    ours = model_config.to_dict()
    diffs = [f"{k} {theirs[k]} (this run: {ours[k]})" for k in ours if theirs.get(k) != ours[k]]
    return f"; the checkpoint's model has {', '.join(diffs)}" if diffs else ""


#: What the weights an --init-from checkpoint lacks keep, unless the caller loaded others first.
RANDOM_START = "their random initialisation"


def load_initial_weights(
    model: nn.Module,
    source: str,
    exclude: list[str],
    model_config: ModelConfig | None = None,
    otherwise: str = RANDOM_START,
) -> set[str]:
    """Copy the weights of ``source`` into ``model``, except the names matched by ``exclude``.

    ``source`` is a checkpoint file or an experiment directory (see
    :func:`_checkpoint_weights`).  A weight whose shape differs from the model's
    (e.g. the output layers of a model with another vocabulary) is an error naming
    every such weight, unless ``exclude`` covers it: those keep their random
    initialisation.  Weights the checkpoint lacks (e.g. a newly added head) also
    keep it, with a warning naming them; checkpoint weights the model lacks are
    listed and ignored.  ``model_config``, if given, lets the error name the
    hyper-parameters that differ, and a checkpoint of another encoder type (a model on
    pretrained Whisper given to a Conformer run, or the reverse) is an error saying which
    flag to add or drop.  ``otherwise`` names what the weights the checkpoint does not set
    keep (Whisper's pretrained weights when the caller loaded them first).

    Returns the names of the state-dict entries that were loaded.
    """
    weights, ckpt, what = _checkpoint_weights(source)
    _check_encoder_type(ckpt, model_config, what)
    own = model.state_dict()
    excluded = _select(list(own), exclude, "init_exclude")
    mismatched = [k for k in own if k in weights and k not in excluded and weights[k].shape != own[k].shape]
    if mismatched:
        details = ", ".join(f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched)
        raise OptionError(
            f"{{init_from}} {what} does not fit this model: {len(mismatched)} weights differ in shape "
            f"(checkpoint vs model): {details}{_config_differences(ckpt, model_config)}; match the model options "
            f"to the checkpoint, or keep these weights random with {{init_exclude}} {','.join(mismatched)}"
        )
    loaded = {k: weights[k] for k in own if k in weights and k not in excluded}
    if not loaded:
        raise OptionError(f"{{init_from}} {what} has no weight with a name of this model; is it a dsr transducer?")
    model.load_state_dict(loaded, strict=False)
    missing = [k for k in own if k not in weights and k not in excluded]
    unused = [k for k in weights if k not in own]
    logger.info("initialised %d of %d weights from %s", len(loaded), len(own), what)
    if excluded:
        logger.info(
            "--init-exclude kept %d weights randomly initialised: %s", len(excluded), ", ".join(sorted(excluded))
        )
    if missing:
        logger.warning("%s has no %s; they keep %s", what, ", ".join(missing), otherwise)
    if unused:
        logger.info("ignored %d checkpoint weights this model does not have: %s", len(unused), ", ".join(unused))
    return set(loaded)


def freeze_parameters(model: nn.Module, patterns: list[str]) -> list[nn.Parameter]:
    """Set ``requires_grad=False`` on the parameters matched by ``patterns``; returns the trainable ones.

    The trainable list is what the optimiser gets, so frozen parameters get
    neither updates nor weight decay.
    """
    named = dict(model.named_parameters())
    frozen = _select(list(named), patterns, "freeze") if patterns else set()
    for name in frozen:
        named[name].requires_grad_(False)
    trainable = [p for n, p in named.items() if n not in frozen]
    if not trainable:
        raise OptionError(f"{{freeze}} {','.join(patterns)} freezes every parameter; nothing would be trained")
    if frozen:
        num_frozen = sum(named[n].numel() for n in frozen)
        logger.info(
            "--freeze: %d parameter tensors (%.3f M values) frozen, %d (%.3f M values) trainable",
            len(frozen),
            num_frozen / 1e6,
            len(trainable),
            sum(p.numel() for p in trainable) / 1e6,
        )
    return trainable
