"""``dsr rescore``: n-best rescoring with a causal LLM."""

from __future__ import annotations

from typing import Any

from dsr.cli.common import console
from dsr.cli.options import build, flag_errors, make_command
from dsr.lm.options import RescoreOptions, output_dir

__all__ = ["output_dir", "rescore"]  # output_dir: where its results go, for scripts and tests


def _search_oracle(result: dict) -> str:
    """The first pass's own oracle, when an n-best expansion added hypotheses."""
    own = result.get("search_oracle_wer")
    return f"; {own:.2f}% before expansion" if own is not None and own != result["oracle_wer"] else ""


def _without_llm(result: dict) -> str:
    wer = result.get("without_llm_wer")
    return "" if wer is None else f"; {wer:.2f}% without the LLM"


_DOC = """Rescore n-best lists with a causal LLM: writes recogs.txt, errs.txt, wer.txt, result.json, llm_scores.jsonl.

    total = am_score [+ lm_score] + LM_WEIGHT * llm_logprob + LENGTH_BONUS * words [+ CTC_WEIGHT * ctc_score]
    [+ ATTENTION_WEIGHT * attention_score]; lm_score is the fused n-gram's of dsr decode --ngram-lm.
    LLM scores are saved, so re-running with other weights does not run the LLM again.

    Examples:

        dsr rescore --nbest exp/conformer/decode/beam/synth_test/nbest.jsonl --tune-on exp/conformer/decode/beam/synth_dev/nbest.jsonl

        dsr rescore --nbest exp/conformer/decode/beam/synth_test/nbest.jsonl --llm exp/lm/deepseek --weights exp/conformer/decode/beam+llm/synth_dev/weights.json
    """


def _rescore(**flags: Any) -> None:
    with flag_errors(RescoreOptions):
        o = build(RescoreOptions, flags)  # grids and weights checked before torch and the LLM load
    from dsr.lm.load import default_llm_path
    from dsr.lm.rescore import WEIGHTS_FILE, check_nbest_files, choose_weights, load_scorer, rescore_all

    check_nbest_files(o)
    console.print(f"loading LLM {o.llm if o.llm is not None else default_llm_path()}")
    scorer = load_scorer(o)
    weights, without_llm = choose_weights(o, scorer)
    if o.tune_on is not None:
        console.print(f"[green]done[/] tune: {weights.tag()} -> {output_dir(o.tune_on, o.out_dir) / WEIGHTS_FILE}")
    for out, r in rescore_all(o, scorer, weights, without_llm):
        console.print(
            f"[green]done[/] rescore {r['split']}: WER {r['first_pass_wer']:.2f}% -> {r['rescored_wer']:.2f}% "
            f"(oracle {r['oracle_wer']:.2f}%{_search_oracle(r)}{_without_llm(r)}, {r['num_hyps']} hyps, "
            f"LLM {r['llm_seconds']:.1f} s) -> {out}",
            highlight=False,
        )


rescore = make_command(RescoreOptions, _rescore, _DOC, required=("nbest",))
