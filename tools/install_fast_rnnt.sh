#!/usr/bin/env bash
# Build fast_rnnt 1.3 (the optional reference RNN-T loss backend) from its PyPI
# sdist into a Python virtual environment.
#
# Usage:
#   # into the currently active venv (or whatever `python` is on PATH):
#   bash tools/install_fast_rnnt.sh
#
#   # into an explicit venv:
#   VENV=<venv-dir> bash tools/install_fast_rnnt.sh
#
#   # force a CPU-only build even on a machine with nvcc and a GPU:
#   FT_CUDA=OFF VENV=<venv-dir> bash tools/install_fast_rnnt.sh
#
#   # check the result:
#   $VENV/bin/python -c "import fast_rnnt; print(fast_rnnt.__file__)"
#
# Why this script exists: `pip install fast_rnnt` does not build out of the box
# against a current toolchain.  Its CMake project
#   * asks for C++14, but current torch headers need C++17;
#   * downloads pybind11 2.6.0 from GitHub at configure time (no network here,
#     and 2.6 does not know current CPython); we hand it an unpacked
#     pybind11 sdist from PyPI through FETCHCONTENT_SOURCE_DIR_PYBIND11;
#   * switches CUDA on by itself as soon as an `nvcc` is on PATH, even with no
#     GPU, so we say FT_WITH_CUDA=OFF unless nvcc *and* nvidia-smi are present.
# The build uses the venv's torch (--no-build-isolation) and must not pull in
# another one (--no-deps).  It takes about 1.5 minutes on 2 cores.
#
# Environment variables:
#   VENV      venv to install into (default: the active one, $VIRTUAL_ENV, or
#             the `python3` on PATH).
#   FT_CUDA   ON / OFF / auto (default auto: ON iff nvcc and nvidia-smi work).
#   WORKDIR   scratch directory for the sdists (default: a fresh mktemp dir).
set -euo pipefail

FAST_RNNT_VERSION=1.3
PYBIND11_VERSION=3.0.4

die() {
  echo "install_fast_rnnt.sh: ERROR: $*" >&2
  exit 1
}

# --- pick the interpreter -----------------------------------------------------
if [[ -n "${VENV:-}" ]]; then
  PY="${VENV}/bin/python"
elif [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="${VIRTUAL_ENV}/bin/python"
else
  PY="$(command -v python3 || command -v python || true)"
fi
if [[ -n "${VENV:-}" && ! -x "${PY}" ]]; then
  die "VENV=${VENV} has no executable bin/python; point VENV at a virtual environment"
fi
[[ -n "${PY}" && -x "${PY}" ]] || die "no python interpreter found (set VENV=/path/to/venv)"
echo "install_fast_rnnt.sh: using ${PY}"

# --- idempotence ----------------------------------------------------------------
if "${PY}" -c "import fast_rnnt" >/dev/null 2>&1; then
  echo "install_fast_rnnt.sh: fast_rnnt already importable; nothing to do."
  exit 0
fi

"${PY}" -c "import torch" >/dev/null 2>&1 \
  || die "torch is not importable from ${PY}; install torch first (this script never installs torch)"
command -v cmake >/dev/null 2>&1 || die "cmake not found; install it (e.g. apt-get install cmake)"
command -v make >/dev/null 2>&1 || die "make not found; install it (e.g. apt-get install build-essential)"
command -v c++ >/dev/null 2>&1 || die "no C++ compiler found; install g++ (apt-get install g++)"

# --- CUDA or not ----------------------------------------------------------------
FT_CUDA="${FT_CUDA:-auto}"
if [[ "${FT_CUDA}" == "auto" ]]; then
  if command -v nvcc >/dev/null 2>&1 && command -v nvidia-smi >/dev/null 2>&1 \
     && nvidia-smi >/dev/null 2>&1 \
     && "${PY}" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)"; then
    FT_CUDA=ON
  else
    FT_CUDA=OFF
  fi
fi
[[ "${FT_CUDA}" == "ON" || "${FT_CUDA}" == "OFF" ]] || die "FT_CUDA must be ON, OFF or auto (got '${FT_CUDA}')"
echo "install_fast_rnnt.sh: FT_WITH_CUDA=${FT_CUDA}"

# --- fetch the sources ----------------------------------------------------------
WORKDIR="${WORKDIR:-$(mktemp -d -t fast_rnnt_build.XXXXXX)}"
mkdir -p "${WORKDIR}"
cd "${WORKDIR}"

"${PY}" -m pip download --no-binary :all: --no-deps "pybind11==${PYBIND11_VERSION}" -d "${WORKDIR}" \
  || die "could not download the pybind11==${PYBIND11_VERSION} sdist from PyPI"
rm -rf "pybind11-${PYBIND11_VERSION}"
tar xzf "pybind11-${PYBIND11_VERSION}.tar.gz" \
  || die "could not unpack pybind11-${PYBIND11_VERSION}.tar.gz"
PYBIND11_DIR="${WORKDIR}/pybind11-${PYBIND11_VERSION}"
[[ -f "${PYBIND11_DIR}/CMakeLists.txt" ]] || die "unexpected pybind11 sdist layout in ${PYBIND11_DIR}"

PY_INCLUDE="$("${PY}" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
[[ -f "${PY_INCLUDE}/Python.h" ]] \
  || die "Python.h not found in ${PY_INCLUDE}; install the python dev headers (e.g. apt-get install python3-dev)"

# --- build ------------------------------------------------------------------------
export FT_CMAKE_ARGS="-DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_STANDARD=17 \
-DFETCHCONTENT_SOURCE_DIR_PYBIND11=${PYBIND11_DIR} \
-DFT_WITH_CUDA=${FT_CUDA} -DFT_BUILD_TESTS=OFF \
-DPYTHON_EXECUTABLE=${PY} -DPYTHON_INCLUDE_DIRS=${PY_INCLUDE}"
export FT_MAKE_ARGS="${FT_MAKE_ARGS:- -j$(nproc 2>/dev/null || echo 2)}"
echo "install_fast_rnnt.sh: FT_CMAKE_ARGS=${FT_CMAKE_ARGS}"

if ! "${PY}" -m pip install --no-build-isolation --no-deps --no-binary fast_rnnt \
      "fast_rnnt==${FAST_RNNT_VERSION}"; then
  cat >&2 <<EOF
install_fast_rnnt.sh: ERROR: building fast_rnnt==${FAST_RNNT_VERSION} failed (see the log above).
  Common causes:
    * no C++17 compiler / cmake / python headers;
    * FT_CUDA=ON with an nvcc that does not match torch.version.cuda
      (retry with FT_CUDA=OFF for a CPU-only build);
    * setuptools missing from the venv (--no-build-isolation uses the venv's own).
  dsr does not need fast_rnnt: its default RNN-T loss backend is "dsr".
EOF
  exit 1
fi

"${PY}" -c "import fast_rnnt" \
  || die "fast_rnnt was installed but does not import; see the messages above"
echo "install_fast_rnnt.sh: OK, fast_rnnt==${FAST_RNNT_VERSION} installed into $("${PY}" -c 'import sys; print(sys.prefix)')"
