#!/usr/bin/env bash
# Embedded synthetic-speech recipe: corpus -> manifests -> FBANK -> BPE -> train -> decode -> results.
#
# The corpus is synthesised offline with the Debian TTS engines (espeak-ng, flite,
# festival); test voices and test sentences never occur in training.
#
# Usage (from anywhere; outputs go to egs/synth/data and egs/synth/exp unless --work-dir):
#   bash egs/synth/run.sh                              # all stages
#   bash egs/synth/run.sh --stage 3 --stop-stage 3     # only training
#   bash egs/synth/run.sh --stage 4                    # decode + results
#   bash egs/synth/run.sh --num-train 200 --num-epochs 1   # a quick smoke run
#   bash egs/synth/run.sh --work-dir /scratch/synth   # data/ and exp/ somewhere else
#   bash egs/synth/run.sh --stage 3 --config egs/synth/conf/train_hybrid.yaml --exp-dir exp/hybrid
#                                                      # the hybrid: transducer + CTC + attention decoder
#   bash egs/synth/run.sh --stage 3 --config egs/synth/conf/train_streaming.yaml --exp-dir exp/streaming
#                                                      # a causal, chunk-trained model; stage 4 then also
#                                                      # decodes it chunk by chunk (--chunk-ms "320 640")
#   bash egs/synth/run.sh --stage 6                    # only LLM rescoring (SmolLM2; needs bash tools/setup.sh --lm)
#   bash egs/synth/run.sh --rescore true               # all stages and then LLM rescoring
#   bash egs/synth/run.sh --stage 6 --llm /models/my-llm          # rescore with another LLM (HF dir or .gguf)
#   bash egs/synth/run.sh --stage 6 --train-lm true    # also a from-scratch DeepSeek-config LM on the training
#                                                      # transcripts (dsr lm train), and rescoring with it
#
# Stages:
#   0 prepare   synthesise audio, write data/manifests/synth_{recordings,supervisions}_{train,dev,test}.jsonl.gz
#   1 features  80-dim FBANK -> data/fbank/synth_cuts_{train,dev,test}.jsonl.gz (train with 0.9/1.1 speed perturbation)
#   2 lang      BPE -> data/lang_bpe_${vocab_size}/{bpe.model,tokens.txt}
#   3 train     pruned RNN-T + CTC Conformer -> exp/conformer/epoch-*.pt
#               (+ a Transformer attention decoder with --config conf/train_hybrid.yaml)
#   4 decode    every head the model has, on dev and test -> exp/conformer/decode/: transducer greedy and
#               modified beam search, CTC greedy, and with an attention decoder the attention rescoring
#               of the CTC prefix beam search and of the modified beam search n-best lists; a model trained
#               with causal: true is also decoded streaming, greedy, at each of --chunk-ms (ms per chunk)
#   5 results   table of WER, CER, RTF, latency and peak memory -> exp/conformer/results.md
#   6 rescore   only with --rescore true or --stage 6 (it would not fit the default run's time budget):
#               LLM rescoring of the modified-beam-search n-best, weights tuned on dev, applied to test
#               -> exp/conformer/decode/modified-beam-search+llm/ (+deepseek/ with --train-lm true), results again
# Re-running skips stages that finished (pass --force to redo one).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../../tools/recipe_common.sh"

stage=0
stop_stage=100
num_train=4000
num_train_words=0
num_dev=200
num_test=300
num_jobs=2
vocab_size=128
num_epochs=
exp_dir=exp/conformer
config=$recipe_dir/conf/train.yaml
chunk_ms="320 640"
work_dir=$recipe_dir
rescore=false
llm=
train_lm=false
force=

parse_options "$@"

config=$(abspath "$config")
work_dir=$(abspath "$work_dir")
[ -n "$llm" ] && llm=$(abspath "$llm")
mkdir -p "$work_dir" && cd "$work_dir"
lang_dir=data/lang_bpe_${vocab_size}
epochs_flag=${num_epochs:+--num-epochs $num_epochs}

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: synthesise the embedded corpus and write manifests"
  dsr prepare synth --corpus-dir data/synth --manifest-dir data/manifests \
    --num-train $num_train --num-train-words $num_train_words --num-dev $num_dev --num-test $num_test -j $num_jobs $force
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: compute FBANK features"
  dsr features --corpus synth --split train --speed-perturb --manifest-dir data/manifests --out-dir data/fbank -j $num_jobs $force
  dsr features --corpus synth --split dev --split test --manifest-dir data/manifests --out-dir data/fbank -j $num_jobs $force
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: train the BPE tokenizer"
  dsr lang --cuts data/manifests/synth_supervisions_train.jsonl.gz --lang-dir $lang_dir --vocab-size $vocab_size $force
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: train (resumes from the newest checkpoint in $exp_dir)"
  dsr train --config $config --exp-dir $exp_dir --lang-dir $lang_dir $epochs_flag $force \
    --train-cuts data/fbank/synth_cuts_train.jsonl.gz --dev-cuts data/fbank/synth_cuts_dev.jsonl.gz
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: decode dev and test"
  # Decode with each head the model was trained with (read from the resolved training config).
  methods="-m ctc-greedy"
  transducer=true
  if grep -q '^use-transducer: false' $exp_dir/config.yaml 2>/dev/null; then transducer=false; fi
  $transducer && methods="-m greedy -m modified-beam-search $methods"
  if grep -Eq '^attention-decoder-layers: [1-9]' $exp_dir/config.yaml 2>/dev/null; then
    methods="$methods -m ctc-attention-rescoring"
    $transducer && methods="$methods -m transducer-attention-rescoring"
  fi
  dsr decode --exp-dir $exp_dir --lang-dir $lang_dir $methods \
    --cuts data/fbank/synth_cuts_dev.jsonl.gz --cuts data/fbank/synth_cuts_test.jsonl.gz
  # A causal model streams: greedy search chunk by chunk, one decode per chunk size (the
  # streaming/offline WER gap is then greedy-streaming-<N>ms against greedy in the results table).
  if grep -q '^causal: true' $exp_dir/config.yaml 2>/dev/null; then
    for ms in $chunk_ms; do
      dsr decode --exp-dir $exp_dir --lang-dir $lang_dir --streaming --chunk-ms $ms \
        --cuts data/fbank/synth_cuts_dev.jsonl.gz --cuts data/fbank/synth_cuts_test.jsonl.gz
    done
  fi
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: results"
  dsr results --exp-dir $exp_dir
fi
# The rescoring stage is opt-in: the default run (stop stage 100) ends with stage 5.
if [ $stage -le 6 ] && [ $stop_stage -ge 6 ] && { [ "$rescore" = true ] || [ $stage -eq 6 ]; }; then
  log "Stage 6: LLM rescoring of the modified-beam-search n-best (weights tuned on dev)"
  beam_dir=$exp_dir/decode/modified-beam-search
  dsr rescore --nbest $beam_dir/synth_test/nbest.jsonl --tune-on $beam_dir/synth_dev/nbest.jsonl ${llm:+--llm "$llm"}
  if [ "$train_lm" = true ]; then
    # Training-split transcripts only: test sentences are held out of the LM as of the acoustic model.
    dsr lm train --texts data/manifests/synth_supervisions_train.jsonl.gz --out-dir exp/lm/deepseek $force
    dsr rescore --nbest $beam_dir/synth_test/nbest.jsonl --tune-on $beam_dir/synth_dev/nbest.jsonl \
      --llm exp/lm/deepseek --out-dir $exp_dir/decode/modified-beam-search+deepseek
  fi
  dsr results --exp-dir $exp_dir
fi
log "finished stages $stage..$stop_stage"
