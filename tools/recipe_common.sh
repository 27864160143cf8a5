# Shared helpers for egs/*/run.sh; source it right after `set -euo pipefail`:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/../../tools/recipe_common.sh"
#   stage=0; stop_stage=100; num_jobs=2; force=     # defaults, then:
#   parse_options "$@"
#
# parse_options works like Kaldi's utils/parse_options.sh: `--some-name VALUE` sets the
# shell variable some_name, which must already have a default; `--force` alone sets
# force=--force; `--help` prints the script's leading comment block.  After it, paths
# given on the command line can be made absolute with `abspath`, relative to where the
# recipe was called from, without ".." in them.

caller_dir=$PWD
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
recipe_script=$recipe_dir/$(basename "${BASH_SOURCE[1]}")
root=$(cd "$recipe_dir/../.." && pwd)
[ -x "$root/.venv/bin/dsr" ] && export PATH="$root/.venv/bin:$PATH"
cd "$recipe_dir"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') ($(basename "$0"):${BASH_LINENO[0]}) $*"; }

# Normalised (no "..", symlinks kept): manifests store these paths, and a path through a
# directory that is later removed (e.g. a worktree's ../shared/data) would stop resolving.
abspath() { case "$1" in /*) realpath -ms -- "$1" ;; *) realpath -ms -- "$caller_dir/$1" ;; esac; }

parse_options() {
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$recipe_script"; exit 0 ;;
      --force) force=--force; shift ;;
      --*)
        local name=${1#--}
        name=${name//-/_}
        if [ -z "${!name+set}" ] || [ $# -lt 2 ]; then
          echo "$(basename "$0"): unknown option or missing value: $1 (see --help)" >&2
          exit 2
        fi
        printf -v "$name" '%s' "$2"
        shift 2 ;;
      *) echo "$(basename "$0"): unexpected argument $1 (see --help)" >&2; exit 2 ;;
    esac
  done
}
