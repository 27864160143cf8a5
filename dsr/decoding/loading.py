"""A model ready to decode: checkpoint (averaged if asked) or zero-shot Whisper, with what
travels with it (the Whisper head's decoding settings, the front end it reads).

Shared by ``dsr decode``, ``dsr transcribe``, :class:`dsr.Recognizer`, pseudo-labelling and
the benches; it reads checkpoints through :mod:`dsr.models.checkpoint`, never training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsr.decoding.quantize import quantize_int8
from dsr.decoding.whisper_decode import WhisperDecoding, decoding_from_checkpoint, zero_shot_model
from dsr.errors import DsrUserError
from dsr.features.frontend import frontend_from_dict, frontend_to_dict
from dsr.features.whisper_fbank import WhisperFbankConfig
from dsr.lang.bpe import Tokenizer
from dsr.lang.vocabulary import check_vocabulary
from dsr.models.checkpoint import load_checkpoint, resolve_model_checkpoint
from dsr.models.config import ModelConfig, build_model
from dsr.models.transducer import HybridTransducer


@dataclass
class DecodingModel:
    """A model ready to decode, what its result files call it, the Whisper head's decoding
    settings (None without one) and the front end it reads (:func:`frontend_to_dict` form)."""

    model: HybridTransducer
    tag: str
    whisper: WhisperDecoding | None
    frontend: dict[str, Any]
    # The checkpoint's vocabulary record (dsr.lang.vocabulary); None: zero-shot or an older checkpoint.
    vocabulary: dict[str, Any] | None = None
    vocab_size: int | None = None

    def check_lang_dir(self, lang_dir: Path | str, tokenizer: Tokenizer, source: Path | str | None) -> None:
        """One-line error unless ``lang_dir`` holds the vocabulary this model (from ``source``) was trained with;
        then the model's transducer search knows the vocabulary's ``<unk>`` id (searched as blank)."""
        if self.vocab_size is not None:
            check_vocabulary(self.vocabulary, self.vocab_size, lang_dir, tokenizer.vocab_size, f"the model in {source}")
        if tokenizer.unk_id != self.model.blank_id:
            self.model.unk_id = tokenizer.unk_id


def load_decoding_model(
    exp_dir: Path | None,
    epoch: int = 0,
    avg: int = 1,
    device: torch.device | str = "cpu",
    use_averaged_model: bool = True,
    int8: bool = False,
    pretrained: str | None = None,
    whisper_language: str = "en",
    checkpoint: Path | None = None,
) -> DecodingModel:
    """The model of ``exp_dir``'s checkpoints (see :func:`dsr.models.checkpoint.resolve_model_checkpoint`
    for ``epoch``, ``avg`` and ``use_averaged_model``), of one ``checkpoint`` file, or zero-shot
    Whisper ``pretrained`` (e.g. ``whisper-tiny.en``); on ``device``, in eval mode.

    ``int8`` quantises its Linear layers (:mod:`dsr.decoding.quantize`; the tag gets ``-int8``).
    """
    whisper: WhisperDecoding | None
    if pretrained:
        model, whisper, tag = zero_shot_model(pretrained, whisper_language)
        frontend = frontend_to_dict(WhisperFbankConfig(num_mel_bins=model.encoder.input_dim))
    else:
        if checkpoint is not None:
            ckpt, tag = load_checkpoint(checkpoint, "checkpoint"), Path(checkpoint).stem
        else:
            if exp_dir is None:
                raise ValueError("load_decoding_model needs exp_dir, checkpoint or pretrained")
            ckpt, tag = resolve_model_checkpoint(Path(exp_dir), epoch, avg, use_averaged_model)
        if "speech_llm_config" in ckpt:
            raise DsrUserError(
                f"{checkpoint or exp_dir} holds a speech-LLM: decode it with -m speech-llm-greedy or "
                "-m speech-llm-beam-search"
            )
        model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
        whisper = decoding_from_checkpoint(ckpt, model)
        # Checkpoints from before front ends were recorded were all trained on default FBANK.
        frontend = frontend_to_dict(frontend_from_dict(ckpt.get("frontend") or {}))
    model.to(device).eval()
    if int8:
        model = quantize_int8(model, torch.device(device))
        tag += "-int8"
    if pretrained:
        return DecodingModel(model, tag, whisper, frontend)
    return DecodingModel(model, tag, whisper, frontend, ckpt.get("vocabulary"), int(ckpt["model_config"]["vocab_size"]))


def load_model(
    exp_dir: Path,
    epoch: int = 0,
    avg: int = 1,
    device: torch.device | str = "cpu",
    use_averaged_model: bool = True,
    int8: bool = False,
) -> tuple[HybridTransducer, str]:
    """The model and tag of :func:`load_decoding_model` (for callers that need nothing else)."""
    loaded = load_decoding_model(exp_dir, epoch, avg, device, use_averaged_model, int8)
    return loaded.model, loaded.tag
