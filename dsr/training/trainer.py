"""The training loop behind ``dsr train``, in icefall's shape.

:func:`train` = :func:`setup` (model, optimiser, data; resume from the newest checkpoint)
then, per epoch, :func:`train_one_epoch` (:func:`train_step` per batch, step checkpoints)
and :func:`end_epoch` (:func:`validate`, :func:`save_checkpoint`), then :func:`finish`.
They share one :class:`TrainState`.  :func:`compute_loss` is the one place a batch's loss
is computed (model forward, distillation, :func:`weighted_loss`): a new model type plugs in there.

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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from torch.utils.data import DataLoader

from dsr.data.cut_paths import check_feature_storage
from dsr.data.cuts import filter_cuts, load_cuts
from dsr.device import resolve_device
from dsr.errors import DsrUserError, OptionError
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
from dsr.lang.vocabulary import vocabulary_info
from dsr.models.checkpoint import (
    epoch_checkpoints,
    load_checkpoint,  # noqa: F401  (tests read checkpoints through the trainer)
)
from dsr.models.checkpoint import save_checkpoint as write_checkpoint
from dsr.models.config import ModelConfig, build_model, count_parameters
from dsr.models.transducer import HybridTransducer
from dsr.models.whisper.pretrained import whisper_model_config
from dsr.training import distributed
from dsr.training.checkpoint import prune_step_checkpoints
from dsr.training.config import TrainConfig, save_config
from dsr.training.datamodule import (
    CachedFeatures,
    ResumableSampler,
    batch_features,
    batch_texts,
    load_training_cuts,
    make_loader,
)
from dsr.training.distill import distillation_losses, load_teacher, parse_distill_heads
from dsr.training.distributed import DistInfo
from dsr.training.init import RANDOM_START, freeze_parameters, load_initial_weights, split_patterns
from dsr.training.model_average import ModelAverager
from dsr.training.optim import WarmupEden
from dsr.training.pretrained import EncoderFreezer, PretrainedWhisper, load_pretrained, optimizer_groups
from dsr.training.resume import (
    check_mid_epoch_resume,
    check_same_run,
    find_resume_state,
    random_states,
    restore_average,
    restore_optimizer,
    restore_random_states,
    run_record,
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


def model_config_from(cfg: TrainConfig, tokenizer: Tokenizer, whisper: PretrainedWhisper | None = None) -> ModelConfig:
    """The model a run trains: ``cfg.model``'s architecture on ``tokenizer``'s vocabulary (on Whisper's
    encoder, and with its decoder, for ``--pretrained``)."""
    if cfg.model.attention_decoder_layers > 0 and tokenizer.id_to_piece(tokenizer.sos_eos_id) != SOS_EOS:
        raise OptionError(
            f"{{lang_dir}} {cfg.lang_dir} has no {SOS_EOS} token, which the attention decoder needs; "
            "retrain the tokenizer with dsr lang"
        )
    mcfg = ModelConfig(
        **cfg.model.model_config_fields(),
        vocab_size=tokenizer.vocab_size,
        blank_id=tokenizer.blank_id,
        sos_eos_id=tokenizer.sos_eos_id,
    )
    if whisper is None:
        return mcfg
    if not cfg.model.use_transducer and cfg.ctc_loss_scale <= 0:
        mcfg = replace(mcfg, use_ctc=False)  # Whisper's decoder alone (validated in TrainConfig)
    return whisper_model_config(
        mcfg, whisper.loaded.dims, whisper.prompt, whisper.eot, whisper.use_decoder, pad_to_30s=cfg.whisper_pad_30s
    )


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
    teacher: HybridTransducer | None = None,
    attention_tokens: Callable[[str], list[int]] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Scaled total loss per frame, and its parts (per frame) for logging.

    The trainer's only call into the model: training, validation and the tests go through
    here.  The model's forward returns its losses summed over the batch (``*_loss`` entries)
    and ``num_frames``; :func:`weighted_loss` scales and adds them, so a model type with
    other losses adds its entries (and their weights) there.  With a ``teacher`` (see :func:`dsr.training.distill.load_teacher`) the distillation
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
            out.update(
                distillation_losses(
                    teacher, out, feats, lens, parse_distill_heads(cfg.distill_heads), cfg.distill_temperature
                )
            )
    frames = out["num_frames"].float().clamp(min=1)
    loss = weighted_loss(out, cfg, step)
    parts = {k: (v.detach().float() / frames).item() for k, v in out.items() if k.endswith("_loss")}
    return loss / frames, parts


@torch.no_grad()
def validate(
    model,
    loader,
    tokenizer,
    cfg,
    device,
    step,
    dist_info: DistInfo = DistInfo(),
    attention_tokens: Callable[[str], list[int]] | None = None,
) -> float:
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
    tot, count = distributed.sum_across_ranks([tot, n], device, dist_info)
    return tot / max(count, 1)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _encoder_frames(model: HybridTransducer, batch: dict) -> int:
    """Encoder output frames of a batch (the loss normaliser), known before the forward pass."""
    return int(model.encoder.output_lengths(batch["supervisions"]["num_frames"]).sum())


@dataclass
class TrainData:
    """The loaders of a run: (loader, sampler) pairs for training, and one for validation."""

    train_cuts: CutSet
    frontend: dict[str, Any]  # the training cuts' front end, saved in every checkpoint
    train: tuple[DataLoader, ResumableSampler]
    curriculum: tuple[DataLoader, ResumableSampler] | None  # SortaGrad's shortest-first order
    valid: DataLoader | None

    def loader_for(self, epoch: int, sortagrad_epochs: int) -> tuple[DataLoader, ResumableSampler]:
        return self.curriculum if self.curriculum is not None and epoch <= sortagrad_epochs else self.train


@dataclass
class TrainState:
    """One training run: what :func:`setup` builds, and the counters the epochs advance.

    ``model`` is the bare model (checkpoints, validation, averaging); ``train_model`` is the
    one the training forward pass goes through (its DDP wrapper when distributed).
    """

    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    exp_dir: Path
    tokenizer: Tokenizer
    mcfg: ModelConfig
    model: HybridTransducer
    train_model: torch.nn.Module
    num_params: int
    trainable: list[torch.nn.Parameter]
    freezer: EncoderFreezer
    optimizer: torch.optim.Optimizer
    scheduler: WarmupEden
    scaler: torch.amp.GradScaler
    data: TrainData
    averager: ModelAverager | None = None  # rank 0 only: it alone saves checkpoints
    whisper: PretrainedWhisper | None = None
    teacher: HybridTransducer | None = None
    # Transcript -> the attention head's targets when that head has its own vocabulary (Whisper's decoder).
    attention_tokens: Callable[[str], list[int]] | None = None
    writer: Any = None  # tensorboard SummaryWriter (rank 0, when installed)
    progress: Any = None  # TrainProgress
    start_epoch: int = 1
    global_step: int = 0  # optimiser updates so far
    batches_done: int = 0  # batches of the current epoch seen, skipped ones included
    skipped: int = 0  # batches skipped for a non-finite loss or gradient
    # A mid-epoch checkpoint's random states, restored once the epoch's batch iterator exists.
    resume_rng: list[dict[str, Any]] | None = None
    restore_rng_mid_epoch: bool = False
    last_train: float = float("nan")
    last_valid: float | None = None
    t0: float = field(default_factory=time.time)
    # What the run trains on (resume.run_record), kept in its checkpoints and done-marker.
    run: dict[str, Any] = field(default_factory=dict)

    def done(self) -> bool:
        """Whether --max-steps is reached."""
        return bool(self.cfg.max_steps) and self.global_step >= self.cfg.max_steps


def train(cfg: TrainConfig, progress: bool = False) -> TrainResult:
    """Train (or resume training) a hybrid transducer as configured; returns a summary.

    Launched by torchrun (``WORLD_SIZE`` > 1 in the environment), this process is
    one rank of a data-parallel job (see :mod:`dsr.training.distributed`); only
    rank 0 writes files and logs below WARNING.  ``progress`` shows a progress bar
    (updates, loss, ETA) on rank 0, under the log lines of dsr's rich log handler.
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
        return _train(cfg, info, device, progress and info.is_main)


def _train(cfg: TrainConfig, info: DistInfo, device: torch.device, progress: bool = False) -> TrainResult:
    state = setup(cfg, info, device)
    with TrainProgress(progress, state) as state.progress:
        for epoch in range(state.start_epoch, cfg.num_epochs + 1):
            train_one_epoch(state, epoch)
            end_epoch(state, epoch)
            if state.done():
                break
    return finish(state)


def setup(cfg: TrainConfig, info: DistInfo, device: torch.device) -> TrainState:
    """Build the model, optimiser and data of a run, and resume it from its newest checkpoint if any.

    The order of the steps is that of the random numbers they draw: a fixed seed gives the same run.
    """
    t0 = time.time()
    exp_dir = Path(cfg.exp_dir)
    if info.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
    run = run_record(cfg)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    _seed(cfg.seed)

    tokenizer, whisper, mcfg, model = _model(cfg, device)
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
    if resumed is not None:  # before anything of it is loaded: another run's weights may not even fit
        check_same_run(resumed[0].get("run", {}), run, exp_dir)
    if info.is_main:  # only now: a run that may not resume here must not overwrite the config of the one that is
        save_config(cfg, exp_dir / "config.yaml")
    initialised = _initial_weights(cfg, model, mcfg, whisper, resumed is not None)
    trainable = freeze_parameters(model, split_patterns(cfg.freeze))
    optimizer, scheduler, scaler = _optimizer(cfg, model, trainable, whisper, device)
    data = _data(cfg, info, mcfg)
    state = TrainState(
        cfg=cfg,
        info=info,
        device=device,
        exp_dir=exp_dir,
        tokenizer=tokenizer,
        mcfg=mcfg,
        model=model,
        train_model=model,
        num_params=num_params,
        trainable=trainable,
        freezer=EncoderFreezer(model, cfg.freeze_encoder_steps, cfg.freeze_encoder_keep_top, trainable),
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        data=data,
        averager=ModelAverager(model, cfg.average_period) if cfg.average_period > 0 and info.is_main else None,
        whisper=whisper,
        teacher=teacher,
        # Whisper token targets only for Whisper's decoder head (none with --no-whisper-decoder).
        attention_tokens=whisper.attention_tokens if whisper is not None and whisper.use_decoder else None,
        t0=t0,
        run=run,
    )
    if resumed is not None:
        _resume(state, *resumed)
        del resumed  # the checkpoint's tensors need not stay in memory while training
    else:
        _init_feature_stats(state, initialised)
    # The CTC head's parameters get no gradient when its loss is off, which DDP must be told.
    state.train_model = distributed.wrap_model(
        model, device, info, find_unused_parameters=cfg.ctc_loss_scale <= 0 or cfg.freeze_encoder_steps > 0
    )
    state.writer = _tensorboard(exp_dir) if info.is_main else None
    return state


def _model(
    cfg: TrainConfig,
    device: torch.device,
) -> tuple[Tokenizer, PretrainedWhisper | None, ModelConfig, HybridTransducer]:
    """The tokenizer, the pretrained Whisper (--pretrained), and the model built on them (random weights)."""
    tokenizer = Tokenizer(cfg.lang_dir)
    whisper = load_pretrained(cfg) if cfg.pretrained else None
    mcfg = model_config_from(cfg, tokenizer, whisper)
    model = build_model(mcfg).to(device)
    model.encoder.activation_checkpointing = cfg.activation_checkpointing
    if cfg.qat_int8:
        from dsr.training.qat import enable_int8_qat

        logger.info(
            "quantisation-aware training: %d Linear layers compute in int8 (dsr/training/qat.py)",
            enable_int8_qat(model),
        )
    return tokenizer, whisper, mcfg, model


def _initial_weights(
    cfg: TrainConfig, model: HybridTransducer, mcfg: ModelConfig, whisper: PretrainedWhisper | None, resuming: bool
) -> set[str]:
    """Whisper's and then --init-from's weights for a new run; the names of the tensors --init-from set.

    Whisper first: with both, --init-from continues a model fine-tuned from that Whisper (e.g. the
    heads trained on TTS speech, now on in-domain audio), and Whisper's pretrained weights fill in
    only what the checkpoint lacks (a Whisper decoder head it was trained without).
    """
    if whisper is not None and not resuming:
        whisper.load_into(model)
    initialised: set[str] = set()
    if cfg.init_from and not resuming:
        otherwise = "Whisper's pretrained weights (a new head: its random start)" if whisper else RANDOM_START
        initialised = load_initial_weights(model, cfg.init_from, split_patterns(cfg.init_exclude), mcfg, otherwise)
    elif cfg.init_from:
        logger.info("resuming, so --init-from %s is not applied again", cfg.init_from)
    return initialised


def _optimizer(
    cfg: TrainConfig,
    model: HybridTransducer,
    trainable: list[torch.nn.Parameter],
    whisper: PretrainedWhisper | None,
    device: torch.device,
) -> tuple[torch.optim.Optimizer, WarmupEden, torch.amp.GradScaler]:
    # foreach: one multi-tensor update instead of a Python loop over the parameters; the same
    # arithmetic, bit-identical results (checked on the embedded recipe), ~3 ms less per update on CPU.
    optimizer = torch.optim.AdamW(
        optimizer_groups(model, trainable, cfg, whisper),
        lr=cfg.base_lr,
        weight_decay=cfg.weight_decay,
        betas=(0.9, cfg.adam_beta2),
        foreach=True,
    )
    scheduler = WarmupEden(optimizer, warmup_steps=cfg.warmup_steps, lr_epochs=cfg.lr_decay_epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.dtype == "float16")
    return optimizer, scheduler, scaler


def _data(cfg: TrainConfig, info: DistInfo, mcfg: ModelConfig) -> TrainData:
    """The training cuts (checked against the model's front end) and the loaders over them and the dev cuts."""
    train_cuts = load_training_cuts(cfg.train_cuts, cfg.min_utt_duration, cfg.max_utt_duration, cfg.speed_perturbed)
    # Keyword arguments of make_loader (Any: they are checked against its parameters where spread).
    shard: dict[str, Any] = {"world_size": info.world_size, "rank": info.rank}
    # One in-memory feature budget shared by the training, curriculum and validation loaders.
    cache = CachedFeatures(int(cfg.feature_cache_mb * 2**20)) if cfg.feature_cache_mb > 0 else None
    frontend = _check_training_frontend(cfg, train_cuts, mcfg)
    # The training and curriculum loaders differ only in order and bucketing.
    train_options: dict[str, Any] = dict(
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
    train = make_loader(train_cuts, cfg.max_duration, shuffle=True, num_buckets=cfg.num_buckets, **train_options)
    # SortaGrad (Amodei et al., 2016): the first epochs go from short to long utterances.
    # Short utterances have few alignments to choose from, which gets CTC/transducer
    # training off the label-prior plateau in far fewer updates on small corpora.
    curriculum = None
    if cfg.sortagrad_epochs > 0:
        curriculum = make_loader(
            train_cuts.sort_by_duration(ascending=True), cfg.max_duration, shuffle=False, num_buckets=1, **train_options
        )
    valid = None
    if cfg.dev_cuts:
        dev_cuts = load_cuts(cfg.dev_cuts)
        check_feature_storage(dev_cuts, cfg.dev_cuts)
        check_cuts_frontend(
            dev_cuts, frontend, cfg.dev_cuts, f"the training cuts {cfg.train_cuts}", expected_verb="are"
        )
        dev_cuts = filter_cuts(dev_cuts, cfg.min_utt_duration, cfg.max_utt_duration).to_eager()
        valid, _ = make_loader(dev_cuts, cfg.max_duration, shuffle=False, feature_cache=cache, **shard)
    return TrainData(train_cuts, frontend, train, curriculum, valid)


def _resume(state: TrainState, ckpt: dict[str, Any], path: Path) -> None:
    """Restore the model, optimiser, schedule, average and counters of checkpoint ``ckpt``."""
    state.model.load_state_dict(ckpt["model"])
    if state.averager is not None:
        restore_average(state.averager, ckpt)
    if "optimizer" in ckpt:
        restore_optimizer(state.optimizer, ckpt, state.cfg, path)
        state.scheduler.load_state_dict(ckpt["scheduler"])
        state.scaler.load_state_dict(ckpt["grad_scaler"])
    state.global_step = ckpt["global_step"]
    state.skipped = ckpt.get("skipped_batches", 0)
    if ckpt.get("epoch_finished", True):
        state.start_epoch = ckpt["epoch"] + 1
        restore_random_states(ckpt.get("random_states"), state.device, state.info)
    else:  # mid-epoch checkpoint: the epoch goes on after the batches it had seen
        check_mid_epoch_resume(ckpt, path, state.info)
        state.start_epoch = ckpt["epoch"]
        state.batches_done = ckpt["batch_in_epoch"]
        state.data.loader_for(state.start_epoch, state.cfg.sortagrad_epochs)[1].skip_batches(state.batches_done)
        state.resume_rng = ckpt.get("random_states")
        state.restore_rng_mid_epoch = True


def _init_feature_stats(state: TrainState, initialised: set[str]) -> None:
    """A new run's feature normalisation: the training cuts' statistics, unless the initial weights bring theirs."""
    if state.whisper is not None:
        logger.info("Whisper reads its own normalised log-mel: no feature statistics (identity normalisation)")
    elif {"feature_mean", "feature_std"} <= initialised:
        # The initial weights were trained on inputs normalised with these statistics.
        logger.info("keeping the feature normalisation of --init-from (--init-exclude feature_* recomputes it)")
    elif state.info.is_main:  # DDP copies rank 0's buffers to the other ranks when it wraps the model
        mean, std = feature_stats(state.data.train_cuts)
        state.model.set_feature_stats(mean.to(state.device), std.to(state.device))


def train_one_epoch(state: TrainState, epoch: int) -> None:
    """Train on the batches of ``epoch`` (those after a mid-epoch checkpoint's when resuming one),
    logging and saving step checkpoints as configured; stops early at --max-steps."""
    cfg = state.cfg
    state.model.train()
    state.scheduler.set_epoch(epoch - 1)
    loader, sampler = state.data.loader_for(epoch, cfg.sortagrad_epochs)
    sampler.set_epoch(epoch)
    tot_loss, tot_n = 0.0, 0
    whole_epoch = state.batches_done == 0  # not the rest of one a mid-epoch checkpoint had begun
    batches = iter(loader)
    if state.restore_rng_mid_epoch:
        # Only now: creating the iterator drew a seed from torch's generator, which the
        # interrupted run had done before its checkpoint.
        restore_random_states(state.resume_rng, state.device, state.info)
        state.resume_rng, state.restore_rng_mid_epoch = None, False
    for batch in batches:
        state.batches_done += 1
        step = train_step(state, batch)
        if step is None:
            continue
        loss, parts, grad_norm = step
        # The weighted losses' mean over the ranks is the per-frame loss of all ranks' batches.
        tot_loss += loss
        tot_n += 1
        if state.global_step % cfg.log_interval == 0:
            _log_step(state, epoch, tot_loss / tot_n, loss, parts, grad_norm)
        if state.progress is not None:
            state.progress.update(loss)
        if cfg.save_every_n and state.global_step % cfg.save_every_n == 0:
            save_checkpoint(state, f"checkpoint-{state.global_step}.pt", epoch, finished=False)
        if state.done():
            break
    state.batches_done = 0
    if state.progress is not None and whole_epoch and not state.done():
        state.progress.epoch_done(epoch, tot_n)
    state.last_train = distributed.mean_across_ranks([tot_loss / max(tot_n, 1)], state.device, state.info)[0]


def train_step(state: TrainState, batch: dict) -> tuple[float, dict[str, float], float] | None:
    """One update on ``batch``: its loss (weighted for this rank's share of the frames), the loss parts
    and the gradient norm; None when a non-finite loss or gradient skipped it."""
    cfg, info, optimizer = state.cfg, state.info, state.optimizer
    state.freezer.update(state.global_step)
    loss, parts = compute_loss(
        state.train_model,
        batch,
        state.tokenizer,
        cfg,
        state.device,
        state.global_step,
        state.teacher,
        state.attention_tokens,
    )
    # With DDP: this rank's share of the frames, and whether every rank can step (see step_sync).
    weight, finite = distributed.step_sync(
        _encoder_frames(state.model, batch), bool(torch.isfinite(loss)), state.device, info
    )
    if not finite:
        state.skipped += 1
        logger.warning(
            "step %d: non-finite loss %s%s, batch skipped (%d so far)",
            state.global_step,
            parts,
            " on some rank" if info.is_distributed else "",
            state.skipped,
        )
        optimizer.zero_grad(set_to_none=True)
        return None
    if weight != 1.0:
        loss = loss * weight
    state.scaler.scale(loss).backward()
    state.scaler.unscale_(optimizer)
    # The gradients are averaged over the ranks by now, so every rank sees the same norm
    # and makes the same decision here.
    grad_norm = torch.nn.utils.clip_grad_norm_(state.trainable, cfg.grad_clip, foreach=True)
    if not torch.isfinite(grad_norm):
        state.skipped += 1
        logger.warning("step %d: non-finite gradient, batch skipped (%d so far)", state.global_step, state.skipped)
        optimizer.zero_grad(set_to_none=True)
        state.scaler.update()
        return None
    state.scaler.step(optimizer)
    state.scaler.update()
    optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    state.global_step += 1
    if state.averager is not None:
        state.averager.update(state.model, state.global_step)
    return loss.item(), parts, grad_norm.item()


def _log_step(
    state: TrainState, epoch: int, mean_loss: float, loss: float, parts: dict[str, float], grad_norm: float
) -> None:
    """The --log-interval line (losses averaged over the ranks) and its tensorboard scalars."""
    mean_loss, step_loss = distributed.mean_across_ranks([mean_loss, loss], state.device, state.info)
    lr = state.scheduler.get_last_lr()[0]
    logger.info(
        "epoch %d step %d: loss %.4f (%s) lr %.2e grad-norm %.2f",
        epoch,
        state.global_step,
        mean_loss,
        " ".join(f"{k} {v:.3f}" for k, v in parts.items()),
        lr,
        grad_norm,
    )
    if state.writer:
        state.writer.add_scalar("train/loss", step_loss, state.global_step)
        for k, v in parts.items():
            state.writer.add_scalar(f"train/{k}", v, state.global_step)
        state.writer.add_scalar("train/lr", lr, state.global_step)


def end_epoch(state: TrainState, epoch: int) -> None:
    """Validate, log the epoch's losses and save ``epoch-<epoch>.pt``."""
    if state.data.valid is not None:
        state.last_valid = validate(
            state.model,
            state.data.valid,
            state.tokenizer,
            state.cfg,
            state.device,
            state.global_step,
            state.info,
            state.attention_tokens,
        )
        if state.writer:
            state.writer.add_scalar("valid/loss", state.last_valid, state.global_step)
    valid = f", valid loss {state.last_valid:.4f}" if state.last_valid is not None else ""
    logger.info(
        "epoch %d done: train loss %.4f%s, %.1f min elapsed",
        epoch,
        state.last_train,
        valid,
        (time.time() - state.t0) / 60,
    )
    save_checkpoint(state, f"epoch-{epoch}.pt", epoch, finished=True)


def save_checkpoint(state: TrainState, name: str, epoch: int, finished: bool) -> None:
    """Write ``exp_dir/name`` on rank 0 (every rank must call it: it gathers their random states).

    A step checkpoint (``finished`` False) records how many batches of ``epoch`` were seen, and
    only the newest --keep-last-k of them are kept.
    """
    info = state.info
    rng = distributed.gather_to_all(random_states(state.device), info)
    if not info.is_main:
        return
    ckpt = {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "grad_scaler": state.scaler.state_dict(),
        "model_config": state.mcfg.to_dict(),
        "train_config": state.cfg.to_dict(),
        "run": state.run,  # checked before this checkpoint is resumed (resume.check_same_run)
        "frontend": state.data.frontend,
        # Checked at decode/transcribe time against the lang dir given there (dsr.lang.vocabulary).
        "vocabulary": vocabulary_info(state.cfg.lang_dir, state.tokenizer.vocab_size),
        **(state.whisper.checkpoint_entries() if state.whisper is not None else {}),
        "epoch": epoch,
        "epoch_finished": finished,
        "batch_in_epoch": 0 if finished else state.batches_done,
        "world_size": info.world_size,
        "global_step": state.global_step,
        "skipped_batches": state.skipped,
        "random_states": rng,
        **({"model_avg": state.averager.state_dict()} if state.averager is not None else {}),
    }
    write_checkpoint(state.exp_dir / name, ckpt)
    if not finished:
        prune_step_checkpoints(state.exp_dir, state.cfg.keep_last_k)


def finish(state: TrainState) -> TrainResult:
    """Close the run: the summary every rank returns, and the done-marker once all epochs are trained."""
    if state.writer:
        state.writer.close()
    # The other ranks wait for rank 0's last checkpoint, so that every rank returns the same summary.
    distributed.barrier(state.device, state.info)
    epochs_done = max([e for e, _ in epoch_checkpoints(state.exp_dir)], default=0)
    result = TrainResult(
        state.exp_dir,
        epochs_done,
        state.global_step,
        state.last_train,
        state.last_valid,
        state.skipped,
        state.num_params,
        time.time() - state.t0,
    )
    if state.info.is_main and epochs_done >= state.cfg.num_epochs:
        mark_done(state.exp_dir, "train", {"epochs": epochs_done, "global_step": state.global_step, **state.run})
    return result


class TrainProgress:
    """A rich progress bar of a run (updates done / expected, last loss, ETA), or nothing when disabled.

    The bar goes on the console of dsr's rich log handler, so log lines print above it; without
    such a handler (logging set up otherwise) there is no bar.  The number of updates an epoch
    gives is not known before it is run (dynamic bucketing): it is estimated from the audio's
    duration until an epoch has been counted.
    """

    def __init__(self, enabled: bool, state: TrainState) -> None:
        self.state = state
        self.console = _rich_log_console() if enabled else None
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> TrainProgress:
        if self.console is None:
            return self
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("updates, loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._bar.__enter__()
        self._task = self._bar.add_task(
            "train", total=self.expected_updates(), completed=self.state.global_step, loss="-"
        )
        return self

    def expected_updates(self) -> int:
        """Updates the run will have made at its end: per epoch, about the training audio over the batch size."""
        s = self.state
        seconds = sum(c.duration for c in s.data.train_cuts)
        per_epoch = max(1, math.ceil(seconds / s.cfg.max_duration / s.info.world_size))
        total = per_epoch * s.cfg.num_epochs
        return min(total, s.cfg.max_steps) if s.cfg.max_steps else total

    def update(self, loss: float) -> None:
        if self._bar is not None:
            total = max(self._bar.tasks[0].total or 0, self.state.global_step)
            self._bar.update(self._task, completed=self.state.global_step, total=total, loss=f"{loss:.4f}")

    def epoch_done(self, epoch: int, updates: int) -> None:
        """Re-estimate the run's updates from those a whole epoch gave."""
        if self._bar is not None and updates > 0:
            total = self.state.global_step + (self.state.cfg.num_epochs - epoch) * updates
            if self.state.cfg.max_steps:
                total = min(total, self.state.cfg.max_steps)
            self._bar.update(self._task, total=total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def _rich_log_console() -> Any:
    """The console dsr's rich log handler writes to, if logging is set up with one."""
    from rich.logging import RichHandler

    return next((h.console for h in logger.handlers if isinstance(h, RichHandler)), None)


def _check_training_frontend(cfg: TrainConfig, train_cuts, mcfg: ModelConfig) -> dict[str, Any]:
    """The training cuts' front end (saved in every checkpoint), checked against what the model
    reads: Whisper's log-mel for ``pretrained`` and the initial model's front end for ``init_from``
    (the dev cuts are checked against it where they are loaded)."""
    frontend = frontend_of_cuts(train_cuts) or frontend_to_dict(FbankConfig())
    if mcfg.encoder_type == "whisper":
        wanted = frontend_to_dict(WhisperFbankConfig(num_mel_bins=mcfg.feature_dim))
        check_frontend_match(
            wanted, frontend, f"{{pretrained}} {cfg.pretrained}", f"features of {cfg.train_cuts}", expected_verb="reads"
        )
    elif frontend.get("num_mel_bins", mcfg.feature_dim) != mcfg.feature_dim:
        raise DsrUserError(
            f"features of {cfg.train_cuts} have {frontend.get('num_mel_bins')} bins; the model reads {mcfg.feature_dim}"
        )
    if cfg.init_from and Path(cfg.init_from).exists():
        source = Path(cfg.init_from)
        if source.is_file():
            init_frontend = load_checkpoint(source, "init_from").get("frontend")
            check_frontend_match(
                init_frontend or {}, frontend, f"{{init_from}} {cfg.init_from}", f"features of {cfg.train_cuts}"
            )
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
    if total is None or total_sq is None:
        raise ValueError("feature_stats needs at least one cut")
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
