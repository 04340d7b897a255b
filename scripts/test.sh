#!/usr/bin/env bash
# The README's test command: `bash scripts/test.sh [pytest args...]`.
# Works on a fresh machine: sets up the venv (scripts/setup.sh) and the one-machine SLURM
# cluster (scripts/slurm-up.sh, needs root or sudo); both are idempotent and take about a
# second when everything is already in place. Then runs pytest with the given arguments.
#
#   KVBENCH_VENV=PATH       venv to use (default .venv in the repo root)
#   KVBENCH_SKIP_SLURM=1    don't touch SLURM (tests marked `slurm` will then fail or skip)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
kvb_repo

bash scripts/setup.sh
if [[ ${KVBENCH_SKIP_SLURM:-0} != 1 ]]; then
  bash scripts/slurm-up.sh
fi
# With the cluster started here, a SLURM test that cannot reach it fails instead of skipping.
[[ ${KVBENCH_SKIP_SLURM:-0} == 1 ]] || export KVBENCH_REQUIRE_SLURM=1
PYTEST=("$VENV/bin/python" -m pytest -q -p no:cacheprovider)
# `--tiers ARGS...`: the two tiers below, each also given ARGS (tests/test_test_sh.py runs
# the tier logic on a few small files this way); any other arguments: plain pytest.
if [[ ${1:-} == --tiers ]]; then
  shift
elif [[ $# -gt 0 ]]; then
  exec "${PYTEST[@]}" "$@"
fi
# The whole suite: two tiers side by side, one core each. The server/SLURM tier runs one test
# at a time as always (a vLLM CPU server per test module, one cluster); the tier without a
# server (planning, analysis, figures, chromium: CPU only, about a quarter of the wall time)
# runs beside it instead of before it. Its output is shown when it ends; both must pass.
fast_log=$(mktemp "${TMPDIR:-/tmp}/kvbench-fast-tier.XXXXXX")
# set -m: a background job of a non-interactive shell starts with SIGINT ignored, which the
# tests of Ctrl-C handling would inherit; with job control on it keeps the default (and gets
# its own process group, stopped by the trap below).
set -m
"${PYTEST[@]}" -m "not server and not slurm" "$@" >"$fast_log" 2>&1 &
fast_pid=$!
set +m
# `|| true`: under set -e a failing kill (the tier has already ended) would end the trap,
# and the script, with status 1 whatever the tiers said.
trap 'kill -- -"$fast_pid" 2>/dev/null || true; rm -f "$fast_log"' EXIT
slow_rc=0
"${PYTEST[@]}" -m "server or slurm" "$@" || slow_rc=$?
fast_rc=0
wait "$fast_pid" || fast_rc=$?
echo "=== the tier without a server (ran beside the one above):"
cat "$fast_log"
# 5 = that tier collected nothing (fine for one tier, not for both)
if [[ $slow_rc == 5 && $fast_rc == 5 ]]; then exit 5; fi
[[ $slow_rc == 5 ]] && slow_rc=0
[[ $fast_rc == 5 ]] && fast_rc=0
if [[ $slow_rc != 0 ]]; then exit "$slow_rc"; fi
exit "$fast_rc"
