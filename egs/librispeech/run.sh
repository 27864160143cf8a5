#!/usr/bin/env bash
# LibriSpeech recipe: manifests -> FBANK (+ speed perturbation, optional MUSAN noise) -> BPE -> train -> decode -> results.
#
# Usage (from anywhere; outputs go to egs/librispeech/data and egs/librispeech/exp unless --work-dir):
#   bash egs/librispeech/run.sh --corpus-dir /data/LibriSpeech          # train-clean-100; dev/test clean + other
#   bash egs/librispeech/run.sh --download true --download-dir /data/download   # fetch the parts from OpenSLR first
#   bash egs/librispeech/run.sh --corpus-dir /data/LibriSpeech --musan-dir /data/musan   # + MUSAN noise in training
#   bash egs/librispeech/run.sh --corpus-dir /data/LibriSpeech --train-part train-clean-5 \
#       --dev-part dev-clean-2 --test-parts dev-clean-2                # Mini LibriSpeech
#   bash egs/librispeech/run.sh --corpus-dir /data/LibriSpeech --stop-stage 1   # only manifests and features
#   bash egs/librispeech/run.sh --stage 3 --stop-stage 3               # only training
#
# --corpus-dir is the LibriSpeech folder holding the part folders (train-clean-100/, dev-clean/, ...);
# --musan-dir the musan folder holding noise/.  Splits are named like the parts.
#
# Stages:
#   0 prepare   data/manifests/librispeech_{recordings,supervisions}_<part>.jsonl.gz (+ musan_recordings_noise)
#   1 features  80-dim FBANK -> data/fbank/librispeech_cuts_<part>.jsonl.gz; the train part with 0.9/1.1
#               speed perturbation and, with --musan-dir, MUSAN noise at 10-20 dB SNR in half of the cuts
#   2 lang      BPE over the train part's transcripts -> data/lang_bpe_${vocab_size}
#   3 train     Conformer pruned RNN-T + CTC (conf/train.yaml: a GPU-sized starting point, not yet tuned on LibriSpeech)
#   4 decode    transducer greedy and modified beam search, CTC greedy, on every test part
#   5 results   table of WER/RTF -> exp/conformer/results.md
# Re-running skips stages that finished (pass --force to redo one).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../../tools/recipe_common.sh"

stage=0
stop_stage=100
corpus_dir=
download=false
download_dir=download
musan_dir=
train_part=train-clean-100
dev_part=dev-clean
test_parts="dev-clean dev-other test-clean test-other"
vocab_size=500
num_jobs=2
exp_dir=exp/conformer
config=$recipe_dir/conf/train.yaml
work_dir=$recipe_dir
force=

parse_options "$@"

config=$(abspath "$config")
work_dir=$(abspath "$work_dir")
download_dir=$(abspath "$download_dir")
[ -n "$corpus_dir" ] && corpus_dir=$(abspath "$corpus_dir")
[ -n "$musan_dir" ] && musan_dir=$(abspath "$musan_dir")
if [ $stage -le 0 ] && [ $stop_stage -ge 0 ] && [ -z "$corpus_dir" ] && [ "$download" != true ]; then
  echo "run.sh: pass --corpus-dir DIR (the LibriSpeech folder) or --download true (see --help)" >&2
  exit 2
fi
mkdir -p "$work_dir" && cd "$work_dir"
lang_dir=data/lang_bpe_${vocab_size}
# Every part once, in a stable order: the train part, the dev part, the test parts.
parts=$(echo $train_part $dev_part $test_parts | tr ' ' '\n' | awk '!seen[$0]++' | tr '\n' ' ')

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: manifests for $parts"
  if [ "$download" = true ]; then
    source_opts="--download --download-dir $download_dir"
  else
    source_opts="--corpus-dir $corpus_dir"
  fi
  dsr prepare librispeech $source_opts --dataset-parts "$parts" --manifest-dir data/manifests -j $num_jobs $force
  if [ -n "$musan_dir" ]; then
    dsr prepare musan --corpus-dir "$musan_dir" --part noise --manifest-dir data/manifests -j $num_jobs $force
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: FBANK"
  noise_opts=
  [ -n "$musan_dir" ] && noise_opts="--noise data/manifests/musan_recordings_noise.jsonl.gz --noise-snr 10 20 --noise-prob 0.5"
  dsr features --corpus librispeech --split $train_part --speed-perturb $noise_opts \
    --manifest-dir data/manifests --out-dir data/fbank -j $num_jobs $force
  eval_splits=
  for part in $parts; do
    [ "$part" != "$train_part" ] && eval_splits="$eval_splits --split $part"
  done
  dsr features --corpus librispeech $eval_splits --manifest-dir data/manifests --out-dir data/fbank -j $num_jobs $force
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: BPE"
  dsr lang --cuts data/manifests/librispeech_supervisions_${train_part}.jsonl.gz --lang-dir $lang_dir \
    --vocab-size $vocab_size $force
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: train (resumes from the newest checkpoint in $exp_dir)"
  dsr train --config "$config" --exp-dir $exp_dir --lang-dir $lang_dir $force \
    --train-cuts data/fbank/librispeech_cuts_${train_part}.jsonl.gz --dev-cuts data/fbank/librispeech_cuts_${dev_part}.jsonl.gz
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: decode $test_parts"
  cuts_opts=
  for part in $test_parts; do
    cuts_opts="$cuts_opts --cuts data/fbank/librispeech_cuts_${part}.jsonl.gz"
  done
  dsr decode --exp-dir $exp_dir --lang-dir $lang_dir -m greedy -m modified-beam-search -m ctc-greedy $cuts_opts
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: results"
  dsr results --exp-dir $exp_dir
fi
log "finished stages $stage..$stop_stage"
