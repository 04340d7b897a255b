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
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
