"""Train a small DeepSeek-family causal LM from scratch on in-domain text.

Two configurations: ``deepseek_v3`` (multi-head latent attention + a mixture of
experts, as DeepSeek-V3/R1) and ``qwen2`` (the architecture of the DeepSeek-R1
distills).  The tokenizer is a byte-level BPE trained on the same text with
``tokenizers`` (no download; any character is encodable), or one reused from an
existing model.  The result is a Hugging Face directory that :class:`LlmScorer` loads.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dsr.lm.load import load_tokenizer, require_packages
from dsr.lm.scorer import DEFAULT_TRANSFORM, TEXT_TRANSFORMS, LlmScorer, boundary_tokens
from dsr.lm.text_training import mean_score, read_texts, save_lm, train_causal_lm

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

logger = logging.getLogger("dsr")

CONFIGS = ("deepseek_v3", "qwen2")
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
_BYTES = 256  # a byte-level BPE needs every byte in its base alphabet


@dataclass(frozen=True)
class LmSize:
    """Model size; DeepSeek-V3 sub-dimensions are derived from these.

    ``num_experts=0`` makes every deepseek_v3 layer a dense MLP (qwen2 ignores it).
    """

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_experts: int = 4
    max_positions: int = 512

    def check(self) -> None:
        if min(self.hidden_size, self.num_layers, self.num_heads, self.max_positions) < 1 or self.num_experts < 0:
            raise ValueError(f"sizes must be positive (num_experts >= 0): {self}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(
                f"hidden_size {self.hidden_size} must split into {self.num_heads} heads of even size "
                "(rotary embeddings rotate pairs of dimensions)"
            )


def train_bpe_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerBase:
    """Byte-level BPE (GPT-2 style) with ``<|pad|>``, ``<|bos|>``, ``<|eos|>`` as ids 0, 1, 2.

    ``vocab_size`` counts the 256 bytes and 3 special tokens; a small corpus may yield fewer merges.
    """
    if vocab_size < _BYTES + 3:
        raise ValueError(f"vocab_size must be >= {_BYTES + 3} (256 bytes + 3 special tokens), got {vocab_size}")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def build_config(name: str, vocab_size: int, size: LmSize, bos_id: int, eos_id: int, pad_id: int) -> PretrainedConfig:
    """A ``transformers`` config of family ``name`` (one of :data:`CONFIGS`) at ``size``."""
    size.check()
    h, head = size.hidden_size, size.hidden_size // size.num_heads
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=h,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_heads,
        max_position_embeddings=size.max_positions,
        intermediate_size=3 * h,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    if name == "deepseek_v3":
        from transformers import DeepseekV3Config

        experts = max(size.num_experts, 1)
        return DeepseekV3Config(
            **common,
            # latent attention: low-rank query and key/value projections, as in DeepSeek-V3 (ranks ~ hidden/4, hidden/2)
            q_lora_rank=max(h // 2, 8),
            kv_lora_rank=max(h // 4, 8),
            qk_nope_head_dim=head,
            qk_rope_head_dim=head // 2 + (head // 2) % 2,
            v_head_dim=head,
            # mixture of experts after the first (dense) layer; num_experts=0 keeps every layer dense
            n_routed_experts=experts,
            num_experts_per_tok=min(2, experts),
            n_shared_experts=1,
            moe_intermediate_size=h,
            n_group=1,
            topk_group=1,
            first_k_dense_replace=1 if size.num_experts else size.num_layers,
        )
    if name == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(**common, tie_word_embeddings=True)
    raise ValueError(f"config {name!r} is not one of {', '.join(CONFIGS)}")


def train_lm(
    texts_file: Path | str,
    out_dir: Path | str,
    config: str = "deepseek_v3",
    size: LmSize = LmSize(),
    tokenizer: str = "bpe",
    vocab_size: int = 2000,
    text_transform: str = DEFAULT_TRANSFORM,
    epochs: int = 10,
    lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train a causal LM from scratch on ``texts_file`` (one sentence per line) into ``out_dir``.

    Args:
        tokenizer: ``"bpe"`` trains a byte-level BPE of ``vocab_size`` on the text;
            otherwise a model directory or ``.gguf`` file whose tokenizer is reused.
        text_transform: how sentences are cased before training (a key of
            :data:`TEXT_TRANSFORMS`); saved so the scorer applies the same one.
        epochs: 0 saves the freshly initialised model (a baseline).

    Returns ``{"initial_score", "final_score", "epoch_losses", ...}``: mean sentence
    log-probability of the training text before and after training, and loss per epoch.
    """
    require_packages("transformers", "tokenizers")
    from transformers import AutoModelForCausalLM

    from dsr.device import resolve_device

    if config not in CONFIGS:
        raise ValueError(f"config {config!r} is not one of {', '.join(CONFIGS)}")
    if text_transform not in TEXT_TRANSFORMS:
        raise ValueError(f"text_transform {text_transform!r} is not one of {', '.join(TEXT_TRANSFORMS)}")
    texts = read_texts(texts_file)
    transform = TEXT_TRANSFORMS[text_transform]
    if tokenizer == "bpe":
        tok = train_bpe_tokenizer([transform(t) for t in texts], vocab_size)
    else:
        tok = load_tokenizer(tokenizer)
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    cfg = build_config(config, len(tok), size, bos, tok.eos_token_id, pad)
    torch.manual_seed(seed)  # the same seed gives the same initial model
    model = AutoModelForCausalLM.from_config(cfg).to(resolve_device(device)).eval()
    bos_token, eos_token = boundary_tokens(tok)  # a reused chat tokenizer frames sentences as dsr rescore will
    scorer = LlmScorer(
        model, tok, text_transform=text_transform, name=str(out_dir), bos_token=bos_token, eos_token=eos_token
    )
    initial = mean_score(scorer, texts, batch_size)
    stats = train_causal_lm(model, scorer, texts, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    final = mean_score(scorer, texts, batch_size)
    info = {
        "text_transform": text_transform,
        "trained_from": "scratch",
        "config": config,
        "size": asdict(size),
        "tokenizer": tokenizer,
        "vocab_size": len(tok),
        "texts_file": str(texts_file),
        "parameters": sum(p.numel() for p in model.parameters()),
        "initial_score": initial,
        "final_score": final,
        **scorer.boundary_info(),
        **stats,
    }
    save_lm(model, tok, Path(out_dir), info)
    logger.info(
        "trained %s (%d parameters): mean sentence log-prob %.2f -> %.2f", config, info["parameters"], initial, final
    )
    return info
