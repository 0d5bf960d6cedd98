#!/usr/bin/env bash
# slurm-down.sh - stop the cluster started by slurm-up.sh (same SLURM_PREFIX). Packages stay installed.
# From ../shared/slurm/, stopping every slurmd of a NODES>1 cluster.
#   PURGE=1  also delete $SLURM_PREFIX (state, logs, DB)
set -uo pipefail
PREFIX=${SLURM_PREFIX:-${TMPDIR:-/tmp}/trainlab-slurm}
export SLURM_CONF=$PREFIX/etc/slurm.conf

pid_of() { cat "$1" 2>/dev/null; }
stop_pid() {   # stop_pid NAME PID: SIGTERM, wait up to 30 s, then SIGKILL
  local name=$1 pid=$2
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid"
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || { echo "stopped $name ($pid)"; return 0; }; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null; echo "killed $name ($pid)"
}

# 1. cancel all jobs and wait until slurmd has reaped them (otherwise slurmstepd/job processes outlive slurmd)
if [ -f "$SLURM_CONF" ] && squeue -h >/dev/null 2>&1; then
  ids=$(squeue -h -o %A); [ -n "$ids" ] && scancel $ids
  for _ in $(seq 300); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.1; done
fi

# 2. daemons, by their pid files (children such as slurmscriptd exit with their parent)
for pidfile in "$PREFIX"/run/slurmd*.pid; do stop_pid "$(basename "$pidfile" .pid)" "$(pid_of "$pidfile")"; done
stop_pid slurmctld "$(pid_of "$PREFIX/run/slurmctld.pid")"
stop_pid slurmdbd  "$(pid_of "$PREFIX/run/slurmdbd.pid")"
stop_pid mariadbd  "$(pid_of "$PREFIX/dbrun/mariadbd.pid")"
if [ -f "$PREFIX/run/munged.ours" ]; then          # only if slurm-up.sh started it
  stop_pid munged "$(pid_of /run/munge/munged.pid)"; rm -f "$PREFIX/run/munged.ours"
fi
rm -f "$PREFIX"/run/*.pid
[ "${PURGE:-0}" = 1 ] && rm -rf "$PREFIX" && echo "removed $PREFIX"
exit 0
