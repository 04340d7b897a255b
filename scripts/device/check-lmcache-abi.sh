#!/bin/bash
# Which LMCache release's compiled modules load with the device's torch? Answered HERE, at no
# device time: every torch/c10/at symbol a module of the cp312 wheel leaves undefined must be
# defined by the libraries of the torch wheel the device image holds (2.11.0+cu130, the one
# vLLM 0.26.0 pins). Downloads that torch wheel (~530 MB) and the LMCache wheels (~15 MB each)
# into ${WORK:-/tmp/lmcache-abi}.
#     bash scripts/device/check-lmcache-abi.sh 0.5.3 0.5.4 0.5.6
# Seen 2026-11-27: 0.5.0-0.5.3 resolve every symbol; 0.5.4-0.5.6 (cuda_ops.so) need
# c10::NotImplementedError::NotImplementedError(c10::SourceLocation, std::string), which torch
# 2.11 does not define (they were built against a newer torch): import fails with
# "undefined symbol". On the device, lmcache 0.5.3's c_ops imported (docs/validation/).
set -euo pipefail
WORK=${WORK:-/tmp/lmcache-abi}
TORCH=${TORCH:-2.11.0}
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64)
mkdir -p "$WORK" && cd "$WORK"
if [ ! -s defined.txt ]; then
  python3 -m pip download -q --no-deps "${PLAT[@]}" -d . "torch==$TORCH" 2>&1 | grep -v -i warning || true
  unzip -q -o torch-"$TORCH"-*.whl 'torch/lib/libc10*.so' 'torch/lib/libtorch*.so' 'torch/version.py'
  grep __version__ torch/version.py
  for l in torch/lib/*.so; do nm -D --defined-only "$l" | awk '{print $3}'; done | sort -u > defined.txt
fi
for v in "${@:-0.5.3}"; do
  python3 -m pip download -q --no-deps "${PLAT[@]}" -d . "lmcache==$v" 2>&1 | grep -v -i warning || true
  rm -rf "x$v" && mkdir "x$v" && unzip -q -o lmcache-"$v"-cp312-*.whl 'lmcache/*.so' -d "x$v"
  echo "lmcache $v:"
  for f in "x$v"/lmcache/*.so; do
    miss=$(nm -D --undefined-only "$f" | awk '{print $2}' | grep -E '^_ZN?K?[0-9]+(c10|at|torch|caffe2)' \
           | sort -u | comm -23 - defined.txt || true)
    n=$(printf '%s' "$miss" | grep -c . || true)
    echo "  $(basename "$f"): $n torch symbols undefined"
    [ "$n" -gt 0 ] && printf '%s\n' "$miss" | head -3 | c++filt | sed 's/^/      /'
  done
done
