#!/usr/bin/env bash
# The peers of bench/client_peers.py, each in its own venv under bench/.peers/ (git-ignored):
#   bench/.peers/guidellm        guidellm 0.8.1 (+ torch 2.13.0, CPU build)   Python 3.11+
#   bench/.peers/aiperf          aiperf 0.13.0                                  Python 3.11+
#   bench/.peers/inference-perf  inference-perf 0.7.0                           Python 3.12+
# pyproject.toml's extras "peers" and "peers-inference-perf" name the same pins. Not the
# project's venv: aiperf pins pandas 2.3, psutil 7.0 and rich 14.1, below what it has, and
# inference-perf's aiofiles >= 25.1 conflicts with aiperf's ~= 24.1.
#
#   bash bench/peers_setup.sh [TOOL ...]      # default: all three; an installed one is kept
#
# PEERS_PYTHON (default python3.11) and PEERS_PYTHON312 (default python3.12) choose the
# interpreters; KVBENCH_TORCH_INDEX, as for scripts/setup.sh, an index for torch's CPU wheel.
# A tool whose interpreter is missing is skipped with a message; bench/client_peers.py
# --skip-missing then shows it as skipped.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$ROOT/bench/.peers
PY311=${PEERS_PYTHON:-python3.11}
PY312=${PEERS_PYTHON312:-python3.12}
mkdir -p "$DIR"

install() {  # NAME PYTHON EXE PIP-ARGS...
  local name=$1 py=$2 exe=$3
  shift 3
  if [[ -x $DIR/$name/bin/$exe ]]; then
    echo "[peers] $name: already there ($DIR/$name)"
    return
  fi
  if ! command -v "$py" >/dev/null; then
    echo "[peers] $name: skipped, no $py"
    return
  fi
  echo "[peers] $name: $py -m venv $DIR/$name; pip install $*"
  rm -rf "${DIR:?}/$name"
  "$py" -m venv "$DIR/$name"
  "$DIR/$name/bin/pip" install -q "$@"
}

torch_args=("torch==2.13.0+cpu")
[[ -n ${KVBENCH_TORCH_INDEX:-} ]] && torch_args+=(--extra-index-url "$KVBENCH_TORCH_INDEX")

for tool in "${@:-guidellm aiperf inference-perf}"; do
  for t in $tool; do
    case $t in
      guidellm) install guidellm "$PY311" guidellm "${torch_args[@]}" "guidellm==0.8.1" ;;
      aiperf) install aiperf "$PY311" aiperf "aiperf==0.13.0" ;;
      inference-perf) install inference-perf "$PY312" inference-perf "inference-perf==0.7.0" ;;
      *) echo "[peers] unknown tool $t (guidellm, aiperf, inference-perf)" >&2; exit 2 ;;
    esac
  done
done
