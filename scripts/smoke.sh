#!/usr/bin/env bash
# The README's main command: set up (idempotent) and run the embedded default sweep
# (experiment=smoke: local executor, CPU engine, tiny model), then draw its report.
#   bash scripts/smoke.sh [overrides ...]     e.g. jps=[1,2,4]
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
kvb_repo
bash scripts/setup.sh
exec "$VENV/bin/python" -m launch sweep "$@"
