#!/usr/bin/env bash
# slurm-up.sh - bring up a real Slurm cluster on one Debian 12 (bookworm) machine, as root.
# Works without systemd (daemons are started directly) and without cgroups. From ../shared/slurm/ (where
# its README lists what was checked and every pitfall), plus NODES and GPUS for tests/test_slurm.py.
#
# Knobs (environment):
#   SLURM_PREFIX=${TMPDIR:-/tmp}/trainlab-slurm  config, state, spool, logs, pid files, DB live here
#   WITH_DBD=1        also run MariaDB + slurmdbd so `sacct` works (submitit polls sacct for job state)
#   SLURM_USER=slurm  SlurmUser for slurmctld/slurmdbd (root also works)
#   INSTALL=1         apt-get install the packages (0 = assume installed)
#   Clients need SLURM_CONF (`source $SLURM_PREFIX/env.sh`); jobs get it from slurmd automatically.
#   DB_PORT=3307      TCP port of the private MariaDB (127.0.0.1; not 3306, which a systemd host's
#                     apt-started mariadb may hold)
#   WAIT_S=60         how long to wait for the node to become idle
#   NODES=1           slurmd daemons on this host, each a node (trainlab-n1, ...; added to /etc/hosts so
#                     that a node name resolves, as DDP's master address does); 1: one node named as the host
#   CPUS=             CPUs each node claims (default: the host's); more than exist lets tests run jobs side
#                     by side that each ask for whole cores (no cgroups: nothing binds them)
#   GPUS=0            fake GPUs per node (gres files that are links to /dev/null): --gpus-per-node schedules
#                     and sets CUDA_VISIBLE_DEVICES, with no CUDA behind it
set -euo pipefail

PREFIX=${SLURM_PREFIX:-${TMPDIR:-/tmp}/trainlab-slurm}
WITH_DBD=${WITH_DBD:-1}
SLURM_USER=${SLURM_USER:-slurm}
INSTALL=${INSTALL:-1}
DB_PORT=${DB_PORT:-3307}
WAIT_S=${WAIT_S:-60}
NODES=${NODES:-1}
GPUS=${GPUS:-0}
CPUS=${CPUS:-}
CLUSTER=trainlab
NODE=$(hostname -s)
if [ "$NODES" = 1 ]; then names=$NODE; else names=$(seq -f "trainlab-n%g" -s " " "$NODES"); fi
export SLURM_CONF=$PREFIX/etc/slurm.conf

t0=${EPOCHREALTIME/./}
log() { local t=$(( ${EPOCHREALTIME/./} - t0 )); printf '[slurm-up %4d.%01ds] %s\n' $((t/1000000)) $((t%1000000/100000)) "$*"; }
die() { echo "slurm-up: ERROR: $*" >&2; for f in "$PREFIX"/log/*.log "$PREFIX"/dbrun/*.log; do [ -f "$f" ] && { echo "== $f" >&2; tail -20 "$f" >&2; }; done; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

# ---------------------------------------------------------------- 1. packages
if [ "$INSTALL" = 1 ]; then
  pkgs="slurmctld slurmd slurm-client munge"
  [ "$WITH_DBD" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $pkgs >/dev/null
  log "packages installed"
fi

# ---------------------------------------------------------------- 2. munge
if [ ! -s /etc/munge/munge.key ]; then            # Debian's postinst normally creates it
  install -d -o munge -g munge -m 0700 /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge      # systemd's RuntimeDirectory= creates it; no systemd here
install -d -m 0755 "$PREFIX"/{etc,state,spool,log,run}
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running (left alone)"
else
  runuser -u munge -- /usr/sbin/munged             # forks into the background
  touch "$PREFIX/run/munged.ours"                  # slurm-down.sh stops it only if we started it
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || die "munged did not start (see /var/log/munge/munged.log)"
  log "munged started"
fi

# ---------------------------------------------------------------- 3. config
chown "$SLURM_USER:" "$PREFIX/state" "$PREFIX/log"  # slurmctld runs as SlurmUser: needs these writable
# Use the real hardware layout (avoids "Node reconfigured socket/core boundaries"), but declare
# RealMemory a bit below the real one: Slurm refuses (INVAL/DRAIN) a node reporting less than configured.
# Several nodes on one host: Debian's slurmd is built with MULTIPLE_SLURMD (`slurmd -N name`, one port each;
# config_overrides: each node may claim the host's CPUs).
hw=$(slurmd -C | head -1)                            # NodeName=... CPUs=.. Boards=.. ... RealMemory=N
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
layout=$(sed -e 's/^NodeName=[^ ]* //' -e "s/RealMemory=[0-9]*/RealMemory=$((mem * 95 / 100))/" <<<"$hw")
if [ -n "$CPUS" ]; then
  layout=$(sed -e "s/CPUs=[0-9]*/CPUs=$CPUS/" -e 's/SocketsPerBoard=[0-9]*/SocketsPerBoard=1/' \
               -e "s/CoresPerSocket=[0-9]*/CoresPerSocket=$CPUS/" -e 's/ThreadsPerCore=[0-9]*/ThreadsPerCore=1/' <<<"$layout")
fi
gres=
rm -f "$PREFIX/etc/gres.conf"
if [ "$GPUS" -gt 0 ]; then
  install -d "$PREFIX/dev"
  for g in $(seq 0 $((GPUS - 1))); do ln -sfn /dev/null "$PREFIX/dev/nvidia$g"; done
  gres="Gres=gpu:$GPUS"
  echo "Name=gpu File=$PREFIX/dev/nvidia[0-$((GPUS - 1))]" > "$PREFIX/etc/gres.conf"
fi
nodelines= port=17000
for name in $names; do
  port=$((port + 1))
  nodelines+="NodeName=$name NodeHostname=$NODE NodeAddr=127.0.0.1 Port=$port $layout $gres State=UNKNOWN"$'\n'
done
if [ "$NODES" -gt 1 ] && ! grep -q " trainlab-n$NODES\b" /etc/hosts; then
  echo "127.0.0.1 $names" >> /etc/hosts
fi

if [ "$WITH_DBD" = 1 ]; then
  acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/linux"
else
  acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

cat > "$SLURM_CONF" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=$SLURM_USER
AuthType=auth/munge
CredType=cred/munge
# A requeued job may start again only after cred_expire+1 s (default 120 s): shorten for CI.
AuthInfo=cred_expire=10
MpiDefault=none
# No cgroups / no systemd: track processes via /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobCompType=jobcomp/none
$acct
SchedulerType=sched/backfill
# Re-test pending jobs every 2 s (defaults 60 s / 30 s): a requeued job restarts ~12 s later instead of ~30-60 s.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
# CR_Core (not CR_Core_Memory): jobs without --mem would otherwise get the whole node's memory.
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
GresTypes=gpu
AccountingStorageTRES=gres/gpu
ReturnToService=2
JobRequeue=1
KillWait=5
StateSaveLocation=$PREFIX/state
SlurmdSpoolDir=$PREFIX/spool/%n
SlurmctldPidFile=$PREFIX/run/slurmctld.pid
SlurmdPidFile=$PREFIX/run/slurmd-%n.pid
SlurmctldLogFile=$PREFIX/log/slurmctld.log
SlurmdLogFile=$PREFIX/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
$nodelines
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
echo "export SLURM_CONF=$SLURM_CONF" > "$PREFIX/env.sh"
log "config written: $SLURM_CONF ($names: $layout $gres)"

# ---------------------------------------------------------------- 4. MariaDB + slurmdbd
if [ "$WITH_DBD" = 1 ]; then
  DB=$PREFIX/db; SOCK=$PREFIX/dbrun/mysqld.sock
  install -d -o mysql -g mysql "$PREFIX/dbrun"
  if [ ! -d "$DB/mysql" ]; then
    install -d -o mysql -g mysql "$DB"
    mariadb-install-db --user=mysql --datadir="$DB" --auth-root-authentication-method=socket \
      --skip-test-db >"$PREFIX/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed"
  fi
  setsid -f /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB" --socket="$SOCK" \
    --pid-file="$PREFIX/dbrun/mariadbd.pid" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --skip-log-bin --innodb-buffer-pool-size=32M --innodb-lock-wait-timeout=900 --log-error="$PREFIX/dbrun/mariadb.log" \
    </dev/null >/dev/null 2>&1
  for _ in $(seq 300); do [ -S "$SOCK" ] && mariadb --socket="$SOCK" -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
  mariadb --socket="$SOCK" -e 'select 1' >/dev/null || die "mariadbd did not start"
  mariadb --socket="$SOCK" <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
  log "mariadbd started"
  # slurmdbd reads slurmdbd.conf from the directory of SLURM_CONF; it must be owned by SlurmUser, mode 600.
  cat > "$PREFIX/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=$SLURM_USER
DebugLevel=info
LogFile=$PREFIX/log/slurmdbd.log
PidFile=$PREFIX/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chown "$SLURM_USER:" "$PREFIX/etc/slurmdbd.conf"; chmod 600 "$PREFIX/etc/slurmdbd.conf"
  /usr/sbin/slurmdbd
  for _ in $(seq 300); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.1; done
  sacctmgr -n list cluster >/dev/null 2>&1 || die "slurmdbd did not answer"
  # (no `sacctmgr add cluster` needed: slurmctld 22.05 registers ClusterName itself on first start)
  log "slurmdbd started"
fi

# ---------------------------------------------------------------- 5. slurmctld + slurmd
# Both fork and exit 0 even when the daemon dies right after (e.g. bad StateSaveLocation owner),
# so watch the pid file's process while waiting for the node.
/usr/sbin/slurmctld
for name in $names; do /usr/sbin/slurmd -N "$name"; done
idle=
for _ in $(seq $((WAIT_S * 10))); do
  for pidfile in "$PREFIX"/run/slurm*.pid; do
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || die "$(basename "$pidfile" .pid) died"
  done
  idle=$(sinfo -h -N -t idle -o %N 2>/dev/null | wc -l)
  [ "$idle" = "$NODES" ] && break
  sleep 0.1
done
[ "$idle" = "$NODES" ] || die "$idle of $NODES nodes idle after ${WAIT_S}s: $(sinfo -h -N -o '%N %T' | tr '\n' ' ')"
log "nodes $names idle; now: source $PREFIX/env.sh"
sinfo
