"""A dsr hybrid model built on a pretrained Whisper: configuration, weights, target text.

The encoder (and, with ``whisper_decoder``, the attention head) take Whisper's weights;
the transducer and CTC heads start random on the recipe's BPE vocabulary.  The Whisper
decoder head is trained on :func:`whisper_target` of the transcripts: the text as written
when it is in Whisper's own style (mixed case and punctuation, as folder corpora such as
ARCTIC keep it), so that fine-tuning starts from what Whisper already writes; an all-caps
normalised corpus (the embedded one, LibriSpeech) is lower-cased.  The BPE heads'
hypotheses it rescores are upper-case words without punctuation: :func:`whisper_text`
gives them sentence case, and scoring compares them with each other, all alike.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch
from torch import nn

from dsr.data.normalize import normalize_text, sentence_case
from dsr.models.config import ModelConfig
from dsr.models.whisper.dsr_modules import is_whisper_head
from dsr.models.whisper.model import WhisperDims

logger = logging.getLogger("dsr")


def whisper_target(text: str) -> str:
    """The Whisper head's training target for a transcript: the text as written when it has
    lower-case letters (Whisper's style), else its normalised words in lower case."""
    stripped = " ".join(text.split())
    if any(ch.islower() for ch in stripped):
        return stripped
    return normalize_text(stripped).lower()


def whisper_text(hypothesis: str) -> str:
    """A BPE head's hypothesis (upper-case words) in the form the Whisper head scores:
    sentence case, the pronoun I kept (as LLM rescoring does)."""
    return sentence_case(normalize_text(hypothesis))


def whisper_model_config(
    base: ModelConfig,
    dims: WhisperDims,
    prompt: tuple[int, ...],
    eot: int,
    whisper_decoder: bool,
    pad_to_30s: bool = False,
) -> ModelConfig:
    """``base`` (vocabulary, transducer/CTC options) on a Whisper encoder of ``dims``."""
    return replace(
        base,
        encoder_type="whisper",
        whisper_dims=dims.to_dict(),
        feature_dim=dims.n_mels,
        encoder_dim=dims.n_audio_state,
        whisper_decoder=whisper_decoder,
        whisper_prompt=tuple(prompt) if whisper_decoder else (),
        whisper_eot=eot if whisper_decoder else -1,
        whisper_pad_30s=pad_to_30s,
        attention_decoder_layers=0,
        causal=False,
        chunk_size=-1,
        left_context_chunks=-1,
        train_chunk_sizes=(),
        train_left_context_chunks=(-1,),
        train_full_context_prob=0.0,
        utterance_norm="none",
    )


def load_whisper_weights(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> set[str]:
    """Copy Whisper's ``encoder.*`` (and ``decoder.*`` into the attention head, when it is
    Whisper's) into ``model``; returns the model's state-dict names that were loaded.

    Shapes must match exactly (``ValueError`` naming the first that does not): the model
    was built from the same dims.
    """
    own = model.state_dict()
    has_head = is_whisper_head(getattr(model, "attention_decoder", None))
    mapped: dict[str, torch.Tensor] = {}
    for name, value in state_dict.items():
        if name.startswith("encoder."):
            target = name
        elif name.startswith("decoder.") and has_head:
            target = "attention_decoder." + name[len("decoder.") :]
        else:
            continue
        if target not in own:
            raise ValueError(f"pretrained weight {name} has no place in the model ({target})")
        if own[target].shape != value.shape:
            raise ValueError(f"pretrained {name} has shape {tuple(value.shape)}, the model {tuple(own[target].shape)}")
        mapped[target] = value
    missing = [k for k in own if k.startswith("encoder.") and k not in mapped]
    if missing:
        raise ValueError(f"the pretrained Whisper lacks encoder weights {missing[:3]}")
    model.load_state_dict(mapped, strict=False)
    logger.info(
        "loaded %d pretrained Whisper tensors (%s)", len(mapped), "encoder and decoder" if has_head else "encoder"
    )
    return set(mapped)


def encoder_param_names_to_freeze(model: nn.Module, keep_top: int) -> list[str]:
    """Names of the encoder's parameters except its top ``keep_top`` blocks (and, when
    ``keep_top`` > 0, its final LayerNorm): what "freeze all but the top K layers" freezes."""
    if keep_top < 0:
        raise ValueError(f"keep_top must be >= 0 (got {keep_top})")
    blocks = getattr(model.encoder, "blocks", None)
    num_layers = len(blocks) if blocks is not None else len(getattr(model.encoder, "layers", []))
    top = {f"encoder.blocks.{i}." for i in range(max(0, num_layers - keep_top), num_layers)}
    top |= {f"encoder.layers.{i}." for i in range(max(0, num_layers - keep_top), num_layers)}
    names = []
    for name, _ in model.named_parameters():
        if not name.startswith("encoder."):
            continue
        if any(name.startswith(t) for t in top) or (keep_top > 0 and name.startswith("encoder.ln_post")):
            continue
        names.append(name)
    return names
