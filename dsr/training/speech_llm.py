"""``dsr train --speech-llm``: train a speech-LLM (:mod:`dsr.models.speech_llm`) in two stages.

Stage 1 trains the projector only: the encoder and the LLM are frozen (``requires_grad``
off, never handed to the optimizer), so their weights are bit-identical afterwards.
Stage 2 adds LoRA adapters on the LLM (peft) and optionally the top encoder layers; it
usually starts from the stage-1 experiment (``--init-from``).  An optional CTC head on the
encoder (``--ctc-loss-scale`` > 0, on ``--lang-dir``'s BPE) adds its loss:

    loss = LLM cross entropy / transcript tokens + ctc_loss_scale * CTC / encoder frames

(the LLM term covers the transcript tokens and the end token, never the prompt or speech
positions).  Checkpoints (``epoch-E.pt``) hold what was trained and the encoder, not the
LLM, and name the LLM they belong to (path and :func:`dsr.lm.load.fingerprint`).

The loop is its own (not :func:`dsr.training.trainer.train`'s): its checkpoints, parameter
groups and loss differ from the transducer's throughout.  Single process (no torchrun);
an interrupted run resumes from its newest epoch checkpoint, only if that checkpoint's run
record (:func:`dsr.training.resume.run_record`: training cuts, LLM, options) is this run's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from dsr.data.cuts import filter_cuts, load_cuts
from dsr.device import resolve_device
from dsr.errors import OptionError
from dsr.features.fbank import FbankConfig
from dsr.features.frontend import (
    check_cuts_frontend,
    check_frontend_match,
    frontend_from_dict,
    frontend_of_cuts,
    frontend_to_dict,
)
from dsr.features.whisper_fbank import WhisperFbankConfig
from dsr.lang.bpe import Tokenizer
from dsr.lm.load import fingerprint
from dsr.models.checkpoint import epoch_checkpoints, load_checkpoint, resolve_model_checkpoint, save_checkpoint
from dsr.models.config import ModelConfig
from dsr.models.speech_llm import (
    SpeechLLM,
    SpeechLLMConfig,
    SpeechPrompt,
    build_prompt,
    build_speech_llm,
    llm_target,
    load_llm,
    resolve_llm_path,
)
from dsr.models.whisper.pretrained import encoder_param_names_to_freeze
from dsr.training import distributed
from dsr.training.config import TrainConfig, save_config
from dsr.training.datamodule import CachedFeatures, batch_features, batch_texts, load_training_cuts, make_loader
from dsr.training.optim import WarmupEden
from dsr.training.resume import check_same_run, run_record
from dsr.utils import mark_done

logger = logging.getLogger("dsr")


def _init_checkpoint(source: str) -> tuple[dict[str, Any], str]:
    path = Path(source)
    if path.is_dir():
        ckpt, tag = resolve_model_checkpoint(path, use_averaged_model=False)
        return ckpt, f"{path} ({tag})"
    if path.is_file():
        return load_checkpoint(path, "init_from"), str(path)
    raise OptionError(f"{{init_from}} {source}: no such checkpoint file or experiment directory")


def build_for_training(
    cfg: TrainConfig, ctc_vocab_size: int, blank_id: int
) -> tuple[SpeechLLM, SpeechLLMConfig, dict[str, Any], Any]:
    """The model of ``cfg`` with its encoder (and stage-1 projector) weights loaded, its config,
    the front end its encoder reads (:func:`frontend_to_dict` form) and the LLM's tokenizer."""
    llm_path = resolve_llm_path(cfg.speech_llm, "speech_llm")
    llm, tokenizer = load_llm(llm_path)
    scfg = SpeechLLMConfig(
        encoder={},
        llm_path=str(llm_path.resolve()),
        llm_fingerprint=fingerprint(llm_path),
        # get_input_embeddings is typed as any nn.Module; a causal LM's token table is an nn.Embedding.
        llm_dim=cast(nn.Embedding, llm.get_input_embeddings()).embedding_dim,
        projector_stack=cfg.projector_stack,
        projector_hidden=cfg.projector_hidden,
        use_ctc=ctc_vocab_size > 0,
        instruction=cfg.speech_llm_instruction,
        lora_rank=cfg.lora_rank if cfg.speech_llm_stage == 2 else 0,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        lora_targets=cfg.lora_targets,
        use_chat_template=cfg.speech_llm_chat_template,
    )
    base = ModelConfig(vocab_size=max(ctc_vocab_size, 2), blank_id=blank_id, use_transducer=False)
    if cfg.pretrained:
        from dsr.models.whisper.pretrained import load_whisper_weights, whisper_model_config
        from dsr.training.pretrained import load_pretrained

        # Only Whisper's encoder is used: no tokenizer needed.
        whisper = load_pretrained(replace(cfg, whisper_decoder=False))
        enc_cfg = whisper_model_config(base, whisper.loaded.dims, (), -1, False)
        model = build_speech_llm(replace(scfg, encoder=enc_cfg.to_dict()), llm, tokenizer, ctc_vocab_size, blank_id)
        try:
            load_whisper_weights(model, whisper.loaded.state_dict)
        except ValueError as e:
            raise OptionError(f"{{pretrained}} {cfg.pretrained}: {e}") from e
        frontend = frontend_to_dict(WhisperFbankConfig(num_mel_bins=enc_cfg.feature_dim))
        return model, replace(scfg, encoder=enc_cfg.to_dict()), frontend, tokenizer
    ckpt, what = _init_checkpoint(cfg.init_from)
    frontend = frontend_to_dict(frontend_from_dict(ckpt.get("frontend") or {}))
    if "speech_llm_config" in ckpt:  # a stage-1 (or earlier stage-2) speech-LLM: all but the adapters
        prev = SpeechLLMConfig.from_dict(ckpt["speech_llm_config"])
        if prev.llm_fingerprint != scfg.llm_fingerprint:
            raise OptionError(
                f"{{init_from}} {what} was trained with the LLM {prev.llm_path} (fingerprint {prev.llm_fingerprint}); "
                f"{{speech_llm}} {cfg.speech_llm} is {llm_path} ({scfg.llm_fingerprint}): give the same LLM"
            )
        if (prev.projector_stack, prev.projector_hidden) != (cfg.projector_stack, cfg.projector_hidden):
            raise OptionError(
                f"{{init_from}} {what} has {{projector_stack}} {prev.projector_stack} {{projector_hidden}} "
                f"{prev.projector_hidden}; give the same values"
            )
        if prev.use_ctc != scfg.use_ctc:
            raise OptionError(
                f"{{init_from}} {what} was trained {'with' if prev.use_ctc else 'without'} a CTC head; set "
                "{ctc_loss_scale} accordingly (> 0 with a CTC head, 0 without)"
            )
        model = build_speech_llm(replace(scfg, encoder=prev.encoder), llm, tokenizer, ctc_vocab_size, blank_id)
        own = model.trainable_state_dict()
        weights = {k: v for k, v in ckpt["model"].items() if "lora_" not in k}
        missing = [k for k in own if "lora_" not in k and k not in weights]
        if missing or any(k not in own or own[k].shape != v.shape for k, v in weights.items()):
            raise OptionError(
                f"{{init_from}} {what}: its weights do not fit this model (missing {missing[:2]}); another "
                "{lang_dir} for the CTC head?"
            )
        model.load_state_dict(weights, strict=False)
        logger.info("speech-LLM initialised from %s (encoder, projector%s)", what, ", CTC" if prev.use_ctc else "")
        return model, replace(scfg, encoder=prev.encoder), frontend, tokenizer
    if "model_config" not in ckpt:
        raise OptionError(f"{{init_from}} {what} is not a dsr model checkpoint; give one written by dsr train")
    enc_cfg = replace(
        ModelConfig.from_dict(ckpt["model_config"]),
        vocab_size=base.vocab_size,
        blank_id=blank_id,
        use_transducer=False,
        attention_decoder_layers=0,
        whisper_decoder=False,
    )
    model = build_speech_llm(replace(scfg, encoder=enc_cfg.to_dict()), llm, tokenizer, ctc_vocab_size, blank_id)
    own = model.state_dict()
    # The encoder and its feature normalisation; the CTC head too when its vocabulary is the same.
    weights = {
        k: v
        for k, v in ckpt["model"].items()
        if (k.startswith(("encoder.", "feature_", "ctc_output.")) and k in own and own[k].shape == v.shape)
    }
    if not any(k.startswith("encoder.") for k in weights):
        raise OptionError(f"{{init_from}} {what}: no encoder weights fit the model built from its model_config")
    model.load_state_dict(weights, strict=False)
    logger.info("speech-LLM encoder from %s (%d tensors)", what, len(weights))
    return model, replace(scfg, encoder=enc_cfg.to_dict()), frontend, tokenizer


def set_trainable(model: SpeechLLM, cfg: TrainConfig) -> list[tuple[str, torch.nn.Parameter]]:
    """Freeze everything, then unfreeze what ``cfg``'s stage trains; returns those (name, parameter)s.

    Stage 1: the projector (and the CTC head).  Stage 2: also the LoRA adapters and the
    top ``speech_llm_encoder_top`` encoder layers.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    names = {n for n, _ in model.named_parameters() if n.startswith(("projector.", "ctc_output."))}
    if cfg.speech_llm_stage == 2:
        names |= {n for n, _ in model.named_parameters() if "lora_" in n}
        if cfg.speech_llm_encoder_top > 0:
            frozen = set(encoder_param_names_to_freeze(model, cfg.speech_llm_encoder_top))
            names |= {n for n, _ in model.named_parameters() if n.startswith("encoder.") and n not in frozen}
    trainable = [(n, p) for n, p in model.named_parameters() if n in names]
    for _, p in trainable:
        p.requires_grad_(True)
    return trainable


def _autocast(device: torch.device, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def autocast_dtype(dtype: str, device: torch.device) -> str:
    """The autocast dtype to train with: ``dtype`` on CUDA (float16 where the GPU lacks bfloat16),
    float32 elsewhere (the CPU trains the speech-LLM in float32), with a warning when it differs."""
    if dtype == "float32":
        return dtype
    if device.type != "cuda":
        logger.warning("--dtype %s: the speech-LLM autocasts on CUDA only; training in float32 on %s", dtype, device)
        return "float32"
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        logger.warning("--dtype bfloat16: this GPU has no bfloat16; autocasting to float16 (with loss scaling)")
        return "float16"
    return dtype


def _phrase(text: str, rng: random.Random) -> str | None:
    """1 to 3 consecutive words of ``text`` (in :func:`llm_target` form, edge punctuation removed)."""
    words = [w.strip(",.;:!?\"'()") for w in llm_target(text).split()]
    words = [w for w in words if w]
    if not words:
        return None
    n = rng.randint(1, min(3, len(words)))
    start = rng.randint(0, len(words) - n)
    return " ".join(words[start : start + n])


def sample_hotwords(texts: list[str], i: int, rng: random.Random) -> tuple[str, ...]:
    """A hotword list for utterance ``i`` of a batch, as decoding would give one: a phrase of its
    own transcript and 0-2 phrases of the batch's other transcripts (distractors), shuffled."""
    phrases = [_phrase(texts[i], rng)]
    others = [t for j, t in enumerate(texts) if j != i]
    for _ in range(rng.randint(0, 2) if others else 0):
        phrases.append(_phrase(rng.choice(others), rng))
    unique = list(dict.fromkeys(p for p in phrases if p))
    rng.shuffle(unique)
    return tuple(unique)


class SpeechLLMTargets:
    """Transcripts -> the LLM's target ids (:func:`llm_target` form) and the CTC head's BPE ids,
    and, with ``hotword_prob`` > 0, per-utterance prompts with hotword lists (:func:`sample_hotwords`)
    for that share of the utterances, so the model learns to use a phrase list in its prompt."""

    def __init__(
        self,
        llm_tokenizer: Any,
        bpe: Tokenizer | None,
        hotword_prob: float = 0.0,
        scfg: SpeechLLMConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.llm_tokenizer = llm_tokenizer
        self.bpe = bpe
        self.hotword_prob = hotword_prob
        self.scfg = scfg
        self.rng = random.Random(seed)

    def prompts(self, texts: list[str], default: SpeechPrompt) -> list[SpeechPrompt] | None:
        """One prompt per utterance (``default`` or one with sampled hotwords); None without hotword training."""
        if self.hotword_prob <= 0 or self.scfg is None:
            return None
        out = []
        for i in range(len(texts)):
            if self.rng.random() < self.hotword_prob:
                out.append(
                    build_prompt(
                        self.llm_tokenizer,
                        self.scfg.instruction,
                        sample_hotwords(texts, i, self.rng),
                        self.scfg.use_chat_template,
                    )
                )
            else:
                out.append(default)
        return out

    def llm(self, texts: list[str]) -> list[list[int]]:
        return [self.llm_tokenizer.encode(llm_target(t), add_special_tokens=False) for t in texts]

    def ctc(self, texts: list[str]) -> list[list[int]] | None:
        return [self.bpe.encode(t) for t in texts] if self.bpe is not None else None


class EncoderCache:
    """A frozen encoder's output per cut id, kept on the CPU after its first computation.

    A batch whose cuts are all cached is served from memory (the encoder does not run); any
    other batch runs the encoder and caches its rows.  Only valid while the encoder and its
    inputs do not change: frozen encoder, no SpecAugment (:class:`TrainConfig` checks both).
    """

    def __init__(self) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    @property
    def megabytes(self) -> float:
        return sum(t.numel() * t.element_size() for t in self.outputs.values()) / 2**20

    @torch.no_grad()
    def encode(
        self, model: SpeechLLM, feats: torch.Tensor, lens: torch.Tensor, cut_ids: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T', D) encoder output and (N,) lengths of a batch, from the cache when possible."""
        if cut_ids and all(c in self.outputs for c in cut_ids):
            self.hits += 1
            rows = [self.outputs[c] for c in cut_ids]
            out = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True).to(feats.device)
            return out, torch.tensor([r.size(0) for r in rows], device=feats.device)
        self.misses += 1
        out, out_lens = model.encode(feats, lens)
        for c, row, n in zip(cut_ids, out, out_lens.tolist()):
            self.outputs[c] = row[:n].detach().float().cpu()
        return out.detach(), out_lens


def compute_loss(
    model: SpeechLLM,
    batch: dict,
    targets: SpeechLLMTargets,
    cfg: TrainConfig,
    device: torch.device,
    cache: EncoderCache | None = None,
) -> tuple[torch.Tensor, dict[str, float], int]:
    """The speech-LLM's training loss of a batch (see the module docstring), its parts for the
    log, and the number of transcript tokens (+ EOS) it covers.  With a ``cache`` a frozen
    encoder's outputs come from it."""
    feats, lens = batch_features(batch, device)
    texts = batch_texts(batch)
    with _autocast(device, cfg.dtype):
        encoded = None
        if cache is not None:
            encoded = cache.encode(model, feats, lens, [c.id for c in batch["supervisions"]["cut"]])
        out = model(
            feats,
            lens,
            targets.llm(texts),
            targets.ctc(texts),
            encoded=encoded,
            prompts=targets.prompts(texts, model.prompt) if model.training else None,
        )
    tokens = out["num_tokens"].float().clamp(min=1)
    llm_loss = out["llm_loss"] / tokens
    loss = llm_loss
    parts = {"llm_loss": llm_loss.item()}
    if "ctc_loss" in out:
        ctc = out["ctc_loss"] / out["num_frames"].float().clamp(min=1)
        loss = loss + cfg.ctc_loss_scale * ctc
        parts["ctc_loss"] = ctc.item()
    return loss, parts, int(out["num_tokens"])


@torch.no_grad()
def validate(
    model: SpeechLLM,
    loader,
    targets: SpeechLLMTargets,
    cfg: TrainConfig,
    device: torch.device,
    cache: EncoderCache | None = None,
) -> float:
    """Mean per-token LLM loss (+ scaled CTC per frame) over the batches of ``loader``."""
    was_training = model.training
    model.eval()
    tot, n = 0.0, 0
    for batch in loader:
        loss, _, _ = compute_loss(model, batch, targets, cfg, device, cache)
        if math.isfinite(loss.item()):
            tot, n = tot + loss.item(), n + 1
    model.train(was_training)
    return tot / max(n, 1)


def _check_frontend(cfg: TrainConfig, train_cuts, frontend: dict[str, Any]) -> None:
    found = frontend_of_cuts(train_cuts) or frontend_to_dict(FbankConfig())
    source = f"{{pretrained}} {cfg.pretrained}" if cfg.pretrained else f"{{init_from}} {cfg.init_from}"
    check_frontend_match(frontend, found, source, f"features of {cfg.train_cuts}", expected_verb="reads")


def train_speech_llm(cfg: TrainConfig):
    """Train (or resume) a speech-LLM as ``cfg`` says; returns a :class:`dsr.training.trainer.TrainResult`."""
    from dsr.training.trainer import TrainResult

    t0 = time.time()
    if distributed.env_info().is_distributed:
        raise OptionError("{speech_llm} training runs in one process; launch it without torchrun")
    device = resolve_device(cfg.device)
    exp_dir = Path(cfg.exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    # What this run trains on, as the transducer trainer records it (dsr.training.resume): the
    # newest checkpoint is resumed only if it has the same record, checked before the LLM loads.
    run = run_record(cfg)
    done = epoch_checkpoints(exp_dir)
    resumed: tuple[int, Path, dict[str, Any]] | None = None
    if done:
        epoch, path = done[-1]
        resumed = epoch, path, load_checkpoint(path)
        check_same_run(resumed[2].get("run", {}), run, exp_dir)
        if "speech_llm_config" not in resumed[2]:  # a transducer checkpoint of before run records
            raise OptionError(
                f"{path} is not a speech-LLM checkpoint; give {{speech_llm}} training its own {{exp_dir}}"
            )
    # Only now: a run that may not resume here must not overwrite the config of the one that is.
    save_config(cfg, exp_dir / "config.yaml")
    cfg = replace(cfg, dtype=autocast_dtype(cfg.dtype, device))
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    bpe = Tokenizer(cfg.lang_dir) if cfg.ctc_loss_scale > 0 else None
    model, scfg, frontend, llm_tokenizer = build_for_training(
        cfg, bpe.vocab_size if bpe else 0, bpe.blank_id if bpe else 0
    )
    targets = SpeechLLMTargets(llm_tokenizer, bpe, cfg.speech_llm_hotword_prob, scfg, cfg.seed)
    logger.info("speech-LLM prompt: %r", model.prompt.text)
    trainable = set_trainable(model, cfg)
    if cfg.activation_checkpointing:
        # Non-reentrant: the LLM's inputs (speech embeddings) need gradients, its weights may not.
        llm = model.base_llm()
        if hasattr(llm, "activation_checkpointing_enable"):  # transformers >= 5.x's name
            llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(device)
    num_trainable = sum(p.numel() for _, p in trainable)
    logger.info(
        "speech-LLM stage %d on %s: %.2f M trainable of %.2f M parameters (LLM %s)",
        cfg.speech_llm_stage,
        device,
        num_trainable / 1e6,
        sum(p.numel() for p in model.parameters()) / 1e6,
        scfg.llm_path,
    )
    encoder_trained = any(n.startswith("encoder.") for n, _ in trainable)
    new = [p for n, p in trainable if not n.startswith("encoder.")]
    old = [p for n, p in trainable if n.startswith("encoder.")]
    groups = [{"params": new}] + ([{"params": old, "lr": cfg.base_lr * cfg.pretrained_lr_scale}] if old else [])
    optimizer = torch.optim.AdamW(groups, lr=cfg.base_lr, weight_decay=cfg.weight_decay, betas=(0.9, cfg.adam_beta2))
    scheduler = WarmupEden(optimizer, warmup_steps=cfg.warmup_steps, lr_epochs=cfg.lr_decay_epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.dtype == "float16")

    train_cuts = load_training_cuts(cfg.train_cuts, cfg.min_utt_duration, cfg.max_utt_duration, cfg.speed_perturbed)
    _check_frontend(cfg, train_cuts, frontend)
    # The transducer trainer's data options, one in-memory feature budget for both loaders.
    features = CachedFeatures(int(cfg.feature_cache_mb * 2**20)) if cfg.feature_cache_mb > 0 else None
    train_loader, sampler = make_loader(
        train_cuts,
        cfg.max_duration,
        shuffle=True,
        num_buckets=cfg.num_buckets,
        spec_augment=cfg.spec_augment,
        freq_warp=cfg.freq_warp,
        gain_db=cfg.gain_db,
        edge_trim=cfg.edge_trim,
        endpoint_trim_db=cfg.endpoint_trim_db,
        edge_trim_keep=cfg.edge_trim_keep,
        num_workers=cfg.num_workers,
        seed=cfg.seed,
        feature_cache=features,
        frontend=frontend_from_dict(frontend),
    )
    valid_loader = None
    if cfg.dev_cuts:
        dev_cuts = load_cuts(cfg.dev_cuts)
        check_cuts_frontend(
            dev_cuts, frontend, cfg.dev_cuts, f"the training cuts {cfg.train_cuts}", expected_verb="are"
        )
        valid_loader, _ = make_loader(
            filter_cuts(dev_cuts, cfg.min_utt_duration, cfg.max_utt_duration).to_eager(),
            cfg.max_duration,
            shuffle=False,
            feature_cache=features,
        )

    start_epoch, global_step, seconds_before = 1, 0, 0.0
    if resumed is not None:
        epoch, path, state = resumed
        # Also what the record does not hold: the encoder's configuration, the LLM's place.
        trained = SpeechLLMConfig.from_dict(state["speech_llm_config"])
        differing = [f.name for f in fields(SpeechLLMConfig) if getattr(trained, f.name) != getattr(scfg, f.name)]
        if differing:
            raise OptionError(
                f"{path} was trained with another speech-LLM ({', '.join(differing)} differ); give "
                "another {exp_dir} or what it was trained with"
            )
        model.load_trainable_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["grad_scaler"])
        start_epoch, global_step = epoch + 1, state["global_step"]
        seconds_before = float(state.get("train_seconds", 0.0))
        logger.info("resuming from %s (step %d)", path, global_step)

    def set_modes() -> None:
        model.train()
        if not encoder_trained:
            model.encoder.eval()  # frozen: no dropout, as it will decode

    cache = EncoderCache() if cfg.speech_llm_cache_encoder else None
    last_train, last_valid = float("nan"), None
    set_modes()
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.num_epochs + 1):
        if cfg.max_steps and global_step >= cfg.max_steps:
            break
        scheduler.set_epoch(epoch - 1)
        sampler.set_epoch(epoch)
        tot, n = 0.0, 0
        for batch in train_loader:
            loss, parts, _ = compute_loss(model, batch, targets, cfg, device, cache)
            if not torch.isfinite(loss):
                logger.warning("step %d: non-finite loss %s, batch skipped", global_step, parts)
                optimizer.zero_grad(set_to_none=True)
                continue
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in trainable], cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            global_step += 1
            tot, n = tot + loss.item(), n + 1
            if global_step % cfg.log_interval == 0:
                logger.info(
                    "epoch %d step %d: loss %.4f (%s) lr %.2e grad-norm %.2f",
                    epoch,
                    global_step,
                    tot / n,
                    " ".join(f"{k} {v:.3f}" for k, v in parts.items()),
                    scheduler.get_last_lr()[0],
                    float(grad_norm),
                )
            if cfg.max_steps and global_step >= cfg.max_steps:
                break
        last_train = tot / max(n, 1)
        if valid_loader is not None:
            last_valid = validate(model, valid_loader, targets, cfg, device, cache)
            set_modes()
        if cache is not None:
            logger.info(
                "encoder cache: %d cuts, %.1f MB; %d batches served from it, %d encoded",
                len(cache.outputs),
                cache.megabytes,
                cache.hits,
                cache.misses,
            )
        logger.info(
            "epoch %d done: train loss %.4f%s, %.1f min elapsed",
            epoch,
            last_train,
            f", valid loss {last_valid:.4f}" if last_valid is not None else "",
            (time.time() - t0) / 60,
        )
        save_checkpoint(
            exp_dir / f"epoch-{epoch}.pt",
            {
                "model": model.trainable_state_dict(),
                "speech_llm_config": scfg.to_dict(),
                "run": run,  # checked before this checkpoint is resumed (resume.check_same_run)
                "ctc_vocab_size": bpe.vocab_size if bpe else 0,
                "blank_id": bpe.blank_id if bpe else 0,
                "train_config": cfg.to_dict(),
                "frontend": frontend,
                "trainable_parameters": num_trainable,
                # Wall time of every run that led here (resumed runs add theirs), model loading included.
                "train_seconds": seconds_before + time.time() - t0,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "grad_scaler": scaler.state_dict(),
                "epoch": epoch,
                "epoch_finished": True,
                "global_step": global_step,
            },
        )
    epochs_done = max([e for e, _ in epoch_checkpoints(exp_dir)], default=0)
    if epochs_done >= cfg.num_epochs:
        mark_done(exp_dir, "train", {"epochs": epochs_done, "global_step": global_step, **run})
    return TrainResult(exp_dir, epochs_done, global_step, last_train, last_valid, 0, num_trainable, time.time() - t0)
