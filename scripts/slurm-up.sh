#!/usr/bin/env bash
# Start a one-machine SLURM 22.05 cluster (Debian 12 packages) WITH accounting, for
# kvbench's tests and CI:
#
#   munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd
#
# Each daemon is started by hand (no systemd needed; CI machines run in a sandbox
# without it) and the script waits until it answers before starting the next one.
#
# Idempotent: packages are installed only if missing, config files are rewritten only
# if their content changes, daemons already running are kept (a daemon whose config
# changed is restarted). Re-running it on a cluster that is up takes about a second.
#
# The node offers two FAKE GPUs (gres gpu:h100:2) backed by /dev/null-like character
# devices, so that `--gres=gpu:h100:1` and `--constraint=h100` submissions can be
# tested on a CPU-only machine. Nothing real runs on them.
#
# Needs root (re-runs itself with sudo otherwise). Undo with scripts/slurm-down.sh.
#
# Environment knobs (all optional):
#   KVBENCH_SLURM_CLUSTER   ClusterName            (default kvbench)
#   KVBENCH_SLURM_TIMEOUT   seconds to wait for each daemon (default 60)
set -euo pipefail

if [[ ${EUID} -ne 0 ]]; then
  exec sudo --preserve-env=KVBENCH_SLURM_CLUSTER,KVBENCH_SLURM_TIMEOUT bash "$0" "$@"
fi

CLUSTER=${KVBENCH_SLURM_CLUSTER:-kvbench}
TIMEOUT=${KVBENCH_SLURM_TIMEOUT:-60}
ETC=/etc/slurm
LOGDIR=/var/log/slurm
# Fake GPU device files (test fakes, see above).
FAKE_GPU_DIR=/var/lib/kvbench/fake-gpu
DBD_PORT=6819
DB_NAME=slurm_acct_db
DB_USER=slurm

T0=$(date +%s.%N)
log() { printf '[slurm-up %5.1fs] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{print a-b}')" "$*"; }
die() { echo "[slurm-up] ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- packages
PKGS=(procps munge mariadb-server slurmdbd slurm-wlm-mysql-plugin slurmctld slurmd slurm-client)
missing=()
for p in "${PKGS[@]}"; do
  if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) != installed ]]; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- machine facts
H=$(hostname -s)
CPUS=$(nproc)
MEM_TOTAL=$(free -m | awk '/^Mem:/{print $2}')
# "A little under" what the kernel reports, so slurmd never finds less than configured
# (which would drain the node).
MARGIN=$((MEM_TOTAL / 20)); ((MARGIN < 256)) && MARGIN=256
REAL_MEM=$((MEM_TOTAL - MARGIN))
# With CR_Core_Memory a job without --mem would otherwise take the whole node's memory
# and jobs would run one at a time; give each CPU its share instead.
DEF_MEM_PER_CPU=$((REAL_MEM / CPUS))

# SlurmctldHost/NodeName must resolve.
if ! getent hosts "$H" >/dev/null; then
  log "adding $H to /etc/hosts"
  echo "127.0.0.1 $H" >>/etc/hosts
fi

# ---------------------------------------------------------------- helpers
# wait_for DESCRIPTION LOGFILE CMD...: retry CMD until it succeeds or TIMEOUT passes.
wait_for() {
  local what=$1 logf=$2; shift 2
  local deadline=$(($(date +%s) + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) > deadline)); then
      echo "[slurm-up] timed out after ${TIMEOUT}s waiting for $what; last lines of $logf:" >&2
      tail -n 30 "$logf" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.3
  done
}

# write_if_changed PATH MODE: write stdin to PATH if it differs; returns 0 if changed.
write_if_changed() {
  local path=$1 mode=$2 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"; chmod "$mode" "$path"; return 1
  fi
  install -m "$mode" -o root -g root "$tmp" "$path"
  rm -f "$tmp"
  return 0
}

# stop_pid NAME PIDFILE: scripts/lib.sh
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

running() { pgrep -x "$1" >/dev/null 2>&1; }

# spawn CMD...: start a daemon with no stdio and no other descriptor inherited from the
# caller (a CI runner's pipes must not be held open by daemons that outlive this script).
spawn() {
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
    done
    exec "$@"
  ) </dev/null >/dev/null 2>&1
}

mkdir -p "$ETC" "$LOGDIR" /var/spool/slurmctld /var/spool/slurmd /run/munge /run/mysqld
chown munge:munge /run/munge
chown mysql:mysql /run/mysqld

# ---------------------------------------------------------------- munged
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
  if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating munge key"
    runuser -u munge -- mungekey --create
  fi
  if ! running munged; then
    log "starting munged"
    spawn runuser -u munge -- /usr/sbin/munged
  fi
  wait_for munged /var/log/munge/munged.log munge_ok
fi

# ---------------------------------------------------------------- mariadbd
db_ok() { mysqladmin --silent ping; }
if ! db_ok >/dev/null 2>&1; then
  if [[ ! -d /var/lib/mysql/mysql ]]; then
    log "initialising MariaDB data directory"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  if ! running mariadbd && ! running mysqld; then
    log "starting mariadbd"
    spawn setsid -f bash -c 'exec /usr/sbin/mariadbd --user=mysql >>/var/log/mysql-kvbench.log 2>&1'
  fi
  wait_for mariadbd /var/log/mysql-kvbench.log db_ok
fi

# ---------------------------------------------------------------- config files
# Keep the slurm DB user's password across runs (it only guards a local test DB).
DB_PASS=""
if [[ -f $ETC/slurmdbd.conf ]]; then
  DB_PASS=$(sed -n 's/^StoragePass=//p' "$ETC/slurmdbd.conf")
fi
if [[ -z $DB_PASS ]]; then
  DB_PASS=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24 || true)
fi

dbd_changed=0
write_if_changed "$ETC/slurmdbd.conf" 600 <<EOF && dbd_changed=1 || true
# Written by kvbench scripts/slurm-up.sh (one-machine test cluster).
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$LOGDIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF

# FAKE GPUs: two character devices (same major/minor as /dev/null) so slurmd has one
# real file per GPU (a single /dev/null for two GPUs is refused). Test fakes only.
mkdir -p "$FAKE_GPU_DIR"
for i in 0 1; do
  [[ -c $FAKE_GPU_DIR/nvidia$i ]] || { rm -f "$FAKE_GPU_DIR/nvidia$i"; mknod -m 666 "$FAKE_GPU_DIR/nvidia$i" c 1 3; }
done

slurm_changed=0
write_if_changed "$ETC/slurm.conf" 644 <<EOF && slurm_changed=1 || true
# Written by kvbench scripts/slurm-up.sh: a one-machine SLURM cluster for tests/CI.
ClusterName=$CLUSTER
SlurmctldHost=$H
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
ReturnToService=2
KillWait=10
MailProg=/bin/true
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
# Accounting through slurmdbd: submitit polls job states with sacct, and without it a job
# that dies before writing its result leaves job.result() waiting.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStorageTRES=gres/gpu,gres/gpu:h100
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# The GPUs below are FAKE (see gres.conf): they let --gres=gpu:h100:N jobs be tested.
GresTypes=gpu
NodeName=$H CPUs=$CPUS RealMemory=$REAL_MEM Gres=gpu:h100:2 Feature=h100,cpu State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF

write_if_changed "$ETC/gres.conf" 644 <<EOF && slurm_changed=1 || true
# Written by kvbench scripts/slurm-up.sh. FAKE GPUs for tests: the files are character
# devices 1:3 (like /dev/null), not GPUs.
AutoDetect=off
NodeName=$H Name=gpu Type=h100 File=$FAKE_GPU_DIR/nvidia[0-1]
EOF

# ---------------------------------------------------------------- slurmdbd
dbd_ok() { sacctmgr -n -P list cluster format=cluster; }
if ((dbd_changed)); then
  stop_pid slurmdbd /run/slurmdbd.pid
fi
if ! running slurmdbd || ! dbd_ok >/dev/null 2>&1; then
  log "preparing database $DB_NAME and user $DB_USER"
  mysql -u root <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
  if ! running slurmdbd; then
    log "starting slurmdbd"
    spawn slurmdbd
  fi
  wait_for slurmdbd "$LOGDIR/slurmdbd.log" dbd_ok
fi
clusters=$(dbd_ok 2>/dev/null || true)
if ! grep -qx "$CLUSTER" <<<"$clusters"; then
  log "registering cluster $CLUSTER"
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

# ---------------------------------------------------------------- slurmctld
if ((slurm_changed)); then
  # New node/gres definitions need both daemons restarted, not just a reconfigure.
  stop_pid slurmd /run/slurmd.pid
  stop_pid slurmctld /run/slurmctld.pid
fi
ctld_ok() { scontrol ping | grep -q 'is UP'; }
if ! running slurmctld || ! ctld_ok >/dev/null 2>&1; then
  # State saved under another ClusterName makes slurmctld refuse to start.
  if [[ -f /var/spool/slurmctld/clustername ]] &&
     [[ $(cat /var/spool/slurmctld/clustername) != "$CLUSTER" ]]; then
    log "moving aside slurmctld state of another cluster"
    mv /var/spool/slurmctld "/var/spool/slurmctld.old.$(date +%s)"
    mkdir -p /var/spool/slurmctld
  fi
  if ! running slurmctld; then
    log "starting slurmctld"
    spawn slurmctld
  fi
  wait_for slurmctld "$LOGDIR/slurmctld.log" ctld_ok
fi

# ---------------------------------------------------------------- slurmd
node_state() { sinfo -h -n "$H" -o %T 2>/dev/null | head -n1; }
node_ok() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }
if ! running slurmd; then
  log "starting slurmd"
  spawn slurmd
  wait_for slurmd "$LOGDIR/slurmd.log" scontrol show slurmd
fi
if ! node_ok; then
  deadline=$(($(date +%s) + TIMEOUT)); resumed=0
  until node_ok; do
    st=$(node_state)
    # A node drained/down from an earlier run (config change, unclean stop) comes back
    # with RESUME once slurmd has registered.
    if ((!resumed)) && [[ $st =~ drain|down ]] && running slurmd; then
      sleep 1
      scontrol update NodeName="$H" State=RESUME >/dev/null 2>&1 || true
      resumed=1
    fi
    if (($(date +%s) > deadline)); then
      echo "[slurm-up] node $H is '$st' after ${TIMEOUT}s:" >&2
      scontrol show node "$H" | grep -E 'State|Reason' >&2 || true
      tail -n 20 "$LOGDIR/slurmd.log" >&2 || true
      exit 1
    fi
    sleep 0.3
  done
fi

# sacct must answer from the database, not "accounting storage is disabled".
if ! out=$(sacct -n -X -S now-1minutes 2>&1) || [[ $out == *"accounting storage is disabled"* ]]; then
  die "sacct does not work: $out"
fi

log "cluster $CLUSTER is up"
sinfo -o '%P %a %D %T %c %m %G %f %N'
