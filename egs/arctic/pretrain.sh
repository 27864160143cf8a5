#!/usr/bin/env bash
# Pretraining for the ARCTIC recipe: the TTS voices read public-domain English (the King
# James Bible and the fortunes collection), never a sentence near an ARCTIC prompt, and
# the embedded recipe's model is trained on it; run.sh then fine-tunes that model on the
# speaker (docs/RESULTS.md, ARCTIC: beam-8 test WER 68.8 % -> 54.7 % with 8000 sentences,
# 48.2 % with 16000, 46.9 % with 24000; each step continued the previous model).
#
# Usage (outputs go to egs/arctic/pretrain unless --work-dir; the model of N sentences to exp/pdN):
#   bash tools/setup.sh --pretrain-text                    # Debian bible-kjv + fortunes, once
#   bash egs/synth/run.sh --stop-stage 3                   # the model to start from
#   bash egs/arctic/pretrain.sh                            # 8000 sentences, 8 epochs -> exp/pd8000
#   bash egs/arctic/run.sh --init-from egs/arctic/pretrain/exp/pd8000/epoch-8.pt --init-lang-dir egs/synth/data/lang_bpe_128
#   # more text, each step continuing the last (the measured chain; earlier wavs are reused):
#   bash egs/arctic/pretrain.sh --stage 1 --num-sentences 16000 --num-epochs 6 \
#       --init-from egs/arctic/pretrain/exp/pd8000/epoch-8.pt
#   bash egs/arctic/pretrain.sh --stage 1 --num-sentences 24000 --num-epochs 4 \
#       --init-from egs/arctic/pretrain/exp/pd16000/epoch-6.pt
#   bash egs/arctic/run.sh --init-from egs/arctic/pretrain/exp/pd24000/epoch-4.pt --init-lang-dir egs/synth/data/lang_bpe_128
#   # TTS speech for the heads on a pretrained Whisper encoder instead (Whisper's log-mel, no Conformer to train):
#   bash egs/arctic/pretrain.sh --stop-stage 2 --num-sentences 24000 --feature-type whisper-fbank
#   bash egs/arctic/run.sh --pretrained whisper-tiny.en --config egs/arctic/conf/whisper_tts.yaml \
#       --extra-train-cuts egs/arctic/pretrain/data/whisper_fbank_24000/synth_cuts_train.jsonl.gz --exp-dir exp/whisper-tiny.en-tts
# (paths on the command line are relative to where you run it; these run from the repository root)
#
# Stages:
#   0 text      tools/public_domain_text.py -> data/pd_text.txt
#   1 synth     dsr prepare synth --text-source file, excluding every prompt of --corpus-dir
#               -> data/manifests_N (the wavs in data/synth_pd are shared by every N)
#   2 features  80-dim FBANK (no speed perturbation: the voices' rates already vary) -> data/fbank_N;
#               with --feature-type whisper-fbank Whisper's log-mel -> data/whisper_fbank_N (for run.sh --pretrained)
#   3 train     continue the --init-from model (its BPE, --init-lang-dir) on the synthetic speech -> exp/pdN
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../../tools/recipe_common.sh"

stage=0
stop_stage=100
corpus_dir=$root/../shared/data/arctic_cathy   # its prompts are kept out of the text
init_from=$root/egs/synth/exp/conformer/epoch-4.pt
init_lang_dir=$root/egs/synth/data/lang_bpe_128
num_sentences=8000
num_epochs=8
num_jobs=2
feature_type=kaldi-fbank   # whisper-fbank: Whisper's log-mel, for the heads of run.sh --pretrained (stage 3 then refused)
work_dir=$recipe_dir/pretrain
force=

parse_options "$@"
corpus_dir=$(abspath "$corpus_dir")
init_from=$(abspath "$init_from")
init_lang_dir=$(abspath "$init_lang_dir")
work_dir=$(abspath "$work_dir")
if [ ! -f "$corpus_dir/transcripts.tsv" ]; then
  echo "pretrain.sh: $corpus_dir/transcripts.tsv not found: its prompts must be excluded; pass --corpus-dir" >&2
  exit 2
fi
mkdir -p "$work_dir" && cd "$work_dir"
# One manifest/feature/model dir per size: a second run with more sentences must not find
# the first one's "done" markers and skip.
manifests=data/manifests_$num_sentences
case $feature_type in
  kaldi-fbank) fbank=data/fbank_$num_sentences ;;
  whisper-fbank) fbank=data/whisper_fbank_$num_sentences ;;
  *) echo "pretrain.sh: --feature-type takes kaldi-fbank or whisper-fbank, got '$feature_type'" >&2; exit 2 ;;
esac
exp_dir=exp/pd$num_sentences
if [ "$feature_type" != kaldi-fbank ] && [ $stop_stage -ge 3 ]; then
  echo "pretrain.sh: stage 3 trains the FBANK Conformer; with --feature-type $feature_type add --stop-stage 2" \
    "and pass $work_dir/$fbank/synth_cuts_train.jsonl.gz to run.sh --extra-train-cuts" >&2
  exit 2
fi

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: public-domain text"
  python "$root/tools/public_domain_text.py" --out data/pd_text.txt
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: synthesise $num_sentences sentences (+200 dev), none near a prompt of $corpus_dir"
  dsr prepare synth --text-source file --text-file data/pd_text.txt --exclude-text "$corpus_dir/transcripts.tsv" \
    --num-train "$num_sentences" --num-dev 200 --num-test 0 --corpus-dir data/synth_pd --manifest-dir $manifests \
    -j $num_jobs $force
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: features ($feature_type) -> $fbank"
  dsr features --corpus synth --split train --split dev --manifest-dir $manifests --out-dir $fbank \
    --feature-type $feature_type -j $num_jobs $force
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: train (from $init_from)"
  dsr train --config "$root/egs/synth/conf/train.yaml" --init-from "$init_from" --lang-dir "$init_lang_dir" \
    --train-cuts $fbank/synth_cuts_train.jsonl.gz --dev-cuts $fbank/synth_cuts_dev.jsonl.gz --exp-dir $exp_dir \
    --num-epochs "$num_epochs" --model-warm-step 1 --ctc-encoder-warmup-steps 0 --lr-decay-epochs $(( (num_epochs + 1) / 2 )) \
    --gain-db 10 $force
fi
log "finished stages $stage..$stop_stage"
