#!/usr/bin/env bash
# The README's main command: set up (idempotent) and run the embedded default sweep
# (experiment=smoke: local executor, CPU engine, tiny model), then draw its report.
#   bash scripts/smoke.sh [overrides ...]     e.g. jps=[1,2,4]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${KVBENCH_VENV:-.venv}
[[ $VENV == /* ]] || VENV=$ROOT/$VENV
bash scripts/setup.sh
exec "$VENV/bin/python" -m launch sweep "$@"
