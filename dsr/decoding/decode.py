"""Stage ``dsr decode``: decode a cuts manifest with one or more methods and score it.

Writes, per method and split, under ``<exp_dir>/decode/<method>/<split>/``:
``recogs.txt`` (ref/hyp pairs), ``errs.txt`` (alignments), ``wer.txt`` (one line),
and returns :class:`DecodeResult` rows for the summary table.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dsr.decoding.greedy import ctc_greedy_search, transducer_greedy_search
from dsr.errors import DsrUserError
from dsr.evaluation.wer import score, write_errs, write_recogs
from dsr.lang.bpe import Tokenizer
from dsr.models.config import ModelConfig, build_model
from dsr.training.checkpoint import resolve_model_checkpoint
from dsr.training.datamodule import batch_features, load_cuts, make_loader
from dsr.training.trainer import resolve_device
from dsr.utils import write_json_atomic, write_text_atomic

logger = logging.getLogger("dsr")

METHODS = ("greedy", "ctc-greedy")


@dataclass
class DecodeResult:
    method: str
    split: str
    wer: float
    errors: int
    ref_words: int
    num_utts: int
    rtf: float
    out_dir: Path

    def summary(self) -> str:
        return (
            f"{self.method} on {self.split}: WER {self.wer:.2f}% ({self.errors}/{self.ref_words} words, "
            f"{self.num_utts} utts), RTF {self.rtf:.4f} -> {self.out_dir}"
        )


def load_model(exp_dir: Path, epoch: int = 0, avg: int = 1, device: torch.device | str = "cpu"):
    """Build the model stored in ``exp_dir``'s checkpoint (averaged if asked); eval mode."""
    ckpt, tag = resolve_model_checkpoint(exp_dir, epoch, avg)
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, tag


def split_name(cuts_file: Path) -> str:
    """``data/fbank/synth_cuts_test.jsonl.gz`` -> ``synth_test``."""
    name = Path(cuts_file).name.split(".")[0]
    return name.replace("_cuts_", "_").replace("_cuts", "")


def decode_hyps(model, batch: dict, method: str, device: torch.device) -> list[list[int]]:
    feats, lens = batch_features(batch, device)
    enc, enc_lens = model.encode(feats, lens)
    if method == "greedy":
        return transducer_greedy_search(model, enc, enc_lens)
    if method == "ctc-greedy":
        return ctc_greedy_search(model.ctc_log_probs(enc), enc_lens, blank=model.blank_id)
    raise DsrUserError(f"--method {method!r} is unknown; choose from {', '.join(METHODS)}")


def decode(
    exp_dir: Path,
    cuts_file: Path,
    lang_dir: Path,
    methods: tuple[str, ...] = ("greedy",),
    epoch: int = 0,
    avg: int = 1,
    max_duration: float = 300.0,
    device: str = "auto",
    num_threads: int = 0,
    progress: bool = True,
) -> list[DecodeResult]:
    for m in methods:
        if m not in METHODS:
            raise DsrUserError(f"--method {m!r} is unknown; choose from {', '.join(METHODS)}")
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    dev = resolve_device(device)
    tokenizer = Tokenizer(lang_dir)
    model, tag = load_model(Path(exp_dir), epoch, avg, dev)
    cuts = load_cuts(cuts_file)
    split = split_name(cuts_file)
    audio_seconds = sum(c.duration for c in cuts)
    loader, _ = make_loader(cuts, max_duration, shuffle=False)
    from rich.progress import Progress

    results: list[DecodeResult] = []
    for method in methods:
        triples: list[tuple[str, str, str]] = []
        start = time.perf_counter()
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"{method} {split}", total=len(cuts))
            for batch in loader:
                hyps = decode_hyps(model, batch, method, dev)
                for cut, hyp in zip(batch["supervisions"]["cut"], hyps):
                    triples.append((cut.id, cut.supervisions[0].text or "", tokenizer.decode(hyp)))
                bar.advance(task, len(hyps))
        elapsed = time.perf_counter() - start
        stats = score(triples)
        out = Path(exp_dir) / "decode" / method / split
        write_recogs(out / "recogs.txt", triples)
        write_errs(out / "errs.txt", stats)
        write_text_atomic(out / "wer.txt", f"{tag}\t{stats.summary()}\n")
        res = DecodeResult(method, split, stats.wer, stats.errors, stats.ref_words, stats.num_sents,
                           elapsed / max(audio_seconds, 1e-9), out)
        write_json_atomic(out / "result.json", {
            "method": method, "split": split, "checkpoint": tag, "wer": res.wer, "errors": res.errors,
            "ref_words": res.ref_words, "num_utts": res.num_utts, "rtf": res.rtf,
            "audio_seconds": audio_seconds, "decode_seconds": elapsed,
        })
        logger.info(res.summary())
        results.append(res)
    return results
