# Shared by the scripts in this folder (sourced, not run).

# kvb_repo: cd to the repository root; ROOT and VENV (KVBENCH_VENV, default .venv, made absolute).
kvb_repo() {
  ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  cd "$ROOT"
  VENV=${KVBENCH_VENV:-.venv}
  [[ $VENV == /* ]] || VENV=$ROOT/$VENV
}

# stop_pid NAME PIDFILE: SIGTERM the daemon named in PIDFILE, wait up to 20 s, then SIGKILL.
# Calls the caller's `log`.
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
