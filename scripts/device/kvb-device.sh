#!/bin/bash
# kvbench on the lent GPU machine (device tool: nvidia-h200, earlier nvidia-h100-x1; image
# 'cuda': Python 3.12, torch 2.11.0+cu130, no network). Runs THERE, from the root of the
# repository copy the tool sends. Procedure and results: docs/validation/README.md.
#
#   bash scripts/device/kvb-device.sh install          # vLLM bundle (+ .kvb-wheels) -> /tmp/site
#   bash scripts/device/kvb-device.sh probe            # versions, GPU, LMCache ops, plugin seam
#   bash scripts/device/kvb-device.sh sweep P [P ...]  # the suite's sweep, in this call
#                                                      # (P or P:S, S a scheduling order: that
#                                                      # pair only, in the order given; a tail
#                                                      # +key=value replaces that override of
#                                                      # the matrix for this entry: P:S+dram=100)
#   bash scripts/device/kvb-device.sh start P [P ...]  # the same sweep, detached (setsid nohup)
#   bash scripts/device/kvb-device.sh follow           # wait for the detached sweep, pack it
#   KVB_STATES="S0 S1" bash scripts/device/kvb-device.sh follow-all  # several, one per GPU
#   bash scripts/device/kvb-device.sh bench            # bench/host_tier_copy.py (plugin copies)
#   bash scripts/device/kvb-device.sh pack             # the sweep folder -> $OUT/sweep.tgz
#
# `install` needs the three vLLM chunks already copied into /tmp/bundle by earlier calls
# (../shared/device/README.md) and carry [".vllm-run", ".kvb-wheels"]; later calls carry only
# ".vllm-run". `sweep` runs `python -m launch sweep <the matrix below> policy=P sched=S` per
# policy P and order S (one server each: the JPS levels of one policy+sched share it) into one
# sweep folder in /tmp (kept while the machine stays warm: it resumes, finished cells are
# skipped), stops itself before the call's 10-minute limit (SIGINT: the cell stops its
# server), and tars the folder to $OUT/sweep.tgz after every server.
#
# Detached mode, for servers whose cells outlast one call (150-job cells on the H200: a server
# start ~2 min, JPS 3 ~1.5 min, JPS 10 ~4 min): `start` copies the repository to /tmp/kvb-repo
# (so later calls, which re-send the tree, cannot change it under the run), launches `sweep`
# there with `setsid nohup` (it survives its call while the machine stays warm), and returns.
# It is bounded by the lease (KVB_BUDGET_S), not by the call. `follow` waits until the
# detached sweep ends or the call's deadline (KVB_DEADLINE_S) comes, printing progress, then
# prints `launch status` and packs the sweep folder and the logs to $OUT. Follow it from as many
# calls as it takes; `start` and `follow` can share one call (`start ... && follow`).
#
# Knobs (environment; defaults: the seed's scale on the H200):
#   KVB_GPU gpu config (h200)            KVB_N jobs per cell (150)
#   KVB_GMU engine.gpu_memory_utilization (0.9)
#   KVB_DRAM host tier, GB (64)           KVB_JPS JPS levels, a Hydra list ("[10,3]")
#   KVB_SCHED scheduling orders, space- or comma-separated (fcfs | program; unset: each
#     policy's default): one server per policy and order, in the order given
#   KVB_EXPERIMENT (20260407_controlled_sweep)   KVB_NAME experiment.name (<gpu>_validation)
#   KVB_SWEEP sweep folder (/tmp/kvb-sweep/<name>)   KVB_EXTRA more overrides, space-separated
#   KVB_DEADLINE_S seconds from the call's start after which no new server starts, the running
#     one is interrupted (sweep) or `follow` returns (560); not applied to a detached sweep
#   KVB_BUDGET_S seconds of the whole lease, counted from /tmp/kvb-lease-start (the first call
#     writes it): no server starts, and the running one is interrupted, past it (unset: no
#     limit in this call; a detached sweep without it stops at 1680 s, the lease's 30 minutes)
#   KVB_MIN_LEFT_S no server starts with fewer seconds left than this (230)
#   KVB_GIT the commit of the tree sent (manifests record it as declared)
#   KVB_STATE (/tmp/kvb-detached), KVB_REPO_COPY (/tmp/kvb-repo): a detached sweep's state and
#     repository copy; give each its own to run two detached sweeps side by side, one per GPU
#     of a two-GPU machine (CUDA_VISIBLE_DEVICES=0 / =1 at `start`, the cells keep it; own
#     KVB_NAME; `follow` each with its KVB_STATE and its own OUT=$OUT/<sub>)
# The cells: gpu=<gpu>/dram=<dram>/policy=<P>/sched=<S>/jps=<J> in the sweep folder.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=${KVB_T0:-$SECONDS}
OUT=${OUT:-/tmp/kvb-out}
mkdir -p "$OUT"
GPU=${KVB_GPU:-h200}
N=${KVB_N:-150}
GMU=${KVB_GMU:-0.9}
DRAM=${KVB_DRAM:-64}
JPS=${KVB_JPS:-[10,3]}
SCHED=${KVB_SCHED:-}
EXPERIMENT=${KVB_EXPERIMENT:-20260407_controlled_sweep}
NAME=${KVB_NAME:-${GPU}_validation}
SWEEP=${KVB_SWEEP:-/tmp/kvb-sweep/$NAME}
DEADLINE=${KVB_DEADLINE_S:-560}
MIN_LEFT=${KVB_MIN_LEFT_S:-230}
STATE=${KVB_STATE:-/tmp/kvb-detached}  # the detached sweep's pid, logs, exit status
REPO_COPY=${KVB_REPO_COPY:-/tmp/kvb-repo}  # the detached sweep runs from this copy

# cluster=lab5090: local executor, one GPU, share_server=true (the JPS levels of one
# policy+sched run on one server, drained and cache-reset between cells). cluster.node_mem_gb:
# the VM's MemTotal starts near 31 GiB and grows as memory is used (KINDS.md), so psutil would
# refuse dram=64 + 24 GiB reserve; the machine has 128 GiB. The H100 validation (issue 6) ran
# KVB_GPU=h100 KVB_N=20 KVB_GMU=0.35 KVB_JPS='[3,6]': 11.4 GiB of KV so that 20 jobs press on
# VRAM about as the seed's 150 did on a full H100.
MATRIX=(cluster=lab5090 cluster.node_mem_gb=128 "gpu=$GPU" "dram=$DRAM" engine=vllm-cuda
        "experiment=$EXPERIMENT" "experiment.name=$NAME" workload=agent8
        "jps=$JPS" "workload.n_jobs=$N" "engine.gpu_memory_utilization=$GMU" "sweep_dir=$SWEEP")
# shellcheck disable=SC2206
[ -n "${KVB_EXTRA:-}" ] && MATRIX+=(${KVB_EXTRA})
# The copy the device tool sends has no .git, so manifests there record no commit: pass it in
# the call's command line (KVB_GIT=<sha>) and it lands in the sweep's log.
# (KVBENCH_GIT_COMMIT: manifests record it as a declared commit, harness/manifest.py).
if [ -n "${KVB_GIT:-}" ]; then
  echo "kvb-device: repository at ${KVB_GIT} (+ working tree)" | tee -a "$OUT/git.txt"
  export KVBENCH_GIT_COMMIT=$KVB_GIT
fi

env_sh() {
  [ -f .vllm-run/env.sh ] || { echo "kvb-device: carry .vllm-run"; exit 6; }
  # shellcheck disable=SC1091
  . .vllm-run/env.sh
  export PYTHONUNBUFFERED=1 KVBENCH_DEVICE=1
}

cmd_install() {
  if [ ! -d /tmp/site/vllm ]; then
    bash .vllm-run/install.sh || exit $?
  fi
  if ls .kvb-wheels/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .kvb-wheels/*.whl 2>&1 | grep -v -i warning || true
  fi
  ls -d /tmp/site/hydra /tmp/site/submitit /tmp/site/vllm >/dev/null || { echo "kvb-device: install incomplete"; exit 5; }
  echo "kvb-device: /tmp/site holds $(ls /tmp/site | grep -c dist-info) distributions"
}

cmd_probe() {
  env_sh
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    free -g | head -2; nproc; uname -r; } 2>&1 | tee "$OUT/device.txt"
  python3 - <<'EOF' 2>&1 | grep -v "LMCache INFO" | tee -a "$OUT/device.txt"
import importlib.metadata as md, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
for d in ("vllm", "lmcache", "hydra-core", "omegaconf", "submitit", "pandas", "pyarrow", "httpx", "openai", "prometheus_client"):
    try: print(d, md.version(d))
    except md.PackageNotFoundError: print(d, "MISSING")
try:
    import lmcache.c_ops  # noqa: F401  the CUDA kernels, built against a torch
    from lmcache.integration.vllm.vllm_v1_adapter import LMCacheConnectorV1Impl  # noqa: F401
    print("lmcache: c_ops and the vLLM v1 adapter import")
except Exception as e:  # noqa: BLE001
    print("lmcache FAILED:", type(e).__name__, e)
try:
    from harness.plugins import compat
    print("kvbench plugins: vLLM", compat.check_vllm(), "accepted")
except Exception as e:  # noqa: BLE001
    print("kvbench plugins FAILED:", type(e).__name__, e)
EOF
}

# The sweep folder -> $OUT/sweep.tgz (16 MiB come back per file): if the whole folder is too
# big, the records reduced as for a test fixture (reduce_fixture.py: metrics filtered to the
# series the analysis reads; no logs) go as sweep.tgz and the cells' logs as sweep-logs.tgz.
pack() {
  [ -d "$SWEEP" ] || { echo "kvb-device: no sweep folder $SWEEP"; return 0; }
  local base; base=$(basename "$SWEEP")
  tar -czf "$OUT/sweep.tgz" -C "$(dirname "$SWEEP")" "$base" || return 1
  if [ "$(stat -c %s "$OUT/sweep.tgz")" -gt "${KVB_PACK_MAX:-15500000}" ]; then
    echo "kvb-device: sweep.tgz $(stat -c %s "$OUT/sweep.tgz") bytes: packing the reduced records"
    rm -rf /tmp/kvb-reduced && mkdir -p /tmp/kvb-reduced
    python3 scripts/device/reduce_fixture.py "$SWEEP" "/tmp/kvb-reduced/$base" \
      && tar -czf "$OUT/sweep.tgz" -C /tmp/kvb-reduced "$base"
    (cd "$(dirname "$SWEEP")" && find "$base" -name '*.log' -size -40M -print0 \
      | tar -czf "$OUT/sweep-logs.tgz" --null -T -)
  fi
  ls -la "$OUT"/sweep*.tgz
}

# Seconds this call (or, detached, the lease) may still use.
seconds_left() {
  local left=1000000
  [ -z "${KVB_DETACHED:-}" ] && left=$((DEADLINE - (SECONDS - T0)))
  local budget=${KVB_BUDGET_S:-}
  [ -z "$budget" ] && [ -n "${KVB_DETACHED:-}" ] && budget=1680
  if [ -n "$budget" ] && [ -f /tmp/kvb-lease-start ]; then
    local lease_left=$((budget - ($(date +%s) - $(cat /tmp/kvb-lease-start))))
    [ "$lease_left" -lt "$left" ] && left=$lease_left
  fi
  echo "$left"
}

cmd_sweep() {
  env_sh
  [ $# -gt 0 ] || { echo "kvb-device: sweep needs a policy"; exit 2; }
  local scheds; read -r -a scheds <<<"${SCHED//,/ }"
  [ ${#scheds[@]} -eq 0 ] && scheds=("")
  local p s left tag arg pol extra kv e
  local -a these more matrix
  for arg in "$@"; do
    # P:S runs policy P under order S only (pairs in the order given); a bare P takes KVB_SCHED.
    # A "+key=value" tail (several allowed) replaces that key of the matrix for this entry
    # only: native_offload:fcfs+dram=100, fcfs:fcfs+workload.n_jobs=null+workload.duration_s=30
    extra=""; [[ $arg == *+* ]] && { extra=${arg#*+}; arg=${arg%%+*}; }
    IFS=+ read -r -a more <<<"$extra"
    matrix=()
    for kv in "${MATRIX[@]}"; do
      for e in "${more[@]}"; do [ "${kv%%=*}" = "${e%%=*}" ] && continue 2; done
      matrix+=("$kv")
    done
    matrix+=("${more[@]}")
    if [[ $arg == *:* ]]; then pol=${arg%%:*}; these=("${arg#*:}"); else pol=$arg; these=("${scheds[@]}"); fi
    p=$pol
    for s in "${these[@]}"; do
      tag="policy=$p${s:+ sched=$s}${extra:+ +$extra}"
      left=$(seconds_left)
      if [ "$left" -lt "$MIN_LEFT" ]; then echo "kvb-device: ${left}s left, not starting $tag"; break 2; fi
      echo "kvb-device: $tag, ${left}s left, $(date -u +%T)"
      timeout -s INT -k 30 "$left" python3 -m launch sweep "${matrix[@]}" "policy=$p" \
        ${s:+"sched=$s"} --no-report 2>&1 | tee -a "$OUT/sweep-$p${s:+-$s}${extra:+-${extra//[^A-Za-z0-9_.=-]/_}}.log"
      echo "kvb-device: $tag exit ${PIPESTATUS[0]} after $((SECONDS - T0))s, $(date -u +%T)"
      pack
    done
  done
  if [ -f "$SWEEP/sweep.json" ]; then python3 -m launch status "$SWEEP" 2>&1 | tail -20; fi
}

cmd_start() {
  [ $# -gt 0 ] || { echo "kvb-device: start needs a policy"; exit 2; }
  if [ -f "$STATE/pid" ] && [ ! -f "$STATE/rc" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
    echo "kvb-device: a detached sweep is running (pid $(cat "$STATE/pid")); follow it"; return 0
  fi
  [ -f /tmp/kvb-lease-start ] || date +%s > /tmp/kvb-lease-start
  rm -rf "$STATE" "$REPO_COPY" && mkdir -p "$STATE/out" "$REPO_COPY"
  echo "$SWEEP" > "$STATE/sweep"  # follow packs this folder, whatever its own knobs say
  tar -c --exclude='./.vllm-chunk*' --exclude='./.kvb-wheels' --exclude='./.git' --exclude='./.venv' \
    --exclude='./.mypy_cache' --exclude='./.ruff_cache' --exclude='./results' . \
    | tar -x -C "$REPO_COPY" || { echo "kvb-device: copy to $REPO_COPY failed"; exit 4; }
  echo "kvb-device: detached sweep of $* (sched: ${SCHED:-default}) -> $SWEEP, log $STATE/detached.log"
  (cd "$REPO_COPY" && KVB_DETACHED=1 OUT="$STATE/out" KVB_STATE="$STATE" setsid nohup \
     bash -c 'echo $$ > "$KVB_STATE/pid"; exec bash scripts/device/kvb-device.sh sweep "$@"' \
     kvb-detached "$@" > "$STATE/detached.log" 2>&1 < /dev/null &)
  for _ in 1 2 3 4 5 6 7 8 9 10; do [ -f "$STATE/pid" ] && break; sleep 0.5; done
  [ -f "$STATE/pid" ] || { echo "kvb-device: the detached sweep did not start"; cat "$STATE/detached.log"; exit 4; }
  echo "kvb-device: detached pid $(cat "$STATE/pid")"
}

detached_running() {
  [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null
}

# Wait until none of the detached sweeps whose state folders are given runs, or the call's
# deadline comes; print each one's progress every minute.
wait_detached() {
  local st n last=0
  while :; do
    n=0
    for st in "$@"; do STATE=$st detached_running && n=$((n + 1)); done
    [ "$n" -eq 0 ] && return 0
    [ $((DEADLINE - (SECONDS - T0))) -le 15 ] && { echo "kvb-device: call deadline; $n sweep(s) run on"; return 0; }
    if [ $((SECONDS - last)) -ge 60 ]; then
      last=$SECONDS
      for st in "$@"; do
        echo "kvb-device: $(date -u +%T) $(basename "$st") running; $(grep -h '^kvb-device: policy' "$st/detached.log" | tail -1)"
        tail -n 2 "$st/detached.log" | cut -c1-200
      done
    fi
    sleep 5
  done
}

# The detached sweep of $STATE as it stands, into $OUT: its `launch status`, its folder packed,
# its log; the last line says whether it still runs.
report_detached() {
  [ -f "$STATE/pid" ] || { echo "kvb-device: no detached sweep in $STATE (run start first)"; exit 3; }
  SWEEP=$(cat "$STATE/sweep")
  detached_running || echo "kvb-device: the detached sweep has ended: $(tail -n 3 "$STATE/detached.log" | tr '\n' ' ' | cut -c1-300)"
  env_sh
  python3 -m launch status "$SWEEP" 2>&1 | tail -25 | tee "$OUT/status.txt"
  pack
  cp "$STATE/detached.log" "$OUT/detached.log" 2>/dev/null
  [ -f "$STATE/out/device.txt" ] && cp "$STATE/out/device.txt" "$OUT/"
  detached_running && echo "kvb-device: RUNNING" || echo "kvb-device: DONE"
}

cmd_follow() {
  wait_detached "$STATE"
  report_detached
}

# Several detached sweeps side by side (one per GPU of a two-GPU machine, each started with its
# own KVB_STATE, KVB_REPO_COPY and CUDA_VISIBLE_DEVICES): KVB_STATES="/tmp/kvb-d0 /tmp/kvb-d1"
# follow-all waits until every one has ended or the call's deadline comes, then reports each
# into $OUT/<state folder's name>/ (sweep.tgz, sweep-logs.tgz if reduced) and folds their
# status.txt and detached.log into $OUT/logs.tgz: 1 + 2 files a sweep come back (8 a call).
# KVB_PACK_ALSO: more sweep folders to pack (an entry's +sweep_dir=...), into
# $OUT/<folder name>/.
cmd_follow_all() {
  local -a states; read -r -a states <<<"${KVB_STATES:-}"
  [ ${#states[@]} -gt 0 ] || { echo "kvb-device: follow-all needs KVB_STATES"; exit 2; }
  local st folder
  wait_detached "${states[@]}"
  for st in "${states[@]}"; do
    (STATE=$st OUT=$OUT/$(basename "$st"); mkdir -p "$OUT"; report_detached) 2>&1 \
      | grep -a -v '^[│└┌├┏┃┡┗━]'
  done
  for folder in ${KVB_PACK_ALSO:-}; do
    (SWEEP=$folder OUT=$OUT/$(basename "$folder"); mkdir -p "$OUT"; pack)
  done
  (cd "$OUT" && rm -f ./*/git.txt ./*/device.txt \
     && logs=$(ls ./*/status.txt ./*/detached.log 2>/dev/null) && [ -n "$logs" ] \
     && tar -czf logs.tgz $logs && rm -f $logs)
  find "$OUT" -type f -printf '%s\t%P\n'
}

cmd_bench() {
  env_sh
  python3 bench/host_tier_copy.py "$@" 2>&1 | tee "$OUT/host_tier_copy.txt"
}

case "${1:-}" in
  install) cmd_install ;;
  bench) shift; cmd_bench "$@" ;;
  probe) cmd_probe ;;
  sweep) shift; cmd_sweep "$@" ;;
  start) shift; cmd_start "$@" ;;
  follow) cmd_follow ;;
  follow-all) cmd_follow_all ;;
  pack) pack ;;
  *) echo "usage: $0 install|probe|bench|sweep POLICY...|start POLICY...|follow|follow-all|pack"; exit 2 ;;
esac
