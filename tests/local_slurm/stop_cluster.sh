#!/usr/bin/env bash
# Stop the SLURM daemons that tests/local_slurm/start_cluster.sh started (recorded in
# /var/lib/sftsweep-slurm/started); daemons that were already running before are left alone.
# Installed packages and /etc/slurm/slurm.conf stay (start_cluster.sh reuses them).
set -uo pipefail
STATE_DIR=/var/lib/sftsweep-slurm
STARTED=$STATE_DIR/started
say() { echo "stop_cluster: $*"; }

[[ $(id -u) -eq 0 ]] || { echo "stop_cluster: FAILED: not root" >&2; exit 2; }
[[ -s $STARTED ]] || { say "nothing recorded as started by start_cluster.sh"; exit 0; }

pidfile_of() {
  case $1 in
    slurmd) echo /run/slurmd.pid ;;
    slurmctld) echo /run/slurmctld.pid ;;
    slurmdbd) echo /run/slurmdbd.pid ;;
    mariadb) echo /run/mysqld/mysqld.pid ;;
    munged) echo /run/munge/munged.pid ;;
  esac
}

rc=0
# slurmd first (it talks to slurmctld), then slurmctld, slurmdbd, its database, and munged last
# (all of them authenticate through it)
for d in slurmd slurmctld slurmdbd mariadb munged; do
  grep -qxF "$d" "$STARTED" || continue
  pf=$(pidfile_of "$d")
  pid=$(cat "$pf" 2>/dev/null || true)
  if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
    say "$d not running"
    continue
  fi
  if [[ $d == mariadb ]]; then
    mysqladmin shutdown >/dev/null 2>&1 || kill "$pid"   # mysqld_safe exits with it
  else
    kill "$pid"
  fi
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
    sleep 0.2
  fi
  if kill -0 "$pid" 2>/dev/null; then
    echo "stop_cluster: FAILED: $d (pid $pid) did not stop" >&2; rc=1
  else
    say "stopped $d (pid $pid)"
  fi
done
(( rc == 0 )) && rm -f "$STARTED"
exit $rc
