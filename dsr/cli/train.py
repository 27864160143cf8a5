"""``dsr train``: every :class:`~dsr.training.config.TrainConfig` field is a flag.

The signature is generated from the dataclass so that flags, YAML keys and the
saved ``config.yaml`` can never drift apart.  Flags default to ``None`` (= not
given) so that a value from ``--config`` is only overridden when a flag is typed.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from dsr.cli.common import already_done, console, setup_logging, show_progress
from dsr.errors import DsrUserError, OptionError
from dsr.training.config import TrainConfig
from dsr.utils import is_done, read_done_info

_DOC = """Train a Conformer transducer with pruned RNN-T + CTC losses.

Resumes automatically from the newest checkpoint in --exp-dir (epoch-E.pt or
checkpoint-STEP.pt), so an interrupted run continues where it stopped; checkpoints
made from other training cuts, another BPE model or other model options are not
resumed (an error says what changed; --force moves them aside and starts afresh).
Options can come from --config conf/train.yaml, whose keys are the flag names;
flags given on the command line win.  The resolved options are saved to
EXP_DIR/config.yaml, logs to EXP_DIR/log/ and TensorBoard events to EXP_DIR/tensorboard/.

Examples:

    dsr train --config conf/train.yaml

    dsr train --config conf/train.yaml --num-epochs 20 --exp-dir exp/longer

    dsr train --train-cuts data/fbank/my_cuts_train.jsonl.gz --dev-cuts '' --lang-dir data/lang_bpe_500

Data-parallel on 4 GPUs (or CPU processes with --device cpu), one node:

    torchrun --nproc-per-node 4 -m dsr.cli.main train --config conf/train.yaml

Two nodes of 8 GPUs (run on each node, with NODE_RANK 0 and 1; exp-dir on a shared disk):

    torchrun --nnodes 2 --node-rank NODE_RANK --nproc-per-node 8 --master-addr HOST0 --master-port 29500 -m dsr.cli.main train --config conf/train.yaml

A speech-LLM (Whisper encoder -> projector -> SmolLM2): stage 1 the projector, stage 2 with LoRA:

    dsr train --config egs/arctic/conf/speech_llm_stage1.yaml --pretrained whisper-tiny.en --speech-llm default --train-cuts data/whisper_fbank/arctic_cuts_train.jsonl.gz --dev-cuts data/whisper_fbank/arctic_cuts_dev.jsonl.gz --exp-dir exp/speech-llm-stage1

    dsr train --config egs/arctic/conf/speech_llm_stage2.yaml --init-from exp/speech-llm-stage1 --speech-llm default --train-cuts data/whisper_fbank/arctic_cuts_train.jsonl.gz --dev-cuts data/whisper_fbank/arctic_cuts_dev.jsonl.gz --exp-dir exp/speech-llm-stage2

Fine-tune a pretrained model on new data with a new BPE model, encoder frozen, less memory:

    dsr train --config conf/train.yaml --init-from exp/pretrained --init-exclude predictor.embedding,joiner.output_linear,simple_am_proj,simple_lm_proj,ctc_output --freeze encoder --activation-checkpointing
"""


def _train(config: Path | None, force: bool, **flags: Any) -> None:
    try:
        _run(config, force, flags)
    except OptionError as e:  # the library names fields; here they are flags (YAML keys are the same names)
        raise DsrUserError(e.as_flags()) from None


def _run(config: Path | None, force: bool, flags: dict[str, Any]) -> None:
    import time

    from dsr.training.config import resolve_config
    from dsr.training.distributed import env_info
    from dsr.training.resume import check_same_run, run_record, set_aside_run
    from dsr.training.trainer import train as run_train

    cfg = resolve_config(config, flags)
    exp_dir = Path(cfg.exp_dir)
    # Under torchrun only rank 0 keeps a log file (the other ranks log warnings to stderr) and moves files.
    is_main = env_info().is_main
    if force:
        moved = set_aside_run(exp_dir) if is_main else None
        if moved is not None:
            console.print(f"[yellow]redo[/] train: the earlier run in {exp_dir} is now in {moved}")
    elif is_done(exp_dir, "train") and _done_epochs(exp_dir) >= cfg.num_epochs:
        # Finished, but on these inputs?  A run on others must not be reported as done.
        check_same_run(read_done_info(exp_dir, "train"), run_record(cfg), exp_dir)
        already_done(exp_dir, "train", force=False)  # prints the skip line
        return
    log_file = exp_dir / "log" / f"log-train-{time.strftime('%Y-%m-%d-%H-%M-%S')}.txt" if is_main else None
    setup_logging(log_file=log_file)
    result = run_train(cfg, progress=show_progress())
    if is_main:
        console.print(f"[green]done[/] train: {result.summary()}")


def _done_epochs(exp_dir: Path) -> int:
    from dsr.models.checkpoint import epoch_checkpoints

    return max((e for e, _ in epoch_checkpoints(exp_dir)), default=0)


def _build() -> Any:
    params = [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, "--config", help="YAML file whose keys are these flag names."),
            annotation=Optional[Path],  # noqa: UP045  (read by typer at run time)
        ),
        inspect.Parameter(
            "force",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(
                False,
                "--force",
                help="Train afresh: an earlier run in exp-dir (checkpoints, logs, decodes) is moved to "
                "exp-dir/replaced-<time>/ first.",
            ),
            annotation=bool,
        ),
    ]
    helps = TrainConfig.field_help()
    for f in TrainConfig.flat_fields():  # the nested model options are flags of their own
        flag = "--" + f.name.replace("_", "-")
        typ = type(f.default)
        decl = f"{flag}/--no-{flag[2:]}" if typ is bool else flag
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(None, decl, help=f"{helps[f.name]} [default: {f.default!r}]", show_default=False),
                annotation=Optional[typ],  # noqa: UP045  (read by typer at run time)
            )
        )

    def train(**kwargs: Any) -> None:
        _train(**kwargs)

    train.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    train.__annotations__ = {p.name: p.annotation for p in params}
    train.__doc__ = _DOC
    return train


train = _build()
