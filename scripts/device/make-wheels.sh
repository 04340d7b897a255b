#!/bin/bash
# Build .kvb-wheels/: the wheels kvbench needs on the lent GPU machine (device tool, image 'cuda':
# Python 3.12, torch 2.11.0+cu130, no network) beyond the vLLM 0.26.0 bundle of
# ../shared/device/make-vllm-bundle.sh. Run HERE (pip + internet), from the repo root:
#     bash scripts/device/make-wheels.sh
# What the image already has (KINDS.md's package list) is not carried: pandas, pyarrow, numpy,
# httpx, rich, psutil, prometheus-client, cloudpickle, pyyaml, matplotlib, aiofiles, ...
# Carried (~16 MB, one call): the launcher's Hydra/submitit stack, and LMCache 0.5.3, the newest
# release whose compiled parts resolve every torch symbol against torch 2.11.0+cu130 (0.5.4-0.5.6
# need c10::NotImplementedError(c10::SourceLocation, std::string), which torch 2.11 lacks;
# check with scripts/device/check-lmcache-abi.sh). LMCache's import chain for vLLM's
# LMCacheConnectorV1 also needs aiofile (+ caio); its other deps are in the image or the bundle.
set -euo pipefail
ROOT=$(pwd)
[ -d "$ROOT/.git" ] || { echo "run me from the repo root"; exit 1; }
OUTD="$ROOT/.kvb-wheels"
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
PINS="hydra-core==1.3.8 omegaconf==2.3.1 submitit==1.5.4 lmcache==${KVB_LMCACHE:-0.5.3} aiofile==3.9.0 caio==0.9.25"
rm -rf "$OUTD" && mkdir -p "$OUTD"
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$OUTD" $PINS 2>&1 | grep -v -i '^warning' || true
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 / hydra 1.3 pin) is published as an sdist
# only: build the pure-Python wheel here.
python3 -m pip wheel -q --no-deps -w "$OUTD" antlr4-python3-runtime==4.9.3 2>&1 | grep -v -i '^warning' || true
ls "$OUTD"/*.whl >/dev/null
EX="$ROOT/.git/info/exclude"; mkdir -p "$(dirname "$EX")"; touch "$EX"
grep -qxF '/.kvb-wheels/' "$EX" || echo '/.kvb-wheels/' >> "$EX"
du -b "$OUTD"/*.whl
echo "total $(du -cb "$OUTD"/*.whl | tail -1 | cut -f1) bytes in $(ls "$OUTD"/*.whl | wc -l) wheels"
