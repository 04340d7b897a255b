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

# stop_pid NAME PIDFILE: SIGTERM the daemon named in PIDFILE, wait up to 20 s, then SIGKILL.
stop_pid() {
  local name=$1 pidfile=$2 pid i
  [[ -s $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop, killing it"
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

stop_pid slurmd /run/slurmd.pid
stop_pid slurmctld /run/slurmctld.pid
stop_pid slurmdbd /run/slurmdbd.pid
stop_pid mariadbd /run/mysqld/mysqld.pid
stop_pid munged /run/munge/munged.pid
log "stopped"
