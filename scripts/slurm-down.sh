#!/usr/bin/env bash
# Stop the one-machine SLURM cluster started by scripts/slurm-up.sh, in reverse order:
# slurmd, slurmctld, slurmdbd, mariadbd, munged. Config, job state and the accounting
# database are kept, so slurm-up.sh brings the same cluster back.
# Idempotent: daemons that are not running are skipped.
set -euo pipefail

if [[ ${EUID} -ne 0 ]]; then
  exec sudo bash "$0" "$@"
fi

log() { echo "[slurm-down] $*"; }

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_pid slurmd /run/slurmd.pid
stop_pid slurmctld /run/slurmctld.pid
stop_pid slurmdbd /run/slurmdbd.pid
stop_pid mariadbd /run/mysqld/mysqld.pid
stop_pid munged /run/munge/munged.pid
log "stopped"
