"""``dsr train --pretrained``: a hybrid model on a pretrained Whisper, and the fine-tuning
options users of pretrained models expect (a lower learning rate for pretrained weights,
the encoder frozen for the first updates)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from dsr.errors import OptionError
from dsr.models.whisper.pretrained import encoder_param_names_to_freeze, load_whisper_weights, whisper_target
from dsr.training.config import TrainConfig

logger = logging.getLogger("dsr")


@dataclass
class PretrainedWhisper:
    """A loaded Whisper (:class:`dsr.models.whisper.load.LoadedWhisper`) and, when its decoder
    is the attention head, its tokenizer and start prompt."""

    loaded: Any
    tokenizer: Any | None
    prompt: tuple[int, ...]
    source: str

    @property
    def use_decoder(self) -> bool:
        return self.tokenizer is not None

    @property
    def eot(self) -> int:
        return self.tokenizer.eot if self.tokenizer is not None else -1

    def attention_tokens(self, text: str) -> list[int]:
        """A transcript -> the Whisper head's target ids (see :func:`whisper_target`)."""
        assert self.tokenizer is not None
        return self.tokenizer.encode(whisper_target(text))

    def load_into(self, model: nn.Module) -> set[str]:
        try:
            return load_whisper_weights(model, self.loaded.state_dict)
        except ValueError as e:
            raise OptionError(f"{{pretrained}} {self.source}: {e}") from e

    def checkpoint_entries(self) -> dict[str, Any]:
        """What a checkpoint needs to decode without the pretrained files: the Whisper
        tokenizer and the token suppression of faster-whisper's defaults (plus, after the
        prompt, no special token: a fine-tuned head never needs one)."""
        if not self.use_decoder:
            return {"pretrained": self.source}
        search = {
            "suppress_tokens": list(self.loaded.suppress_tokens),
            "suppress_at_begin": list(self.loaded.suppress_blank),
            "suppress_from": self.eot + 1,
        }
        return {
            "pretrained": self.source,
            "whisper_tokenizer": self.loaded.tokenizer_json,
            "whisper_multilingual": self.loaded.multilingual,
            "whisper_search": search,
        }


def load_pretrained(cfg: TrainConfig) -> PretrainedWhisper:
    """Read ``cfg.pretrained`` (a name such as ``whisper-tiny.en`` or a path)."""
    from dsr.models.whisper.load import load_whisper, resolve_pretrained

    loaded = load_whisper(resolve_pretrained(cfg.pretrained))
    tokenizer = None
    prompt: tuple[int, ...] = ()
    if cfg.whisper_decoder:
        if loaded.tokenizer_json is None:
            raise OptionError(
                f"{{pretrained}} {cfg.pretrained} has no tokenizer.json, which the Whisper decoder head needs; convert "
                "it with: dsr whisper convert SRC OUT --tokenizer tokenizer.json, or train with {not:whisper_decoder}"
            )
        tokenizer = loaded.tokenizer()
        prompt = tuple(tokenizer.sot_sequence(cfg.whisper_language if loaded.multilingual else None))
    logger.info("pretrained Whisper %s (%s): %s", cfg.pretrained, loaded.source_format, loaded.dims)
    return PretrainedWhisper(loaded, tokenizer, prompt, cfg.pretrained)


def pretrained_parameter_names(model: nn.Module, whisper: PretrainedWhisper | None) -> set[str]:
    """Parameters that start from pretrained weights: the encoder, and Whisper's decoder head."""
    if whisper is None:
        return set()
    prefixes = ("encoder.", "attention_decoder.") if whisper.use_decoder else ("encoder.",)
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


def optimizer_groups(
    model: nn.Module, trainable: list[nn.Parameter], cfg: TrainConfig, whisper: PretrainedWhisper | None
) -> list[dict[str, Any]]:
    """AdamW parameter groups: the new heads at ``base_lr``, pretrained weights at
    ``base_lr * pretrained_lr_scale`` (one group when nothing is pretrained)."""
    pretrained = pretrained_parameter_names(model, whisper)
    if not pretrained:
        return [{"params": trainable}]
    ids = {id(p) for n, p in model.named_parameters() if n in pretrained}
    old = [p for p in trainable if id(p) in ids]
    new = [p for p in trainable if id(p) not in ids]
    groups: list[dict[str, Any]] = [{"params": new}] if new else []
    if old:
        groups.append({"params": old, "lr": cfg.base_lr * cfg.pretrained_lr_scale})
    logger.info(
        "learning rates: %.2e for %d new tensors, %.2e for %d pretrained ones",
        cfg.base_lr,
        len(new),
        cfg.base_lr * cfg.pretrained_lr_scale,
        len(old),
    )
    return groups


class EncoderFreezer:
    """Keeps the encoder (all but its top ``keep_top`` layers) frozen for the first ``steps``
    updates, so that randomly initialised heads do not send noise into pretrained weights.

    Freezing sets ``requires_grad=False`` (the backward pass skips the frozen layers, which
    also saves time); AdamW leaves parameters without gradients untouched.  Parameters that
    ``--freeze`` froze for good stay frozen.
    """

    def __init__(self, model: nn.Module, steps: int, keep_top: int, trainable: list[nn.Parameter]) -> None:
        trainable_ids = {id(p) for p in trainable}
        names = set(encoder_param_names_to_freeze(model, keep_top)) if steps > 0 else set()
        self.params = [p for n, p in model.named_parameters() if n in names and id(p) in trainable_ids]
        self.steps = steps
        self.frozen: bool | None = None

    def update(self, step: int) -> None:
        """Freeze or unfreeze for the update about to happen at ``step``."""
        frozen = step < self.steps
        if frozen == self.frozen or not self.params:
            return
        for p in self.params:
            p.requires_grad_(not frozen)
        if self.frozen is not None or frozen:
            logger.info("step %d: encoder %s (%d tensors)", step, "frozen" if frozen else "unfrozen", len(self.params))
        self.frozen = frozen
