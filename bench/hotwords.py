"""Hotword benchmark: biased-word recall, false alarms and WER with and without a hotwords list.

Usage:
    # the synth recipe's model and data (egs/synth/run.sh), default bonuses 1, 2, 3 per token:
    python bench/hotwords.py --exp-dir egs/synth/exp/conformer --data-dir egs/synth/data --out-dir bench-out/hotwords
    # a given checkpoint, other bonuses, one method:
    python bench/hotwords.py --exp-dir <synth-work-dir>/exp/conformer --epoch 4 --avg 1 --data-dir <synth-work-dir>/data \\
        --out-dir bench-out/hotwords-extra --scores 1 2 3 --methods modified-beam-search ctc-prefix-beam-search

Two hotword lists, each with a biased set spoken by the held-out test voices of the synth
corpus (dsr.synth.corpus.prepare_synth_sentences), built once under ``<out-dir>/data``
(fixed --seed; rebuilt when its sentences change):

* names: NAMES / PLACES below (written for this benchmark: uncommon given names and
  foreign places, none a word of the grammar, and checked at every run to be absent from
  ``<data-dir>/manifests/synth_supervisions_train.jsonl.gz``) in the grammar's ``person``
  and ``city`` slots (dsr.synth.sentences.generate_slot_sentences), --num-utts sentences;
* rare: the grammar words said at most RARE_MAX_COUNT times in the training transcripts,
  and up to --num-utts held-out grammar sentences that contain them.

The unbiased set is the recipe's test split (``<data-dir>/fbank/synth_cuts_test``) without
the utterances that say a word of either list.

Every method decodes each biased set and the unbiased set without biasing (bonus 0) and
with every word of the list (``<out-dir>/hotwords_<list>.txt``) active at each bonus of
--scores.  Reported per row: WER on the biased set, biased-word recall (hotword occurrences
of the references that the hypotheses hold), precision and false alarms
(dsr.evaluation.hotwords), and WER and false alarms on the unbiased set.  Prints a table and
writes ``<out-dir>/hotwords.json`` and the recognitions under
``<out-dir>/recogs/<list>-<method>-<bonus>/``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from lhotse import CutSet

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsr.data.cuts import load_cuts  # noqa: E402
from dsr.decoding.context_graph import ContextGraph, load_context_graph  # noqa: E402
from dsr.decoding.loading import load_model  # noqa: E402
from dsr.decoding.methods import check_method  # noqa: E402
from dsr.decoding.search import SearchOptions, nbest_search  # noqa: E402
from dsr.errors import DsrUserError  # noqa: E402
from dsr.evaluation.hotwords import hotword_stats  # noqa: E402
from dsr.evaluation.wer import score, write_recogs  # noqa: E402
from dsr.lang.bpe import Tokenizer  # noqa: E402
from dsr.models.transducer import HybridTransducer  # noqa: E402
from dsr.synth.sentences import generate_sentences, generate_slot_sentences, vocabulary  # noqa: E402
from dsr.training.datamodule import batch_features, make_loader  # noqa: E402
from dsr.utils import is_done, mark_done, read_done_info, write_json_atomic, write_text_atomic  # noqa: E402

# Uncommon given names for the grammar's <person> slot and places for its <city> slot.
NAMES = (
    "THADDEUS", "GWENDOLYN", "BARNABY", "PERPETUA", "IGNATIUS", "ROSALIND", "LEOPOLD", "MAGDALENA",
    "CORNELIUS", "OTTILIE", "FLORENTINA", "BARTHOLOMEW", "CASIMIR", "HORTENSE", "EZEKIEL", "LUDMILA",
)  # fmt: skip
PLACES = (
    "REYKJAVIK", "TIMBUKTU", "VALPARAISO", "KALAMAZOO", "MONTEVIDEO", "SAMARKAND", "WINNIPEG", "HELSINKI",
    "ZANZIBAR", "MANDALAY", "GUADALAJARA", "MARRAKESH", "TASHKENT", "KATHMANDU", "BRATISLAVA", "NAGASAKI",
)  # fmt: skip
# The second list: words of the grammar said at most this often in the training transcripts.
RARE_MAX_COUNT = 5
CORPUS = "hotwords"
FIRST_PASS_METHODS = ("modified-beam-search", "ctc-prefix-beam-search")


@dataclass
class EncodedSet:
    """Encoder output of a whole evaluation set, kept so every search reuses one encoder pass."""

    name: str
    batches: list[tuple[torch.Tensor, torch.Tensor, list[str], list[str]]]  # enc, lens, utt ids, references


@dataclass
class HotwordList:
    """A hotword list and the biased set that says its words."""

    name: str
    words: tuple[str, ...]
    cuts: Path


def train_word_counts(data_dir: Path) -> tuple[list[str], Counter[str]]:
    """Training transcripts and their word counts (the definition of rare and unseen)."""
    from lhotse import load_manifest

    train_sup = data_dir / "manifests" / "synth_supervisions_train.jsonl.gz"
    if not train_sup.is_file():
        raise DsrUserError(f"{train_sup} does not exist; pass the recipe's --data-dir (with manifests/)")
    texts = [s.text or "" for s in load_manifest(train_sup)]
    return texts, Counter(w for t in texts for w in t.split())


def synthesize_set(out_dir: Path, split: str, sentences: list[str], seed: int, num_jobs: int) -> Path:
    """Speak ``sentences`` with the held-out test voices (once; redone when they change); return the cuts."""
    from dsr.features.extract import compute_features, cuts_path
    from dsr.synth.corpus import prepare_synth_sentences

    digest = hashlib.sha1("\n".join(sentences).encode("utf-8")).hexdigest()[:12]
    data = out_dir / "data"
    cuts = cuts_path(data / "fbank", CORPUS, split)
    stage = f"{CORPUS}-{split}"
    if cuts.is_file() and is_done(data, stage) and read_done_info(data, stage).get("sentences_sha1") == digest:
        return cuts
    prepare_synth_sentences(sentences, data / CORPUS, data / "manifests", CORPUS, split, seed=seed, num_jobs=num_jobs)
    report = compute_features(data / "manifests", CORPUS, split, data / "fbank", num_jobs=1, progress=False)
    mark_done(data, stage, {"sentences_sha1": digest, "num_cuts": report.num_cuts, "seed": seed})
    return cuts


def build_lists(data_dir: Path, out_dir: Path, num_utts: int, seed: int, num_jobs: int) -> list[HotwordList]:
    """The two hotword lists and their biased sets (see the module docstring)."""
    train_texts, counts = train_word_counts(data_dir)
    seen = sorted(w for w in NAMES + PLACES if counts[w])
    if seen:
        raise DsrUserError(
            f"hotwords {', '.join(seen)} occur in the training transcripts; the names list must be unseen"
        )
    names = generate_slot_sentences(num_utts, seed, {"person": NAMES, "city": PLACES}, exclude=set(train_texts))
    rare = tuple(sorted(w for w in vocabulary() if counts[w] <= RARE_MAX_COUNT))
    pool = generate_sentences(50 * num_utts, seed, exclude=set(train_texts))
    rare_sentences = [t for t in pool if set(t.split()) & set(rare)][:num_utts]
    return [
        HotwordList("names", NAMES + PLACES, synthesize_set(out_dir, "names", names, seed, num_jobs)),
        HotwordList("rare", rare, synthesize_set(out_dir, "rare", rare_sentences, seed, num_jobs)),
    ]


def encode_set(
    model: HybridTransducer,
    cuts_file: Path,
    name: str,
    max_duration: float,
    root: Path,
    avoid: frozenset[str] = frozenset(),
) -> EncodedSet:
    """Encode every cut whose text says no word of ``avoid``; relative feature paths (the
    recipe writes ``data/fbank/...``) are under ``root``."""
    cuts = CutSet.from_cuts(c for c in load_cuts(cuts_file) if not set((c.supervisions[0].text or "").split()) & avoid)
    first = next(iter(cuts), None)
    if first is not None and first.features is not None and not Path(first.features.storage_path).is_absolute():
        cuts = cuts.with_features_path_prefix(str(root))
    loader, _ = make_loader(cuts, max_duration, shuffle=False)
    batches = []
    with torch.no_grad():
        for batch in loader:
            feats, lens = batch_features(batch, torch.device("cpu"))
            enc, enc_lens = model.encode(feats, lens)
            cuts = batch["supervisions"]["cut"]
            batches.append((enc, enc_lens, [c.id for c in cuts], [c.supervisions[0].text or "" for c in cuts]))
    return EncodedSet(name, batches)


def decode_set(
    model: HybridTransducer, tokenizer: Tokenizer, data: EncodedSet, method: str, opts: SearchOptions
) -> tuple[list[tuple[str, str, str]], float]:
    """(utt id, reference, hypothesis) triples of one search over a set, and its seconds."""
    triples: list[tuple[str, str, str]] = []
    start = time.perf_counter()
    with torch.no_grad():
        for enc, lens, ids, refs in data.batches:
            for utt, ref, hyps in zip(ids, refs, nbest_search(model, enc, lens, method, opts)):
                triples.append((utt, ref, tokenizer.decode(hyps[0].tokens)))
    return triples, time.perf_counter() - start


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True, help="Recipe data dir: manifests/, fbank/, lang_bpe_N/.")
    p.add_argument("--lang-dir", type=Path, help="Default: the one lang_bpe_* under --data-dir.")
    p.add_argument("--unbiased-cuts", type=Path, help="Default: <data-dir>/fbank/synth_cuts_test.jsonl.gz.")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--methods", nargs="+", default=list(FIRST_PASS_METHODS), choices=FIRST_PASS_METHODS)
    p.add_argument("--scores", nargs="+", type=float, default=[1.0, 2.0, 3.0], help="Hotword bonuses per token (> 0).")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--num-utts", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-jobs", type=int, default=2, help="TTS processes for building the biased set.")
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--max-duration", type=float, default=60.0)
    args = p.parse_args()
    try:
        run(args)
    except DsrUserError as e:
        sys.exit(f"error: {e}")


def run(args: argparse.Namespace) -> None:
    if any(s <= 0 for s in args.scores):
        raise DsrUserError(f"--scores must be > 0 (bonus 0, no biasing, is always run); got {args.scores}")
    torch.set_num_threads(args.num_threads)
    lang_dir = args.lang_dir
    if lang_dir is None:
        found = sorted(args.data_dir.glob("lang_bpe_*"))
        if len(found) != 1:
            raise DsrUserError(f"found {len(found)} lang_bpe_* dirs under {args.data_dir}; pass --lang-dir")
        lang_dir = found[0]
    unbiased_cuts = args.unbiased_cuts or args.data_dir / "fbank" / "synth_cuts_test.jsonl.gz"
    if not unbiased_cuts.is_file():
        raise DsrUserError(f"--unbiased-cuts {unbiased_cuts} does not exist")
    out_dir: Path = args.out_dir
    lists = build_lists(args.data_dir, out_dir, args.num_utts, args.seed, args.num_jobs)
    tokenizer = Tokenizer(lang_dir)
    model, tag = load_model(args.exp_dir, args.epoch, args.avg, "cpu")
    for m in args.methods:
        check_method(model, m)
    # The recipe runs in the parent of data/, so its cuts name their features relative to that.
    root = args.data_dir.resolve().parent
    every_hotword = frozenset(w for hl in lists for w in hl.words)
    unbiased = encode_set(model, unbiased_cuts, "unbiased", args.max_duration, root, avoid=every_hotword)
    rows = []
    for hl in lists:
        hotwords_file = out_dir / f"hotwords_{hl.name}.txt"
        write_text_atomic(hotwords_file, "".join(w + "\n" for w in hl.words))
        biased = encode_set(model, hl.cuts, "biased", args.max_duration, root)
        for method in args.methods:
            for bonus in [0.0, *args.scores]:
                graph: ContextGraph | None = None
                if bonus > 0:
                    graph = load_context_graph(hotwords_file, tokenizer.encode, default_score=bonus)
                row: dict = {"list": hl.name, "method": method, "bonus": bonus}
                for data in (biased, unbiased):
                    triples, seconds = decode_set(
                        model, tokenizer, data, method, SearchOptions(args.beam_size, 1, graph)
                    )
                    stats, hw = score(triples), hotword_stats(triples, hl.words)
                    write_recogs(out_dir / "recogs" / f"{hl.name}-{method}-{bonus:g}" / f"{data.name}.txt", triples)
                    row[data.name] = {
                        "wer": stats.wer,
                        "errors": stats.errors,
                        "ref_words": stats.ref_words,
                        "utts": stats.num_sents,
                        "hotword_refs": hw.ref_occurrences,
                        "recognised": hw.recognised,
                        "recall": hw.recall,
                        "hotword_hyps": hw.hyp_occurrences,
                        "precision": hw.precision,
                        "false_alarms": hw.false_alarms,
                        "seconds": seconds,
                    }
                rows.append(row)
                b, u = row["biased"], row["unbiased"]
                print(
                    f"{hl.name:5s} {method:24s} bonus {bonus:4g}: biased WER {b['wer']:6.2f} recall "
                    f"{_pct(b['recall']):>5s} precision {_pct(b['precision']):>5s} FA {b['false_alarms']:3d} | "
                    f"unbiased WER {u['wer']:6.2f} FA {u['false_alarms']:3d}",
                    flush=True,
                )
    result = {
        "command": " ".join(sys.argv),
        "checkpoint": f"{args.exp_dir}:{tag}",
        "lang_dir": str(lang_dir),
        "unbiased_cuts": str(unbiased_cuts),
        "unbiased_utts": sum(len(b[2]) for b in unbiased.batches),
        "beam_size": args.beam_size,
        "lists": {
            hl.name: {
                "biased_cuts": str(hl.cuts),
                "hotwords": list(hl.words),
                "tokens": {w: [tokenizer.id_to_piece(i) for i in tokenizer.encode(w)] for w in hl.words},
            }
            for hl in lists
        },
        "rows": rows,
    }
    write_json_atomic(out_dir / "hotwords.json", result)
    print_table(rows)
    print(f"wrote {out_dir / 'hotwords.json'}")


def print_table(rows: list[dict]) -> None:
    print(
        "\n| list | method | bonus/token | biased WER % | recall % | precision % | false alarms | unbiased WER % | unbiased false alarms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, u = r["biased"], r["unbiased"]
        print(
            f"| {r['list']} | {r['method']} | {r['bonus']:g} | {b['wer']:.2f} | {_pct(b['recall'])} ({b['recognised']}/{b['hotword_refs']}) "
            f"| {_pct(b['precision'])} | {b['false_alarms']} | {u['wer']:.2f} | {u['false_alarms']} |"
        )


if __name__ == "__main__":
    main()
