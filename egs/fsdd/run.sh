#!/usr/bin/env bash
# Free Spoken Digit Dataset recipe: isolated English digits, trained on three speakers and
# tested on a held-out one (yweweler), the way ../shared/data/fsdd is meant to be used.
#
# Usage (from anywhere; outputs go to egs/fsdd/data and egs/fsdd/exp unless --work-dir):
#   bash egs/fsdd/run.sh                                   # data from ../shared/data/fsdd
#   bash egs/fsdd/run.sh --corpus-dir /data/fsdd           # any folder with audio/ + transcripts.tsv
#   bash egs/fsdd/run.sh --stage 3 --stop-stage 3          # only training
#   bash egs/fsdd/run.sh --num-synth-digits 0              # without the synthetic digits
#   bash egs/fsdd/run.sh --stage 4 --avg 1                 # decode the last epoch's running average only
#   bash egs/synth/run.sh --stop-stage 3 && \
#   bash egs/fsdd/run.sh --init-from egs/synth/exp/conformer/epoch-4.pt --init-lang-dir egs/synth/data/lang_bpe_128
#                                                          # fine-tune the synth recipe's model (better, see RESULTS)
#   bash egs/fsdd/run.sh --pretrained whisper-tiny.en      # fine-tune pretrained Whisper tiny.en (tools/setup.sh
#                                                          # --whisper); zero-shot Whisper decoded beside it
#   bash egs/fsdd/run.sh --pretrained whisper-tiny.en --seed 1 --exp-dir exp/whisper-tiny.en-seed1
#   bash egs/fsdd/run.sh --pretrained whisper-tiny.en --init-from exp/whisper-tiny.en --stage 3 \
#     --config CONF --exp-dir exp/whisper-tiny.en-more   # continue that fine-tune (CONF: e.g. a lower base-lr)
#
# The corpus folder holds audio/<digit>_<speaker>_<index>.{wav,flac} and transcripts.tsv
# ("utt-id<TAB>text" lines, digits written as words).
#
# Stages:
#   0 prepare   split by speaker (test: yweweler; dev: ~10 % of the other speakers' files);
#               synthesise $num_synth_digits isolated digits with the offline TTS voices
#               (espeak-ng, flite, festival) at 8 kHz: the speaker variety three people lack
#   1 features  80-dim FBANK at 16 kHz (the 8 kHz audio is resampled); FSDD train with 0.9/1.1 speed perturbation
#               (Whisper's log-mel with --pretrained, in data/whisper_fbank)
#   2 lang      BPE over the ten digit words (with --init-from: the pretrained model's own, --init-lang-dir)
#   3 train     small Conformer transducer + CTC on FSDD train + the synthetic digits
#               (from scratch with conf/train.yaml, or from --init-from with conf/finetune.yaml,
#               which also trims the training words' quiet edges: --endpoint-trim-db, see RESULTS)
#   4 decode    greedy transducer + CTC greedy on dev and test, with the weights averaged
#               over the last $avg epochs; with --pretrained also the Whisper decoder (greedy) and
#               zero-shot Whisper by dsr and by faster-whisper (exp/zeroshot-<name>)
#   5 results   WER/RTF table -> exp/conformer/results.md (exp/finetune/ with --init-from)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../../tools/recipe_common.sh"

stage=0
stop_stage=100
corpus_dir=$root/../shared/data/fsdd
test_speaker=yweweler
vocab_size=30
num_synth_digits=3000   # 0: FSDD's three speakers only
num_jobs=2
avg=             # decode the running average of the weights over the last $avg epochs (default 3; 1 with
                 # --pretrained, whose 3 epochs' average would include the new heads' random start)
exp_dir=
config=
init_from=       # checkpoint to fine-tune (e.g. the synth recipe's epoch-4.pt); empty: from scratch
init_lang_dir=   # with --init-from: the lang dir that checkpoint was trained with
pretrained=      # e.g. whisper-tiny.en: fine-tune a pretrained Whisper (tools/setup.sh --whisper)
seed=42
work_dir=$recipe_dir
force=

parse_options "$@"

corpus_dir=$(abspath "$corpus_dir")
init_args=()
if [ -n "$pretrained" ] && [ -n "$init_lang_dir" ]; then
  echo "run.sh: --init-lang-dir is for a dsr Conformer's --init-from; with --pretrained the recipe's own BPE is used," \
    "so drop --init-lang-dir" >&2
  exit 2
fi
if [ -n "$init_from" ] && [ -z "$pretrained" ]; then
  if [ -z "$init_lang_dir" ]; then
    echo "run.sh: --init-from needs --init-lang-dir DIR (the lang dir its model was trained with)" >&2
    exit 2
  fi
  init_args=(--init-from "$(abspath "$init_from")")
  init_lang_dir=$(abspath "$init_lang_dir")
  config=${config:-$recipe_dir/conf/finetune.yaml}
  exp_dir=${exp_dir:-exp/finetune}
fi
feats_dir=data/fbank
feature_flags=()
avg=${avg:-$([ -n "$pretrained" ] && echo 1 || echo 3)}
if [ -n "$pretrained" ]; then
  feats_dir=data/whisper_fbank
  feature_flags=(--feature-type whisper-fbank)
  init_args=(--pretrained "$pretrained")
  # With --init-from too: continue a model fine-tuned from this Whisper (same BPE: the recipe's).
  [ -n "$init_from" ] && init_args+=(--init-from "$(abspath "$init_from")")
  config=${config:-$recipe_dir/conf/whisper.yaml}
  exp_dir=${exp_dir:-exp/${pretrained##*/}}
fi
config=$(abspath "${config:-$recipe_dir/conf/train.yaml}")
exp_dir=${exp_dir:-exp/conformer}
work_dir=$(abspath "$work_dir")
if [ ! -f "$corpus_dir/transcripts.tsv" ]; then
  echo "run.sh: $corpus_dir/transcripts.tsv not found; pass --corpus-dir DIR with audio/ and transcripts.tsv" >&2
  exit 2
fi
mkdir -p "$work_dir" && cd "$work_dir"
lang_dir=${init_lang_dir:-data/lang_bpe_${vocab_size}}

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: manifests, speaker $test_speaker held out for test"
  dsr prepare folder --audio-dir "$corpus_dir/audio" --transcripts "$corpus_dir/transcripts.tsv" --corpus fsdd \
    --split-policy fsdd-speaker --test-key "$test_speaker" --manifest-dir data/manifests $force
  if [ "$num_synth_digits" -gt 0 ]; then
    dsr prepare synth --text-source digits --sample-rate 8000 --num-train "$num_synth_digits" --num-dev 0 --num-test 0 \
      --corpus-dir data/synth_digits --manifest-dir data/manifests -j $num_jobs $force
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: features ($feats_dir)"
  dsr features --corpus fsdd --split train --speed-perturb --manifest-dir data/manifests --out-dir $feats_dir \
    "${feature_flags[@]}" -j $num_jobs $force
  dsr features --corpus fsdd --split dev --split test --manifest-dir data/manifests --out-dir $feats_dir \
    "${feature_flags[@]}" -j $num_jobs $force
  if [ "$num_synth_digits" -gt 0 ]; then
    # The voices' rate is already varied per utterance: no speed perturbation.
    dsr features --corpus synth --split train --manifest-dir data/manifests --out-dir $feats_dir \
      "${feature_flags[@]}" -j $num_jobs $force
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ] && [ -z "$init_lang_dir" ]; then
  log "Stage 2: BPE"
  dsr lang --cuts data/manifests/fsdd_supervisions_train.jsonl.gz --lang-dir $lang_dir --vocab-size $vocab_size $force
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: train"
  train_cuts=$feats_dir/fsdd_cuts_train.jsonl.gz
  if [ "$num_synth_digits" -gt 0 ]; then
    train_cuts=$train_cuts,$feats_dir/synth_cuts_train.jsonl.gz
  fi
  dsr train --config "$config" --exp-dir $exp_dir --lang-dir "$lang_dir" "${init_args[@]}" --seed $seed $force \
    --train-cuts $train_cuts --dev-cuts $feats_dir/fsdd_cuts_dev.jsonl.gz
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: decode"
  eval_cuts=(--cuts $feats_dir/fsdd_cuts_dev.jsonl.gz --cuts $feats_dir/fsdd_cuts_test.jsonl.gz)
  whisper_methods=()
  if [ -n "$pretrained" ]; then
    whisper_methods=(-m whisper-greedy)
    # The baseline a fine-tune must beat: zero-shot Whisper, by dsr and by faster-whisper.
    zero_shot=exp/zeroshot-${pretrained##*/}
    [ -f $zero_shot/decode/faster-whisper/fsdd_test/result.json ] && [ -z "$force" ] ||
      dsr decode --exp-dir $zero_shot --pretrained $pretrained -m whisper-greedy -m faster-whisper "${eval_cuts[@]}"
  fi
  dsr decode --exp-dir $exp_dir --lang-dir "$lang_dir" -m greedy -m ctc-greedy "${whisper_methods[@]}" --avg $avg \
    "${eval_cuts[@]}"
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: results"
  [ -n "$pretrained" ] && dsr results --exp-dir exp/zeroshot-${pretrained##*/}
  dsr results --exp-dir $exp_dir
fi
log "finished stages $stage..$stop_stage"
