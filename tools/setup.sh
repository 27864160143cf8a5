#!/usr/bin/env bash
# Set up dsr on a fresh Debian machine: Debian TTS packages, a virtualenv with the
# CPU build of torch 2.13.0 installed first, then dsr and its dependencies.
#
# Usage:
#   bash tools/setup.sh                 # .venv in the repository root
#   VENV=/path/to/venv bash tools/setup.sh
#   SKIP_APT=1 bash tools/setup.sh      # never call apt-get
#
# Then:  source .venv/bin/activate && dsr --help
#
# Re-running is cheap: each step is skipped when its result is already there.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/.venv}
torch_version=2.13.0
apt_packages=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (setup.sh) $*"; }

# 1. Debian packages for the embedded corpus (text-to-speech engines).
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  log "Debian packages present: ${apt_packages[*]}"
elif [ "${SKIP_APT:-0}" = 1 ]; then
  log "SKIP_APT=1: not installing ${missing[*]}; the synthetic corpus stage will fail without them"
elif ! command -v apt-get >/dev/null; then
  log "WARNING: no apt-get; install ${missing[*]} with your package manager to build the synthetic corpus"
else
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  log "installing Debian packages: ${missing[*]}"
  if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    log "WARNING: could not install ${missing[*]} (need root or passwordless sudo)."
    log "         Run: sudo apt-get install ${missing[*]}   -- the synthetic corpus stage needs them."
  fi
fi

# 2. Virtual environment with torch first.
if [ ! -x "$venv/bin/python" ]; then
  log "creating virtualenv $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
  log "installing torch==$torch_version (CPU build)"
  "$py" -m pip install -q "torch==$torch_version"
fi

# 3. dsr and its dependencies; the constraint stops any package from replacing torch.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==$torch_version" > "$constraints"
stamp="$venv/.dsr-installed"
want=$(cat "$root/pyproject.toml" | sha1sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing dsr (editable) and its dependencies"
  "$py" -m pip install -q -c "$constraints" -e "$root[test]"
  echo "$want" > "$stamp"
fi
"$py" -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('$torch_version') else f'torch {v} replaced $torch_version')"
log "ready: $("$py" -c 'import torch, lhotse; print(f"torch {torch.__version__}, lhotse {lhotse.__version__}")'); activate with: source $venv/bin/activate"
