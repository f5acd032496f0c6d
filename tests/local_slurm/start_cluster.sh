#!/usr/bin/env bash
# Start (idempotently) a real single-node SLURM cluster on this machine.
#
#   tests/local_slurm/start_cluster.sh        # install if needed, configure, start, smoke-test
#
# Meant for throwaway dev/CI machines where we are root and systemd is not running
# (containers): installs slurm-wlm + munge through apt when missing, writes
# /etc/slurm/slurm.conf (only if absent or written by us: see MARKER), starts munged
# (as the munge user), slurmctld and slurmd directly, then waits (bounded) until the
# node is idle and a trivial `sbatch --wait` job completes.
#
# Prints one line per action on stdout. On failure prints one line
# "start_cluster: FAILED: <reason>" on stderr and exits non-zero:
#   2 = cannot install/start here (not root, apt unreachable, foreign config) -> callers may skip
#   1 = installed but the cluster did not come up (a real failure)
#
# Environment knobs:
#   SFTSWEEP_SLURM_PARTITION  partition name (default: debug)
#   SFTSWEEP_SLURM_WAIT_S     bound on waiting for the node / smoke job (default: 60)
#   SFTSWEEP_SLURM_ACCOUNTING 1 (default): also install/run MariaDB + slurmdbd so `sacct` works;
#                             0: AccountingStorageType=accounting_storage/none (no sacct)
set -uo pipefail

# the ownership mark written into the files this script manages; it names the script's first home, kept so that
# a config written before the move (to tests/local_slurm/) is still recognised as ours
MARKER="# managed-by: sftsweep sweep/slurm/start_cluster.sh"
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
DBD_CONF=$CONF_DIR/slurmdbd.conf
STATE_DIR=/var/lib/sftsweep-slurm        # what we started (for stop_cluster.sh), smoke-job output
PARTITION=${SFTSWEEP_SLURM_PARTITION:-debug}
WAIT_S=${SFTSWEEP_SLURM_WAIT_S:-60}
ACCOUNTING=${SFTSWEEP_SLURM_ACCOUNTING:-1}
[[ $ACCOUNTING == 0 ]] || ACCOUNTING=1
T0=$(date +%s.%N)

say()  { echo "start_cluster: $*"; }
die()  { echo "start_cluster: FAILED: $*" >&2; exit "${2:-1}"; }
skip() { die "$1" 2; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

# pid_alive PIDFILE -> 0 if the pid in PIDFILE is a live process
pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

[[ $(id -u) -eq 0 ]] || skip "not root (need root to install and run slurm daemons)"

# ---------------------------------------------------------------- install
have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]]; }
apt_log=/tmp/sftsweep-slurm-apt.log
# apt_install PKG... : install, running `apt-get update` only when the plain install fails
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 3
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "$@" >>"$apt_log" 2>&1 && return 0
  say "apt-get install $* failed without update; running apt-get update"
  apt-get update -q >>"$apt_log" 2>&1 || return 4
  apt-get install -y -q --no-install-recommends "$@" >>"$apt_log" 2>&1
}
base_missing=0; acct_missing=0
for b in slurmctld slurmd sbatch munged; do have "$b" || base_missing=1; done
if (( ACCOUNTING )); then for b in slurmdbd mariadbd; do have "$b" || acct_missing=1; done; fi
if (( base_missing || acct_missing )); then
  pkgs=(slurm-wlm munge); (( ACCOUNTING )) && pkgs+=(slurmdbd mariadb-server)
  say "installing ${pkgs[*]}"
  : >"$apt_log"
  apt_install "${pkgs[@]}"; rc=$?
  if (( rc != 0 )); then
    (( rc == 3 )) && skip "slurm not installed and no apt-get"
    (( rc == 4 )) && skip "apt-get update failed (package registry unreachable?), see $apt_log"
    if (( ACCOUNTING )) && apt_install slurm-wlm munge; then
      say "WARNING: could not install slurmdbd mariadb-server; running without accounting (see $apt_log)"
      ACCOUNTING=0
    else
      skip "apt-get install slurm-wlm munge failed, see $apt_log"
    fi
  fi
  say "installed ${pkgs[*]} ($(elapsed) s)"
else
  say "slurm-wlm munge$( (( ACCOUNTING )) && echo ' slurmdbd mariadb-server') already installed"
fi

# ---------------------------------------------------------------- host name
HOST=$(hostname -s) || die "hostname -s failed"
[[ -n $HOST ]] || die "empty short hostname"
if ! getent hosts "$HOST" >/dev/null 2>&1; then
  echo "127.0.0.1 $HOST $MARKER" >>/etc/hosts || die "cannot add $HOST to /etc/hosts"
  say "added '127.0.0.1 $HOST' to /etc/hosts"
fi

# ---------------------------------------------------------------- munge
id munge >/dev/null 2>&1 || die "no 'munge' user after installing munge"
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile=/etc/munge/munge.key --force >/dev/null 2>&1 \
      || die "mungekey --create failed"
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none \
      || die "cannot write /etc/munge/munge.key"
  fi
  say "created munge key /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key

# ---------------------------------------------------------------- start munged
record_started() { grep -qxF "$1" "$STATE_DIR/started" 2>/dev/null || echo "$1" >>"$STATE_DIR/started"; }
id slurm >/dev/null 2>&1 || die "no 'slurm' user after installing slurm-wlm"
install -d -m 0755 "$CONF_DIR" "$STATE_DIR"
install -d -o slurm -g slurm -m 0755 /var/lib/slurm /var/lib/slurm/slurmctld /var/log/slurm
install -d -o root -g root -m 0755 /var/lib/slurm/slurmd   # slurmd runs as root
# munged
if pid_alive /run/munge/munged.pid || pgrep -x munged >/dev/null 2>&1; then
  say "munged already running"
else
  runuser -u munge -- /usr/sbin/munged >/dev/null 2>&1 || die "munged failed to start (see /var/log/munge/munged.log)"
  record_started munged
  say "started munged"
fi
for _ in $(seq 1 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || die "munge round trip (munge -n | unmunge) fails"


# ---------------------------------------------------------------- accounting (slurmdbd + MariaDB)
# Without accounting `sacct` fails; submitit then falls back to "status may be inaccurate" and
# a job that dies without writing its result (killed, OOM, time limit) leaves the launcher
# polling forever. With slurmdbd, submitit sees FAILED/TIMEOUT and raises.
acct_off() { say "WARNING: $1; running without accounting (sacct unavailable)"; ACCOUNTING=0; }
if (( ACCOUNTING )) && [[ -e $DBD_CONF ]] && ! grep -qxF "$MARKER" "$DBD_CONF"; then
  acct_off "$DBD_CONF exists and was not written by sftsweep"
fi
if (( ACCOUNTING )); then
  if mysqladmin ping >/dev/null 2>&1; then
    say "mariadb already running"
  else
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    if [[ ! -d /var/lib/mysql/mysql ]]; then   # data dir missing (normally made by the package)
      install -d -o mysql -g mysql -m 0755 /var/lib/mysql
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/var/log/sftsweep-mysql-install.log 2>&1 \
        && say "initialised /var/lib/mysql"
    fi
    setsid mysqld_safe --user=mysql >/var/log/sftsweep-mysqld_safe.log 2>&1 </dev/null &
    safe_pid=$!
    for _ in $(seq 1 $(( WAIT_S * 4 ))); do
      mysqladmin ping >/dev/null 2>&1 && break
      kill -0 "$safe_pid" 2>/dev/null || break          # mysqld_safe gave up
      sleep 0.25
    done
    if mysqladmin ping >/dev/null 2>&1; then
      record_started mariadb; say "started mariadb"
    else
      acct_off "mariadb did not start (see /var/log/sftsweep-mysqld_safe.log)"
    fi
  fi
fi
if (( ACCOUNTING )); then
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'localhost';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;" >/dev/null 2>&1 \
    || acct_off "cannot create the slurm_acct_db database"
fi
if (( ACCOUNTING )); then
  new_dbd="$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StorageLoc=slurm_acct_db"
  if [[ ! -e $DBD_CONF ]] || [[ "$(cat "$DBD_CONF")" != "$new_dbd" ]]; then
    printf '%s\n' "$new_dbd" >"$DBD_CONF" && chown slurm:slurm "$DBD_CONF" && chmod 0600 "$DBD_CONF"
    say "wrote $DBD_CONF"
    if pid_alive /run/slurmdbd.pid; then
      kill "$(cat /run/slurmdbd.pid)"
      for _ in $(seq 1 50); do pid_alive /run/slurmdbd.pid || break; sleep 0.1; done
    fi
  fi
  if pid_alive /run/slurmdbd.pid; then
    say "slurmdbd already running"
  elif /usr/sbin/slurmdbd >/dev/null 2>&1; then
    record_started slurmdbd; say "started slurmdbd"
  else
    acct_off "slurmdbd failed to start (see /var/log/slurm/slurmdbd.log)"
  fi
fi
if (( ACCOUNTING )); then
  # probe slurmdbd with a minimal config: the live slurm.conf may still say accounting_storage/none
  probe=$STATE_DIR/probe-slurm.conf
  printf 'ClusterName=sftsweep\nSlurmctldHost=%s\nAuthType=auth/munge\nAccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\n' \
    "$HOST" >"$probe"
  dbd_ok() { SLURM_CONF=$probe timeout 5 sacctmgr -n show cluster >/dev/null 2>&1; }
  for _ in $(seq 1 $(( WAIT_S * 4 ))); do dbd_ok && break; sleep 0.25; done
  dbd_ok || acct_off "slurmdbd does not answer sacctmgr (see /var/log/slurm/slurmdbd.log)"
fi
if (( ACCOUNTING )); then
  ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"
else
  ACCT_LINES="AccountingStorageType=accounting_storage/none"
fi

# ---------------------------------------------------------------- slurm.conf
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/{print int($2/1024)}' /proc/meminfo)
# leave ~5% (at least 512 MB) for the OS so slurmd never reports less than configured
REAL_MEM=$(( MEM_MB - (MEM_MB / 20 > 512 ? MEM_MB / 20 : 512) ))
(( REAL_MEM > 0 )) || REAL_MEM=$MEM_MB


new_conf=$(cat <<EOF
$MARKER
# Single-node SLURM for dev/CI (no systemd, no cgroups, no accounting). Regenerated on every
# start; delete the marker line above to keep local edits (the script then refuses to touch it).
ClusterName=sftsweep
SlurmctldHost=$HOST
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$ACCT_LINES
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without this a job that asks for no memory gets the whole node (one job at a time)
DefMemPerCPU=$(( REAL_MEM / CPUS ))
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
MailProg=/bin/true
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)

conf_changed=0
if [[ -e $CONF ]] && ! grep -qxF "$MARKER" "$CONF"; then
  # Someone else's config: never overwrite it. Use that cluster only if it already answers.
  if timeout 10 sinfo -h >/dev/null 2>&1; then
    say "foreign $CONF present and its cluster answers; using it as is"
    FOREIGN=1
  else
    skip "$CONF exists and was not written by sftsweep (no marker); not overwriting it"
  fi
else
  FOREIGN=0
  if [[ ! -e $CONF ]] || [[ "$(cat "$CONF")" != "$new_conf" ]]; then
    printf '%s\n' "$new_conf" >"$CONF" || die "cannot write $CONF"
    chmod 0644 "$CONF"
    conf_changed=1
    say "wrote $CONF (node $HOST CPUs=$CPUS RealMemory=$REAL_MEM, partition $PARTITION)"
  else
    say "$CONF up to date"
  fi
fi

# ---------------------------------------------------------------- daemons
if (( FOREIGN == 0 )); then
  # A changed config takes effect by restarting the daemons we run.
  if (( conf_changed )); then
    for d in slurmd slurmctld; do
      if pid_alive /run/$d.pid; then
        kill "$(cat /run/$d.pid)" 2>/dev/null
        for _ in $(seq 1 50); do pid_alive /run/$d.pid || break; sleep 0.1; done
        say "stopped $d (config changed)"
      fi
    done
  fi
  if pid_alive /run/slurmctld.pid; then
    say "slurmctld already running"
  else
    /usr/sbin/slurmctld >/dev/null 2>&1 || die "slurmctld failed to start (see /var/log/slurm/slurmctld.log)"
    record_started slurmctld
    say "started slurmctld"
  fi
  if pid_alive /run/slurmd.pid; then
    say "slurmd already running"
  else
    /usr/sbin/slurmd -N "$HOST" >/dev/null 2>&1 || die "slurmd failed to start (see /var/log/slurm/slurmd.log)"
    record_started slurmd
    say "started slurmd"
  fi
fi

# ---------------------------------------------------------------- wait for an idle node
SLURM_VERSION=$(sinfo --version 2>/dev/null | awk '{print $2}')
deadline=$(( $(date +%s) + WAIT_S ))
state=""
while :; do
  state=$(timeout 10 sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n1)
  case $state in
    idle|mixed|allocated|completing) break ;;
    down*|drain*|drained*)
      # e.g. "unexpectedly rebooted" after a restart: bring it back
      scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  (( $(date +%s) < deadline )) || die "node $HOST not idle after ${WAIT_S}s (state '${state:-no answer}'; see /var/log/slurm/)"
  sleep 0.5
done
say "node $HOST is $state ($(elapsed) s)"

# ---------------------------------------------------------------- smoke job
# srun returns as soon as the step ends (sbatch --wait polls at 2 s, 4 s, ... and would add
# up to ~10 s here); the test suite checks sbatch --wait separately.
if ! smoke=$(timeout "$WAIT_S" srun -N1 -n1 -t 1 -J sftsweep-smoke echo sftsweep-smoke-ok 2>&1); then
  die "smoke job (srun) failed: $(echo "$smoke" | tr '\n' ' ')"
fi
[[ $smoke == *sftsweep-smoke-ok* ]] || die "smoke job (srun) printed '$(echo "$smoke" | tr '\n' ' ')'"
say "smoke job ran through srun"
say "cluster ready: slurm ${SLURM_VERSION:-?}, node $HOST, partition $PARTITION, accounting $( (( ACCOUNTING )) && echo slurmdbd || echo none) (total $(elapsed) s)"
