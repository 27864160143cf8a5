"""Resuming a run: which checkpoint, and restoring the parts whose fit must be checked.

A checkpoint resumes exactly: the model, optimiser, scheduler, grad scaler, running
average and counters are restored, and a mid-epoch checkpoint's epoch goes on
after the batches it had seen (the trainer replays the sampler, see
:class:`dsr.training.datamodule.ResumableSampler`).  Every rank's random-number
states are saved too, so dropout and SpecAugment (in the main process) draw the
masks they would have drawn without the interruption: a resumed float32 run on
the CPU ends with the same weights as an uninterrupted one (tests/test_ddp.py).

A checkpoint also records what the run trained on (:func:`run_record`: the content of the
training cuts and of the BPE model, and the model's options); a checkpoint of another run
is never resumed (:func:`check_same_run`), and :func:`set_aside_run` moves an earlier run out
of the way for ``dsr train --force`` (design note 40).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsr.errors import DsrUserError, OptionError
from dsr.models.checkpoint import latest_checkpoint, load_checkpoint
from dsr.training import distributed
from dsr.training.config import TrainConfig
from dsr.training.distributed import DistInfo
from dsr.training.init import split_patterns
from dsr.training.model_average import ModelAverager
from dsr.utils import input_fingerprint

logger = logging.getLogger("dsr")


def find_resume_state(cfg: TrainConfig, exp_dir: Path, info: DistInfo) -> tuple[dict[str, Any], Path] | None:
    """The checkpoint to resume from, and its path.  Rank 0 picks it, so every rank loads the same one."""
    if cfg.start_epoch == 0:
        # Only rank 0 scans: finding the newest checkpoint reads every checkpoint in exp-dir.
        path = latest_checkpoint(exp_dir) if info.is_main else None
    elif cfg.start_epoch == 1:
        path = None
    else:
        path = exp_dir / f"epoch-{cfg.start_epoch - 1}.pt"
        if not path.is_file():
            raise OptionError(f"{{start_epoch}} {cfg.start_epoch} needs {path}; it does not exist")
    path = distributed.broadcast_from_main(path, info)
    if path is None:
        return None
    if not path.is_file():
        raise OptionError(
            f"rank {info.rank} cannot see {path}: with several nodes, {{exp_dir}} must be on a filesystem they all share"
        )
    logger.info("resuming from %s", path)
    return load_checkpoint(path), path


# How a changed input is named in the message (the option names the file; its content changed).
_INPUT_CHANGE = {
    "train_cuts": "holds other cuts",
    "lang_dir": "holds another bpe.model",
    "speech_llm": "is another LLM (other files, or changed since)",
}

# What shapes a speech-LLM's checkpoints besides its LLM: what is trained (stage 2 adds the
# LoRA adapters and top encoder layers) and the prompt it is trained with.
_SPEECH_LLM_OPTIONS = (
    "speech_llm_stage", "projector_stack", "projector_hidden", "speech_llm_instruction", "speech_llm_chat_template",
)  # fmt: skip
_SPEECH_LLM_STAGE2_OPTIONS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "speech_llm_encoder_top")


def run_record(cfg: TrainConfig) -> dict[str, Any]:
    """What makes checkpoints this run's: ``{"inputs": fingerprints, "options": the model's options}``.

    The inputs are the content of the training cuts and of the lang dir's ``bpe.model`` (not
    their paths: the same data moved elsewhere is the same run); the options are the
    architecture's (:class:`~dsr.training.config.ModelOptions`), which the weights are shaped by.
    Learning rate, epochs, batch size and the like may change between a run and its resumption.
    Stored in every checkpoint and in the ``train`` done-marker.

    A speech-LLM run (``speech_llm``) records the training cuts, its LLM (as
    :func:`dsr.lm.load.fingerprint`, which its checkpoints and decoding check too), the
    ``bpe.model`` of its CTC head if it has one, and the options its checkpoints are shaped by:
    the stage, the projector, the prompt, and in stage 2 the LoRA adapters and trained encoder layers.
    """
    # --train-cuts may be several manifests, comma-separated: one fingerprint of them all, in order.
    parts = [p.strip() for p in cfg.train_cuts.split(",")]
    cuts = input_fingerprint({f"{i:03d}": p for i, p in enumerate(parts)})
    inputs = {"train_cuts": cuts["000"] if len(parts) == 1 else "; ".join(cuts[k] for k in sorted(cuts))}
    # A speech-LLM reads the lang dir only for its CTC head; a transducer always does.
    if not cfg.speech_llm or cfg.ctc_loss_scale > 0:
        inputs.update(input_fingerprint({"lang_dir": Path(cfg.lang_dir) / "bpe.model"}))
    options: dict[str, Any]
    if cfg.speech_llm:
        from dsr.lm.load import fingerprint
        from dsr.models.speech_llm import resolve_llm_path

        inputs["speech_llm"] = fingerprint(resolve_llm_path(cfg.speech_llm, "speech_llm"))
        names = _SPEECH_LLM_OPTIONS + (_SPEECH_LLM_STAGE2_OPTIONS if cfg.speech_llm_stage == 2 else ())
        options = {name: getattr(cfg, name) for name in names}
        options["ctc_loss_scale"] = "> 0 (a CTC head)" if cfg.ctc_loss_scale > 0 else "0 (no CTC head)"
    else:
        options = asdict(cfg.model)
    # Through JSON, as the done-marker stores them, so that a record compares equal to itself read back.
    return {"inputs": inputs, "options": json.loads(json.dumps(options))}


def run_changes(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between a recorded :func:`run_record` and this run's, each part naming its option
    as ``{field}`` (an :class:`~dsr.errors.OptionError` template); empty when nothing does, or
    when ``recorded`` predates run records (checkpoints of older dsr versions: trusted, as before).
    A speech-LLM run and a transducer run differ in that alone.
    """
    if "inputs" not in recorded:
        return []
    old_inputs, new_inputs = recorded["inputs"], now["inputs"]
    if ("speech_llm" in old_inputs) != ("speech_llm" in new_inputs):
        return [f"it was trained {'with' if 'speech_llm' in old_inputs else 'without'} {{speech_llm}}"]
    changes = []
    # Inputs both read (a speech-LLM reads a bpe.model only with a CTC head, which its options record).
    for role in sorted(set(old_inputs) & set(new_inputs)):
        if old_inputs[role] != new_inputs[role]:
            changes.append(f"{{{role}}} {_INPUT_CHANGE.get(role, 'changed')}")
    old_options, new_options = recorded.get("options") or {}, now["options"]
    # Options both know: one added by a later dsr has the default that builds what it built before.
    for name in sorted(set(old_options) & set(new_options)):
        if old_options[name] != new_options[name]:
            changes.append(f"{{{name}}} {old_options[name]!r} -> {new_options[name]!r}")
    return changes


def check_same_run(recorded: Mapping[str, Any], now: Mapping[str, Any], exp_dir: Path) -> None:
    """Raise :class:`~dsr.errors.OptionError` when ``exp_dir``'s checkpoints (their ``recorded``
    :func:`run_record`) come from other inputs or model options than this run's (``now``)."""
    changes = run_changes(recorded, now)
    if changes:
        raise OptionError(
            f"{{exp_dir}} {exp_dir} holds checkpoints of another run ({'; '.join(changes)}): resume it with what "
            "it was trained on, give a new {exp_dir}, or {force} to move its files aside and train afresh"
        )


# What dsr train (and dsr decode / dsr results after it) write in an exp dir: a run's own files.
_RUN_FILES = (
    "config.yaml", ".done.train", "log", "tensorboard", "decode",
    "results.md", "results.json", "training_curves.png", "wer.png",
)  # fmt: skip
_RUN_PATTERNS = ("epoch-*.pt", "checkpoint-*.pt")


def set_aside_run(exp_dir: Path) -> Path | None:
    """Move an earlier run's files in ``exp_dir`` into ``exp_dir/replaced-<time>/``; that folder,
    or None when ``exp_dir`` held none.

    Training then starts afresh in ``exp_dir``, and the earlier run is kept whole (checkpoints,
    config.yaml, logs, decode results and tables): the folder is an exp dir of its own.  Only
    what dsr writes there is moved; other files (an export the user put there) stay.
    """
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        return None
    earlier = {exp_dir / name for name in _RUN_FILES if (exp_dir / name).exists()}
    earlier |= {p for pattern in _RUN_PATTERNS for p in exp_dir.glob(pattern)}
    if not earlier:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = exp_dir / f"replaced-{stamp}"
    n = 1
    while dest.exists():  # two --force runs within a second
        n += 1
        dest = exp_dir / f"replaced-{stamp}-{n}"
    dest.mkdir()
    for path in sorted(earlier):
        path.rename(dest / path.name)
    return dest


def restore_average(averager: ModelAverager, state: dict[str, Any]) -> None:
    if "model_avg" not in state:
        logger.warning(
            "the checkpoint has no running model average; it starts afresh at step %d, so "
            "decoding with --use-averaged-model needs epochs trained from here on",
            state["global_step"],
        )
        return
    try:
        averager.load_state_dict(state["model_avg"])
    except OptionError:
        raise  # it names the option, which dsr train shows as its flag
    except ValueError as e:
        raise DsrUserError(str(e)) from e


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Load the optimiser state, which only fits if the same parameters are trainable as when it was saved."""
    saved_freeze = state.get("train_config", {}).get("freeze", "")
    if split_patterns(saved_freeze) != split_patterns(cfg.freeze):
        raise OptionError(
            f"{path} was trained with {{freeze}} {saved_freeze!r}, this run has {{freeze}} {cfg.freeze!r}; resume with "
            "the same {freeze}, or start a new {exp_dir} with {init_from} to change what is trained"
        )
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as e:
        raise OptionError(f"the optimizer state in {path} does not fit this model ({e}); use a new {{exp_dir}}") from e


def check_mid_epoch_resume(state: dict[str, Any], path: Path, info: DistInfo) -> None:
    """A mid-epoch checkpoint can only be continued by as many processes as wrote it.

    Which batches remain in the epoch depends on how lhotse dealt them to the ranks;
    epoch-end checkpoints have no such state and resume with any number of processes.
    """
    saved = state.get("world_size", 1)
    if saved != info.world_size:
        epoch = state["epoch"]
        raise OptionError(
            f"{path} was written in the middle of epoch {epoch} by {saved} training process(es), this run has "
            f"{info.world_size}: resume with {saved}, or restart epoch {epoch} from its start with {{start_epoch}} {epoch}"
        )


def random_states(device: torch.device) -> dict[str, Any]:
    """This process's random-number generator states (Python, NumPy, torch CPU and, on a GPU, CUDA)."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_random_states(saved: list[dict[str, Any]] | None, device: torch.device, info: DistInfo) -> None:
    """Set this rank's generators to the states it had at the checkpoint (``saved`` has one entry per rank)."""
    if not saved or len(saved) != info.world_size:
        logger.info(
            "random-number states not restored (the checkpoint has %s for %d processes): "
            "dropout and SpecAugment masks will differ from an uninterrupted run",
            len(saved) if saved else "none",
            info.world_size,
        )
        return
    states = saved[info.rank]
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)
