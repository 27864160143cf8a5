"""Adapt a pretrained causal LM to in-domain text: LoRA (default) or full fine-tuning.

LoRA adapters (``peft``) are merged into the weights before saving, so the output is
a plain Hugging Face directory that :class:`LlmScorer` loads without ``peft``.
Full fine-tuning updates every weight: only sensible for tiny models on a CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from dsr.errors import DsrUserError
from dsr.lm.load import load_causal_lm, read_lm_info, require_packages
from dsr.lm.scorer import DEFAULT_TRANSFORM, LlmScorer, model_boundary_tokens
from dsr.lm.text_training import check_hparams, mean_score, read_texts, save_lm, train_causal_lm

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger("dsr")


def finetune(
    llm_path: Path | str,
    texts_file: Path | str,
    out_dir: Path | str,
    lora: bool = True,
    epochs: int = 3,
    lr: float | None = None,
    batch_size: int = 16,
    lora_rank: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    text_transform: str | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Fine-tune the LM at ``llm_path`` (directory or ``.gguf``) on ``texts_file``; save to ``out_dir``.

    Args:
        lora: train rank-``lora_rank`` adapters on every linear layer (all but the
            output layer) and merge them; False trains all weights.
        lora_dropout: must stay 0 for DeepSeek-V3 models: peft cannot apply dropout
            to the fused expert weights of a mixture-of-experts layer.
        lr: default 2e-4 with LoRA, 2e-5 for full fine-tuning.
        text_transform: as in :class:`LlmScorer`; None keeps the model's own
            (``dsr_lm.json``) or ``"sentence"``.

    Returns ``{"initial_score", "final_score", "epoch_losses", ...}`` (mean sentence
    log-probability of the training text before and after), also saved in ``dsr_lm.json``.
    """
    lr = lr if lr is not None else (2e-4 if lora else 2e-5)
    check_hparams(epochs, lr, batch_size)
    if lora and (lora_rank < 1 or lora_alpha <= 0 or not 0 <= lora_dropout < 1):
        raise ValueError(
            f"need lora_rank >= 1, lora_alpha > 0, 0 <= lora_dropout < 1; got {lora_rank}, {lora_alpha}, {lora_dropout}"
        )
    require_packages("transformers", "peft" if lora else "transformers")
    texts = read_texts(texts_file)
    transform = text_transform or read_lm_info(llm_path).get("text_transform", DEFAULT_TRANSFORM)
    # float32 whatever the source: adapter and AdamW updates underflow in half precision.
    model, tokenizer = load_causal_lm(llm_path, dtype="float32", device=device)
    if getattr(model, "hf_quantizer", None) is not None:
        raise DsrUserError(
            f"{llm_path}: its weights stay packed in GGUF blocks (a GGUF kernel is installed) and "
            "cannot be trained; convert it to a Hugging Face directory first"
        )
    bos_token, eos_token = model_boundary_tokens(llm_path, tokenizer)  # as dsr rescore will frame sentences
    scorer = LlmScorer(
        model, tokenizer, text_transform=transform, name=str(out_dir), bos_token=bos_token, eos_token=eos_token
    )
    initial = mean_score(scorer, texts, batch_size)
    if lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)  # LoRA's A matrices are initialised randomly
        cfg = LoraConfig(
            task_type="CAUSAL_LM",
            r=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules="all-linear",
        )
        # get_peft_model wraps the layers of ``model`` in place, so ``scorer`` sees the adapters.
        peft_model = get_peft_model(model, cfg)
        stats = train_causal_lm(peft_model, scorer, texts, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
        final = mean_score(scorer, texts, batch_size)
        model = cast("PreTrainedModel", peft_model.merge_and_unload())
    else:
        for p in model.parameters():
            p.requires_grad_(True)
        stats = train_causal_lm(model, scorer, texts, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
        final = mean_score(scorer, texts, batch_size)
    info = {
        "text_transform": transform,
        "trained_from": str(llm_path),
        "method": "lora" if lora else "full",
        "lr": lr,
        "lora_rank": lora_rank if lora else None,
        "texts_file": str(texts_file),
        "initial_score": initial,
        "final_score": final,
        **scorer.boundary_info(),
        **stats,
    }
    save_lm(model, tokenizer, Path(out_dir), info)
    logger.info("fine-tuned %s (%s): mean sentence log-prob %.2f -> %.2f", llm_path, info["method"], initial, final)
    return info
