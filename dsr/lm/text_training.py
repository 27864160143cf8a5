"""Training loop shared by LM fine-tuning and training from scratch.

Sentences are encoded exactly as :class:`~dsr.lm.scorer.LlmScorer` scores them
(same text transform, ``[BOS] text [EOS]``), so the training loss is the quantity
that rescoring later uses.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dsr.errors import DsrUserError
from dsr.lm.load import DSR_LM_INFO
from dsr.lm.scorer import LlmScorer
from dsr.utils import write_json_atomic

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger("dsr")

IGNORE = -100  # label of padded positions: transformers' loss skips it


def read_texts(path: Path | str) -> list[str]:
    """Training sentences: non-empty lines of a text file, or the transcripts of a supervisions manifest.

    A lhotse supervisions manifest (``*.jsonl.gz``/``*.jsonl``, e.g. a recipe's
    ``data/manifests/<corpus>_supervisions_train.jsonl.gz``) gives its texts normalised
    as the recogniser writes hypotheses (:func:`~dsr.data.normalize.normalize_text`), each
    distinct text once: repeated takes of one prompt would otherwise weigh it several
    times.  Reading the training split's manifest directly keeps dev/test text out.
    """
    path = Path(path)
    if not path.is_file():
        raise DsrUserError(f"{path}: no such text file; give in-domain text with one sentence per line")
    if path.name.endswith((".jsonl.gz", ".jsonl")):
        texts = _supervision_texts(path)
    else:
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise DsrUserError(f"{path}: has no non-empty lines; give in-domain text with one sentence per line")
    return texts


def _supervision_texts(path: Path) -> list[str]:
    """Distinct normalised ``text`` fields of a supervisions manifest, in first-seen order."""
    from lhotse import load_manifest
    from lhotse.supervision import SupervisionSet

    from dsr.data.normalize import normalize_text

    try:
        manifest = load_manifest(path)
    except Exception as e:  # lhotse raises bare ValueError/KeyError/JSON errors for foreign files
        raise DsrUserError(
            f"{path}: not a lhotse supervisions manifest ({type(e).__name__}); "
            "give a supervisions .jsonl.gz or a text file with one sentence per line"
        ) from e
    if not isinstance(manifest, SupervisionSet):
        raise DsrUserError(
            f"{path}: is a {type(manifest).__name__}, not a supervisions manifest; "
            "give <corpus>_supervisions_<split>.jsonl.gz"
        )
    texts = (normalize_text(s.text or "") for s in manifest)
    return list(dict.fromkeys(t for t in texts if t))


def check_hparams(epochs: int, lr: float, batch_size: int) -> None:
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _batch(seqs: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels``, each (B, T)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        t = torch.tensor(s, dtype=torch.long)
        ids[b, : len(s)], labels[b, : len(s)], mask[b, : len(s)] = t, t, 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train_causal_lm(
    model: torch.nn.Module,
    scorer: LlmScorer,
    texts: list[str],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
    weight_decay: float = 0.0,
) -> dict[str, Any]:
    """Train ``model`` (the one inside ``scorer``, or its PEFT wrapper) on ``texts`` in place.

    AdamW, linear warm-up over the first 10% of steps then linear decay, gradient
    clipping at 1.0.  Returns per-epoch mean token loss, steps, tokens and seconds.
    The model is left in eval mode.
    """
    check_hparams(epochs, lr, batch_size)
    seqs = [scorer.token_ids(t) for t in texts]
    device = scorer.device
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    total_steps = epochs * math.ceil(len(seqs) / batch_size)
    warmup = max(1, total_steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(total_steps - warmup, 1)))
    )
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(seqs), generator=gen).tolist()
        loss_sum, tok_sum = 0.0, 0
        for i in range(0, len(order), batch_size):
            padded = _batch([seqs[j] for j in order[i : i + batch_size]], scorer.pad_id)
            batch = {k: v.to(device) for k, v in padded.items()}
            loss = model(**batch).loss  # mean over predicted (non-IGNORE, shifted) tokens
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            loss_sum, tok_sum = loss_sum + loss.item() * n, tok_sum + n
        losses.append(loss_sum / max(tok_sum, 1))
        logger.info("epoch %d/%d: mean token loss %.4f", epoch + 1, epochs, losses[-1])
    model.eval()
    scorer.cache.clear()  # scores cached before training are stale
    return {
        "epoch_losses": losses,
        "steps": total_steps,
        "sentences": len(seqs),
        "tokens": sum(len(s) - 1 for s in seqs),
        "seconds": time.perf_counter() - start,
    }


def mean_score(scorer: LlmScorer, texts: list[str], batch_size: int) -> float:
    """Mean sentence log-probability (nats) of ``texts``: the before/after check of training."""
    return sum(scorer.score(texts, batch_size=batch_size)) / len(texts)


def save_lm(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path, info: dict[str, Any]) -> None:
    """Save as a plain Hugging Face directory (safetensors) plus ``dsr_lm.json`` (``info``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_json_atomic(out_dir / DSR_LM_INFO, info)
