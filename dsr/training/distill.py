"""Distillation from a teacher model during ``dsr train --teacher``.

The teacher is any dsr checkpoint (another architecture is fine) that shares the
student's tokenizer and encoder frame rate.  It runs in eval mode without gradients
on the same (augmented) features as the student; see :mod:`dsr.losses.distill` for
the KL terms.  ``ctc`` compares CTC frame posteriors; ``joiner`` compares the pruned
transducer joiner outputs on the *student's* prune ranges (both models need a
transducer; the teacher's joiner is evaluated on exactly the student's lattice cells).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from dsr.errors import OptionError
from dsr.lang.bpe import Tokenizer
from dsr.losses.distill import ctc_distillation_loss, pruned_joiner_distillation_loss
from dsr.models.checkpoint import load_checkpoint, resolve_model_checkpoint
from dsr.models.config import ModelConfig, build_model
from dsr.models.transducer import HybridTransducer

logger = logging.getLogger("dsr")

DISTILL_HEADS = ("ctc", "joiner")


def parse_distill_heads(value: str) -> tuple[str, ...]:
    """``"ctc"``, ``"joiner"`` or ``"ctc,joiner"`` -> a tuple of head names (DsrUserError otherwise)."""
    heads = tuple(h.strip() for h in value.split(",") if h.strip())
    bad = [h for h in heads if h not in DISTILL_HEADS]
    if not heads or bad or len(set(heads)) != len(heads):
        raise OptionError("distill_heads", f"must be ctc, joiner or ctc,joiner (got {value!r})")
    return heads


def load_teacher(
    spec: str, student: ModelConfig, tokenizer: Tokenizer, heads: tuple[str, ...], device: torch.device
) -> HybridTransducer:
    """Load the teacher from a checkpoint file, or from an exp dir (the model that
    ``dsr decode`` loads by default: its newest epoch with the running average), frozen
    and in eval mode; DsrUserError if it cannot be distilled into ``student``."""
    path = Path(spec)
    if path.is_dir():
        ckpt, tag = resolve_model_checkpoint(path)
        where = f"{path} ({tag})"
    else:
        ckpt, where = load_checkpoint(path, "teacher"), str(path)
    if "model_config" not in ckpt or "model" not in ckpt:
        raise OptionError(f"{{teacher}} {where} is not a dsr model checkpoint (no model_config/model)")
    tcfg = ModelConfig.from_dict(ckpt["model_config"])
    for name in ("vocab_size", "blank_id", "feature_dim"):
        if getattr(tcfg, name) != getattr(student, name):
            raise OptionError(
                f"{{teacher}} {where} has {name}={getattr(tcfg, name)}, the student {getattr(student, name)}: "
                "teacher and student must share the tokenizer and the features"
            )
    _check_same_tokenizer(ckpt, tokenizer, where)
    if "ctc" in heads and not (tcfg.use_ctc and student.use_ctc):
        raise OptionError(f"{{distill_heads}} ctc needs CTC heads in teacher and student; {{teacher}} {where} has none")
    if "joiner" in heads and not (tcfg.use_transducer and student.use_transducer):
        raise OptionError(f"{{distill_heads}} joiner needs transducers in teacher and student ({{teacher}} {where})")
    teacher = build_model(tcfg)
    teacher.load_state_dict(ckpt["model"])
    teacher.to(device).eval().requires_grad_(False)
    logger.info(
        "teacher: %s, %.2f M parameters, distilling %s",
        where,
        sum(p.numel() for p in teacher.parameters()) / 1e6,
        "+".join(heads),
    )
    return teacher


def _check_same_tokenizer(ckpt: dict, tokenizer: Tokenizer, where: str) -> None:
    """Compare the teacher's bpe.model with the student's when the teacher's lang dir is
    still where its training config says (equal vocab sizes alone do not prove equal pieces)."""
    lang_dir = (ckpt.get("train_config") or {}).get("lang_dir")
    teacher_bpe = Path(lang_dir) / "bpe.model" if lang_dir else None
    if teacher_bpe is None or not teacher_bpe.is_file():
        logger.warning("cannot find the teacher's tokenizer (%s); only its vocabulary size was checked", teacher_bpe)
        return
    student_pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    other = Tokenizer(teacher_bpe.parent)
    if [other.id_to_piece(i) for i in range(other.vocab_size)] != student_pieces:
        raise OptionError(
            f"{{teacher}} {where} was trained with {teacher_bpe}, whose tokens differ from {{lang_dir}}'s"
        )


def distillation_losses(
    teacher: HybridTransducer,
    student_out: dict[str, torch.Tensor],
    features: torch.Tensor,
    feature_lens: torch.Tensor,
    heads: tuple[str, ...],
    temperature: float,
) -> dict[str, torch.Tensor]:
    """``distill_ctc_loss`` and/or ``distill_joiner_loss`` (float32 sums over the batch).

    Args:
        teacher: the frozen teacher (from :func:`load_teacher`).
        student_out: the student's ``forward(..., return_outputs=True)`` dictionary.
        features: (N, T, F) the features the student saw; feature_lens: (N,).
        heads: subset of :data:`DISTILL_HEADS`.
        temperature: softmax temperature.
    """
    with torch.no_grad():
        enc, enc_lens = teacher.encode(features, feature_lens)
        student_lens = student_out["encoder_lens"]
        if enc_lens.shape != student_lens.shape or not torch.equal(enc_lens, student_lens):
            raise OptionError(
                f"{{teacher}} produces {enc_lens.tolist()} encoder frames where the student has {student_lens.tolist()}: "
                "teacher and student must have the same frame rate (subsampling)"
            )
        teacher_ctc = teacher.ctc_log_probs(enc) if "ctc" in heads else None
        teacher_joiner = None
        if "joiner" in heads:
            teacher_joiner = teacher.pruned_joiner_logits(enc, student_out["sos_y_padded"], student_out["prune_ranges"])
    out: dict[str, torch.Tensor] = {}
    if teacher_ctc is not None:
        out["distill_ctc_loss"] = ctc_distillation_loss(
            student_out["ctc_log_probs"], teacher_ctc, student_lens, temperature
        )
    if teacher_joiner is not None:
        out["distill_joiner_loss"] = pruned_joiner_distillation_loss(
            student_out["pruned_logits"],
            teacher_joiner,
            student_out["prune_ranges"],
            student_lens,
            student_out["y_lens"],
            temperature,
        )
    return out
