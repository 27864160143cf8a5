"""The training loop behind ``dsr train``.

Loss (icefall's pruned_transducer_stateless recipe):
``s * simple + p * pruned + ctc_loss_scale * ctc`` where, during the first
``model_warm_step`` steps, ``s`` falls from 1 to ``simple_loss_scale`` and ``p``
rises from 0.1 to 1: the simple loss must first learn alignments good enough to
prune with.  With ``ctc_encoder_warmup_steps`` the encoder first learns from CTC
alone (see :func:`rnnt_encoder_grad_scale`).  With an attention decoder,
``+ attention_loss_scale * attention CE``; with ``--teacher``, ``+ distill_scale * KL``
(:mod:`dsr.training.distill`).  Losses are summed over the batch and divided by the
number of encoder frames, so the step size does not depend on the batch size.

Under torchrun each process trains on its share of the batches and DDP averages
the gradients (:mod:`dsr.training.distributed`); resuming is in
:mod:`dsr.training.resume`, ``--init-from``/``--freeze`` in :mod:`dsr.training.init`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dsr.errors import DsrUserError
from dsr.features.fbank import FbankConfig
from dsr.features.frontend import (
    check_cuts_frontend,
    check_frontend_match,
    frontend_from_dict,
    frontend_of_cuts,
    frontend_to_dict,
)
from dsr.features.whisper_fbank import WhisperFbankConfig
from dsr.lang.bpe import SOS_EOS, Tokenizer
from dsr.models.config import ModelConfig, build_model, count_parameters
from dsr.models.transducer import HybridTransducer
from dsr.models.whisper.pretrained import whisper_model_config
from dsr.training.pretrained import PretrainedWhisper, load_pretrained, optimizer_groups, EncoderFreezer
from dsr.training import distributed
from dsr.training.checkpoint import epoch_checkpoints, prune_step_checkpoints, save_checkpoint
from dsr.training.checkpoint import load_checkpoint  # noqa: F401  (tests read checkpoints through the trainer)
from dsr.training.config import TrainConfig, int_list, save_config
from dsr.training.datamodule import (
    CachedFeatures,
    batch_features,
    batch_texts,
    filter_cuts,
    load_cut_list,
    load_cuts,
    make_loader,
)
from dsr.training.distill import distillation_losses, load_teacher, parse_distill_heads
from dsr.training.distributed import DistInfo
from dsr.training.init import freeze_parameters, load_initial_weights, split_patterns
from dsr.training.model_average import ModelAverager
from dsr.training.optim import WarmupEden
from dsr.training.resume import (
    check_mid_epoch_resume,
    find_resume_state,
    random_states,
    restore_average,
    restore_optimizer,
    restore_random_states,
)
from dsr.utils import mark_done

logger = logging.getLogger("dsr")


@dataclass
class TrainResult:
    exp_dir: Path
    epochs_done: int
    global_step: int
    last_train_loss: float
    last_valid_loss: float | None
    skipped_batches: int
    num_params: int
    seconds: float

    def summary(self) -> str:
        v = f", valid loss {self.last_valid_loss:.4f}" if self.last_valid_loss is not None else ""
        return (
            f"trained {self.num_params / 1e6:.2f} M params for {self.epochs_done} epochs / {self.global_step} steps "
            f"in {self.seconds / 60:.1f} min: train loss {self.last_train_loss:.4f}{v}; "
            f"{self.skipped_batches} non-finite batches skipped; checkpoints in {self.exp_dir}"
        )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise DsrUserError(f"--device {name!r} is not a valid torch device") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DsrUserError(f"--device {name} asked for CUDA but no GPU is available; use --device cpu")
    return dev


def model_config_from(cfg: TrainConfig, tokenizer: Tokenizer, whisper: PretrainedWhisper | None = None) -> ModelConfig:
    if cfg.attention_decoder_layers > 0 and tokenizer.id_to_piece(tokenizer.sos_eos_id) != SOS_EOS:
        raise DsrUserError(f"--lang-dir {cfg.lang_dir} has no {SOS_EOS} token, which the attention decoder needs; "
                           "retrain the tokenizer with dsr lang")
    mcfg = ModelConfig(
        encoder_dim=cfg.encoder_dim,
        num_encoder_layers=cfg.num_encoder_layers,
        num_heads=cfg.num_heads,
        ffn_dim=cfg.ffn_dim,
        conv_kernel_size=cfg.conv_kernel_size,
        subsampling_channels=int_list(cfg.subsampling_channels, "subsampling-channels"),
        dropout=cfg.dropout,
        decoder_dim=cfg.decoder_dim,
        joiner_dim=cfg.joiner_dim,
        context_size=cfg.context_size,
        vocab_size=tokenizer.vocab_size,
        blank_id=tokenizer.blank_id,
        use_transducer=cfg.use_transducer,
        attention_decoder_layers=cfg.attention_decoder_layers,
        attention_decoder_dim=cfg.attention_decoder_dim,
        attention_decoder_heads=cfg.attention_decoder_heads,
        attention_decoder_ffn_dim=cfg.attention_decoder_ffn_dim,
        sos_eos_id=tokenizer.sos_eos_id,
        utterance_norm=cfg.utterance_norm,
        **cfg.model_chunking(),
    )
    if whisper is None:
        return mcfg
    if not cfg.use_transducer and cfg.ctc_loss_scale <= 0:
        mcfg = replace(mcfg, use_ctc=False)  # Whisper's decoder alone (validated in TrainConfig)
    return whisper_model_config(mcfg, whisper.loaded.dims, whisper.prompt, whisper.eot, whisper.use_decoder,
                                pad_to_30s=cfg.whisper_pad_30s)


def _autocast(device: torch.device, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


def _loss_scales(cfg: TrainConfig, step: int) -> tuple[float, float]:
    if step >= cfg.model_warm_step:
        return cfg.simple_loss_scale, 1.0
    frac = step / cfg.model_warm_step
    return 1.0 - frac * (1.0 - cfg.simple_loss_scale), 0.1 + 0.9 * frac


def rnnt_encoder_grad_scale(cfg: TrainConfig, step: int) -> float:
    """Share of the transducer losses' gradient that reaches the encoder at ``step``.

    0 for the first ``ctc_encoder_warmup_steps`` steps, then a linear ramp to 1 over
    as many steps.  Why: from scratch the transducer lowers its loss fastest by
    learning the transcripts' language model in the predictor, and its gradient into
    the encoder slows CTC's discovery of the acoustics several-fold (on the embedded
    corpus CTC stayed on its label prior for hundreds of steps longer).  Once the
    encoder carries acoustic information, the joiner learns to use it quickly.
    """
    n = cfg.ctc_encoder_warmup_steps
    if n <= 0 or step >= 2 * n:
        return 1.0
    return max(0.0, (step - n) / n)


def weighted_loss(out: dict[str, torch.Tensor], cfg: TrainConfig, step: int) -> torch.Tensor:
    """The scaled sum of the losses in a model's (and distillation's) output dictionary."""
    s, p = _loss_scales(cfg, step)
    terms = []
    if "simple_loss" in out:
        terms += [s * out["simple_loss"], p * out["pruned_loss"]]
    if cfg.ctc_loss_scale > 0 and "ctc_loss" in out:
        terms.append(cfg.ctc_loss_scale * out["ctc_loss"])
    if "attention_loss" in out:
        terms.append(cfg.attention_loss_scale * out["attention_loss"])
    terms += [cfg.distill_scale * v for k, v in out.items() if k.startswith("distill_")]
    # Added left to right, as before there were optional terms: the same bits for old configs.
    loss = terms[0]
    for term in terms[1:]:
        loss = loss + term
    return loss


def compute_loss(
    model: torch.nn.Module,
    batch: dict,
    tokenizer: Tokenizer,
    cfg: TrainConfig,
    device: torch.device,
    step: int,
    teacher: torch.nn.Module | None = None,
    attention_tokens: Callable[[str], list[int]] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Scaled total loss per frame, and its parts (per frame) for logging.

    With a ``teacher`` (see :func:`dsr.training.distill.load_teacher`) the distillation
    terms are added.  ``attention_tokens`` turns a transcript into the attention head's
    targets when that head has its own vocabulary (Whisper's decoder).
    """
    feats, lens = batch_features(batch, device)
    texts = batch_texts(batch)
    targets = [tokenizer.encode(t) for t in texts]
    attention_targets = [attention_tokens(t) for t in texts] if attention_tokens is not None else None
    with _autocast(device, cfg.dtype):
        out = model(
            feats,
            lens,
            targets,
            prune_range=cfg.prune_range,
            am_scale=cfg.am_scale,
            lm_scale=cfg.lm_scale,
            rnnt_backend=cfg.rnnt_backend,
            rnnt_encoder_grad_scale=rnnt_encoder_grad_scale(cfg, step),
            label_smoothing=cfg.label_smoothing,
            return_outputs=teacher is not None,
            attention_targets=attention_targets,
        )
        if teacher is not None:
            out.update(distillation_losses(teacher, out, feats, lens, parse_distill_heads(cfg.distill_heads),
                                           cfg.distill_temperature))
    frames = out["num_frames"].float().clamp(min=1)
    loss = weighted_loss(out, cfg, step)
    parts = {k: (v.detach().float() / frames).item() for k, v in out.items() if k.endswith("_loss")}
    return loss / frames, parts


@torch.no_grad()
def validate(model, loader, tokenizer, cfg, device, step, dist_info: DistInfo = DistInfo(),
             attention_tokens: Callable[[str], list[int]] | None = None) -> float:
    """Mean per-frame loss of the batches of ``loader``; of every rank's batches when distributed.

    Without distillation terms, so that it measures the student's own objective whether or
    not it has a teacher.  Pass the bare model, not its DDP wrapper: a DDP forward pass may
    take part in collectives, and ranks can have different numbers of validation batches.
    """
    model.eval()
    tot, n = 0.0, 0
    for batch in loader:
        loss, _ = compute_loss(model, batch, tokenizer, cfg, device, step, attention_tokens=attention_tokens)
        if math.isfinite(loss.item()):
            tot += loss.item()
            n += 1
    model.train()
    tot, n = distributed.sum_across_ranks([tot, n], device, dist_info)
    return tot / max(n, 1)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _encoder_frames(model: HybridTransducer, batch: dict) -> int:
    """Encoder output frames of a batch (the loss normaliser), known before the forward pass."""
    return int(model.encoder.output_lengths(batch["supervisions"]["num_frames"]).sum())


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume training) a hybrid transducer as configured; returns a summary.

    Launched by torchrun (``WORLD_SIZE`` > 1 in the environment), this process is
    one rank of a data-parallel job (see :mod:`dsr.training.distributed`); only
    rank 0 writes files and logs below WARNING.
    """
    cfg.validate()
    if cfg.speech_llm:  # speech-LLM hook: its own loop and loss (dsr/training/speech_llm.py)
        from dsr.training.speech_llm import train_speech_llm

        return train_speech_llm(cfg)
    info = distributed.env_info()
    if not info.is_main:
        logger.setLevel(logging.WARNING)  # one rank tells the story
    device = distributed.device_for_rank(resolve_device(cfg.device), cfg.device, info)
    with distributed.process_group(info, device):
        return _train(cfg, info, device)


def _train(cfg: TrainConfig, info: DistInfo, device: torch.device) -> TrainResult:
    t0 = time.time()
    exp_dir = Path(cfg.exp_dir)
    if info.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, exp_dir / "config.yaml")
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    _seed(cfg.seed)

    tokenizer = Tokenizer(cfg.lang_dir)
    whisper = load_pretrained(cfg) if cfg.pretrained else None
    mcfg = model_config_from(cfg, tokenizer, whisper)
    model = build_model(mcfg).to(device)
    # Whisper token targets only for Whisper's decoder head (none with --no-whisper-decoder).
    attention_tokens = whisper.attention_tokens if whisper is not None and whisper.use_decoder else None
    model.encoder.activation_checkpointing = cfg.activation_checkpointing
    num_params = count_parameters(model)
    logger.info("model: %.2f M parameters, device %s, dtype %s", num_params / 1e6, device, cfg.dtype)
    teacher = None
    if cfg.teacher:
        teacher = load_teacher(cfg.teacher, mcfg, tokenizer, parse_distill_heads(cfg.distill_heads), device)

    if info.is_distributed:
        # Every rank built the same weights from one seed; from here on each draws its own
        # dropout and SpecAugment masks, as it would with its own GPU in a larger batch.
        _seed(cfg.seed + info.rank)
        logger.info("data-parallel training on %d processes", info.world_size)

    resumed = find_resume_state(cfg, exp_dir, info)
    initialised: set[str] = set()
    if cfg.init_from and resumed is None:
        initialised = load_initial_weights(model, cfg.init_from, split_patterns(cfg.init_exclude), mcfg)
    elif cfg.init_from:
        logger.info("resuming, so --init-from %s is not applied again", cfg.init_from)
    if whisper is not None and resumed is None:
        whisper.load_into(model)
    trainable = freeze_parameters(model, split_patterns(cfg.freeze))
    freezer = EncoderFreezer(model, cfg.freeze_encoder_steps, cfg.freeze_encoder_keep_top, trainable)

    # foreach: one multi-tensor update instead of a Python loop over the parameters; the same
    # arithmetic, bit-identical results (checked on the embedded recipe), ~3 ms less per update on CPU.
    optimizer = torch.optim.AdamW(
        optimizer_groups(model, trainable, cfg, whisper), lr=cfg.base_lr, weight_decay=cfg.weight_decay,
        betas=(0.9, cfg.adam_beta2), foreach=True,
    )
    scheduler = WarmupEden(optimizer, warmup_steps=cfg.warmup_steps, lr_epochs=cfg.lr_decay_epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.dtype == "float16")

    train_cuts = filter_cuts(load_cut_list(cfg.train_cuts), cfg.min_utt_duration, cfg.max_utt_duration).to_eager()
    if len(train_cuts) == 0:
        raise DsrUserError(f"{cfg.train_cuts} has no cuts between {cfg.min_utt_duration} and {cfg.max_utt_duration} s")
    shard = {"world_size": info.world_size, "rank": info.rank}
    # One in-memory feature budget shared by the training, curriculum and validation loaders.
    cache = CachedFeatures(int(cfg.feature_cache_mb * 2**20)) if cfg.feature_cache_mb > 0 else None
    # The training and curriculum loaders differ only in order and bucketing.
    frontend = _check_training_frontend(cfg, train_cuts, mcfg)
    train_options = dict(
        spec_augment=cfg.spec_augment,
        freq_warp=cfg.freq_warp,
        gain_db=cfg.gain_db,
        edge_trim=cfg.edge_trim,
        endpoint_trim_db=cfg.endpoint_trim_db,
        edge_trim_keep=cfg.edge_trim_keep,
        num_workers=cfg.num_workers,
        seed=cfg.seed,
        feature_cache=cache,
        frontend=frontend_from_dict(frontend),
        **shard,
    )
    train_loader, sampler = make_loader(
        train_cuts, cfg.max_duration, shuffle=True, num_buckets=cfg.num_buckets, **train_options
    )
    # SortaGrad (Amodei et al., 2016): the first epochs go from short to long utterances.
    # Short utterances have few alignments to choose from, which gets CTC/transducer
    # training off the label-prior plateau in far fewer updates on small corpora.
    curriculum = None
    if cfg.sortagrad_epochs > 0:
        curriculum = make_loader(
            train_cuts.sort_by_duration(ascending=True), cfg.max_duration, shuffle=False, num_buckets=1, **train_options
        )
    valid_loader = None
    if cfg.dev_cuts:
        dev_cuts = load_cuts(cfg.dev_cuts)
        check_cuts_frontend(dev_cuts, frontend, cfg.dev_cuts, f"the training cuts {cfg.train_cuts}",
                            expected_verb="are")
        dev_cuts = filter_cuts(dev_cuts, cfg.min_utt_duration, cfg.max_utt_duration).to_eager()
        valid_loader, _ = make_loader(dev_cuts, cfg.max_duration, shuffle=False, feature_cache=cache, **shard)

    def loader_for(epoch: int):
        return curriculum if curriculum is not None and epoch <= cfg.sortagrad_epochs else (train_loader, sampler)

    # Rank 0 alone saves checkpoints, so only it keeps the running average.
    averager = ModelAverager(model, cfg.average_period) if cfg.average_period > 0 and info.is_main else None
    start_epoch, global_step, batches_done, skipped = 1, 0, 0, 0
    mid_epoch_rng, restore_rng_mid_epoch = None, False
    if resumed is not None:
        state, path = resumed
        model.load_state_dict(state["model"])
        if averager is not None:
            restore_average(averager, state)
        if "optimizer" in state:
            restore_optimizer(optimizer, state, cfg, path)
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["grad_scaler"])
        global_step = state["global_step"]
        skipped = state.get("skipped_batches", 0)
        if state.get("epoch_finished", True):
            start_epoch = state["epoch"] + 1
            restore_random_states(state.get("random_states"), device, info)
        else:  # mid-epoch checkpoint: the epoch goes on after the batches it had seen
            check_mid_epoch_resume(state, path, info)
            start_epoch = state["epoch"]
            batches_done = state["batch_in_epoch"]
            loader_for(start_epoch)[1].skip_batches(batches_done)
            mid_epoch_rng = state.get("random_states")
            restore_rng_mid_epoch = True
        del state, resumed  # the checkpoint's tensors need not stay in memory while training
    elif whisper is not None:
        logger.info("Whisper reads its own normalised log-mel: no feature statistics (identity normalisation)")
    elif {"feature_mean", "feature_std"} <= initialised:
        # The initial weights were trained on inputs normalised with these statistics.
        logger.info("keeping the feature normalisation of --init-from (--init-exclude feature_* recomputes it)")
    elif info.is_main:  # DDP copies rank 0's buffers to the other ranks when it wraps the model
        mean, std = feature_stats(train_cuts)
        model.set_feature_stats(mean.to(device), std.to(device))

    # The CTC head's parameters get no gradient when its loss is off, which DDP must be told.
    train_model = distributed.wrap_model(
        model, device, info, find_unused_parameters=cfg.ctc_loss_scale <= 0 or cfg.freeze_encoder_steps > 0
    )
    writer = _tensorboard(exp_dir) if info.is_main else None
    last_train, last_valid = float("nan"), None

    def snapshot(epoch: int, finished: bool, batch_in_epoch: int) -> dict[str, Any] | None:
        """The checkpoint's contents on rank 0, None on the others (every rank must call it: it gathers)."""
        rng = distributed.gather_to_all(random_states(device), info)
        if not info.is_main:
            return None
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "grad_scaler": scaler.state_dict(),
            "model_config": mcfg.to_dict(),
            "train_config": cfg.to_dict(),
            "frontend": frontend,
            **(whisper.checkpoint_entries() if whisper is not None else {}),
            "epoch": epoch,
            "epoch_finished": finished,
            "batch_in_epoch": batch_in_epoch,
            "world_size": info.world_size,
            "global_step": global_step,
            "skipped_batches": skipped,
            "random_states": rng,
            **({"model_avg": averager.state_dict()} if averager is not None else {}),
        }

    model.train()
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.num_epochs + 1):
        scheduler.set_epoch(epoch - 1)
        epoch_loader, epoch_sampler = loader_for(epoch)
        epoch_sampler.set_epoch(epoch)
        tot_loss, tot_n = 0.0, 0
        batches = iter(epoch_loader)
        if restore_rng_mid_epoch:
            # Only now: creating the iterator drew a seed from torch's generator, which the
            # interrupted run had done before its checkpoint.
            restore_random_states(mid_epoch_rng, device, info)
            mid_epoch_rng, restore_rng_mid_epoch = None, False
        for batch in batches:
            batches_done += 1
            freezer.update(global_step)
            loss, parts = compute_loss(train_model, batch, tokenizer, cfg, device, global_step, teacher,
                                       attention_tokens)
            # With DDP: this rank's share of the frames, and whether every rank can step (see step_sync).
            weight, finite = distributed.step_sync(
                _encoder_frames(model, batch), bool(torch.isfinite(loss)), device, info
            )
            if not finite:
                skipped += 1
                logger.warning("step %d: non-finite loss %s%s, batch skipped (%d so far)", global_step, parts,
                               " on some rank" if info.is_distributed else "", skipped)
                optimizer.zero_grad(set_to_none=True)
                continue
            if weight != 1.0:
                loss = loss * weight
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            # The gradients are averaged over the ranks by now, so every rank sees the same norm
            # and makes the same decision here.
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip, foreach=True)
            if not torch.isfinite(grad_norm):
                skipped += 1
                logger.warning("step %d: non-finite gradient, batch skipped (%d so far)", global_step, skipped)
                optimizer.zero_grad(set_to_none=True)
                scaler.update()
                continue
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            global_step += 1
            if averager is not None:
                averager.update(model, global_step)
            # The weighted losses' mean over the ranks is the per-frame loss of all ranks' batches.
            tot_loss += loss.item()
            tot_n += 1
            if global_step % cfg.log_interval == 0:
                mean_loss, step_loss = distributed.mean_across_ranks([tot_loss / tot_n, loss.item()], device, info)
                lr = scheduler.get_last_lr()[0]
                logger.info(
                    "epoch %d step %d: loss %.4f (%s) lr %.2e grad-norm %.2f",
                    epoch, global_step, mean_loss,
                    " ".join(f"{k} {v:.3f}" for k, v in parts.items()), lr, grad_norm.item(),
                )
                if writer:
                    writer.add_scalar("train/loss", step_loss, global_step)
                    for k, v in parts.items():
                        writer.add_scalar(f"train/{k}", v, global_step)
                    writer.add_scalar("train/lr", lr, global_step)
            if cfg.save_every_n and global_step % cfg.save_every_n == 0:
                ckpt = snapshot(epoch, False, batches_done)
                if info.is_main:
                    save_checkpoint(exp_dir / f"checkpoint-{global_step}.pt", ckpt)
                    prune_step_checkpoints(exp_dir, cfg.keep_last_k)
            if cfg.max_steps and global_step >= cfg.max_steps:
                break
        batches_done = 0
        last_train = distributed.mean_across_ranks([tot_loss / max(tot_n, 1)], device, info)[0]
        if valid_loader is not None:
            last_valid = validate(model, valid_loader, tokenizer, cfg, device, global_step, info, attention_tokens)
            if writer:
                writer.add_scalar("valid/loss", last_valid, global_step)
        logger.info(
            "epoch %d done: train loss %.4f%s, %.1f min elapsed",
            epoch, last_train, f", valid loss {last_valid:.4f}" if last_valid is not None else "", (time.time() - t0) / 60,
        )
        ckpt = snapshot(epoch, True, 0)
        if info.is_main:
            save_checkpoint(exp_dir / f"epoch-{epoch}.pt", ckpt)
        if cfg.max_steps and global_step >= cfg.max_steps:
            break
    if writer:
        writer.close()
    # The other ranks wait for rank 0's last checkpoint, so that every rank returns the same summary.
    distributed.barrier(device, info)
    epochs_done = max([e for e, _ in epoch_checkpoints(exp_dir)], default=0)
    result = TrainResult(exp_dir, epochs_done, global_step, last_train, last_valid, skipped, num_params, time.time() - t0)
    if info.is_main and epochs_done >= cfg.num_epochs:
        mark_done(exp_dir, "train", {"epochs": epochs_done, "global_step": global_step})
    return result


def _check_training_frontend(cfg: TrainConfig, train_cuts, mcfg: ModelConfig) -> dict[str, Any]:
    """The training cuts' front end (saved in every checkpoint), checked against what the model
    reads: Whisper's log-mel for --pretrained and the initial model's front end for --init-from
    (the dev cuts are checked against it where they are loaded)."""
    frontend = frontend_of_cuts(train_cuts) or frontend_to_dict(FbankConfig())
    if mcfg.encoder_type == "whisper":
        wanted = frontend_to_dict(WhisperFbankConfig(num_mel_bins=mcfg.feature_dim))
        check_frontend_match(wanted, frontend, f"--pretrained {cfg.pretrained}", f"features of {cfg.train_cuts}",
                             expected_verb="reads")
    elif frontend.get("num_mel_bins", mcfg.feature_dim) != mcfg.feature_dim:
        raise DsrUserError(f"features of {cfg.train_cuts} have {frontend.get('num_mel_bins')} bins; the model "
                           f"reads {mcfg.feature_dim}")
    if cfg.init_from and Path(cfg.init_from).exists():
        source = Path(cfg.init_from)
        if source.is_file():
            init_frontend = load_checkpoint(source).get("frontend")
            check_frontend_match(init_frontend or {}, frontend, f"--init-from {cfg.init_from}",
                                 f"features of {cfg.train_cuts}")
    return frontend


def feature_stats(cuts, max_cuts: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the features of (up to ``max_cuts``) training cuts.

    Cuts are taken at an even stride so that a manifest ordered by voice or
    corpus still gives representative statistics.
    """
    total, total_sq, n = None, None, 0
    stride = max(1, len(cuts) // max_cuts)
    for i, cut in enumerate(cuts):
        if i % stride:
            continue
        f = torch.from_numpy(cut.load_features()).double()
        total = f.sum(0) if total is None else total + f.sum(0)
        total_sq = (f * f).sum(0) if total_sq is None else total_sq + (f * f).sum(0)
        n += f.shape[0]
    mean = total / n
    std = (total_sq / n - mean * mean).clamp(min=1e-8).sqrt()
    return mean.float(), std.float()


def _tensorboard(exp_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: training must not depend on it
        logger.info("tensorboard not installed; no event files written")
        return None
    return SummaryWriter(str(exp_dir / "tensorboard"))
