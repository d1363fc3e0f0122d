#!/usr/bin/env bash
# Start a SLURM cluster (munge + slurmctld + slurmd) on this machine, for the tests.
# Installs slurm-wlm and munge from Debian when missing. Idempotent: does nothing if SLURM answers
# with the nodes asked for. A slurm.conf (munge auth, cons_tres, linuxproc); state, spool and logs
# under $HPCPOP_SLURM_DIR.
#
# HPCPOP_SLURM_NODES (default 2): how many node names. Node 1 is this host ($(hostname -s)) and is the
# only node of the default partition `debug`, exactly as a one-node cluster, so jobs that name no
# partition (or `debug`) see one node. With 2 or more, nodes HOST-2 ... are more slurmd daemons on this
# same host (`slurmd -N NAME`, Slurm built with --enable-multiple-slurmd, as Debian's is: `scontrol
# show config` says MULTIPLE_SLURMD = Yes), each on its own loopback port, and the partition `multi`
# holds every node. HPCPOP_SLURM_NODES=1 writes the one-node slurm.conf of earlier versions.
set -euo pipefail
DIR=${HPCPOP_SLURM_DIR:-/var/tmp/hpcpop-slurm}
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)
NODES=${HPCPOP_SLURM_NODES:-2}
PORT0=6818   # slurmd port of node 1 (SLURM's default); node i listens on PORT0 + 10 + i
case "$NODES" in ''|*[!0-9]*) echo "slurm-up: HPCPOP_SLURM_NODES must be a number, not '$NODES'" >&2; exit 2;; esac
[ "$NODES" -ge 1 ] || { echo "slurm-up: HPCPOP_SLURM_NODES must be at least 1" >&2; exit 2; }
NAMES=$HOST
for i in $(seq 2 "$NODES"); do NAMES="$NAMES $HOST-$i"; done
# The CPUs this process may use; not OMP_NUM_THREADS, which GNU nproc obeys and which a caller (pytest,
# a job) may have set to 1: a node of 1 CPU cannot run a 2-rank job, which then pends for ever.
CPUS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)

# Whether SLURM answers, knows exactly the node names asked for, each with this host's CPUs, and one of
# them is usable.
slurm_ready() {
  timeout 10 sinfo -h >/dev/null 2>&1 || return 1
  local known cpus
  known=$(timeout 10 sinfo -h -N -o %N 2>/dev/null | sort -u | paste -sd' ' -)
  [ "$known" = "$(echo "$NAMES" | tr ' ' '\n' | sort -u | paste -sd' ' -)" ] || return 1
  cpus=$(timeout 10 sinfo -h -N -o %c 2>/dev/null | sort -u | paste -sd' ' -)
  [ "$cpus" = "$CPUS" ] || return 1
  sinfo -h -o %T | grep -qE 'idle|mix|alloc'
}

# The pids of our running daemons, from their pid files (a pid counts only while it is a live slurm daemon).
our_pids() {
  local f pid
  for f in "$DIR"/slurmctld.pid "$DIR"/slurmd*.pid; do
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    [ "$(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null)" = Z ] && continue  # ended, not yet reaped
    case "$(cat /proc/"$pid"/comm 2>/dev/null)" in slurmctld|slurmd) echo "$pid";; esac
  done
}

# Stop our daemons: ask slurmctld to shut everything down, then end what is left by its pid.
slurm_stop() {
  timeout 10 scontrol shutdown >/dev/null 2>&1 || true
  for _ in $(seq 1 20); do
    [ -z "$(our_pids)" ] && return 0
    sleep 0.5
  done
  # shellcheck disable=SC2046
  kill $(our_pids) 2>/dev/null || true
  sleep 1
}

if [ "$(id -u)" != 0 ]; then
  echo "slurm-up: needs root (to install packages and run slurmd); skipping" >&2
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q slurm-wlm munge
fi

if slurm_ready; then
  echo "slurm-up: already running ($NAMES)"; exit 0
fi

# munge
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged --force
fi

# slurm.conf
mkdir -p "$DIR/state" "$DIR/spool" /etc/slurm
MEM=$(awk '/MemTotal/ {printf "%d", $2/1024*0.8}' /proc/meminfo)
if [ "$NODES" = 1 ]; then
  SLURMD_SPOOL=$DIR/spool
  SLURMD_PID=$DIR/slurmd.pid
  SLURMD_LOG=$DIR/slurmd.log
  NODE_LINES="NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN"
  PARTITIONS="PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP"
else
  # One spool, pid and log file per slurmd (%n: the node name); every node on loopback, its own port.
  # Each node offers this host's CPUs and memory: the nodes share them (overcommitted), as a test needs.
  mkdir -p "$DIR/spool/$HOST"
  SLURMD_SPOOL=$DIR/spool/%n
  SLURMD_PID=$DIR/slurmd-%n.pid
  SLURMD_LOG=$DIR/slurmd-%n.log
  # NoCtldInAddrAny, NoInAddrAny: slurmctld and slurmd listen on the address of their host name (loopback here), not on every interface.
  NODE_LINES="CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
NodeName=$HOST NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$PORT0 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN"
  for i in $(seq 2 "$NODES"); do
    mkdir -p "$DIR/spool/$HOST-$i"
    NODE_LINES="$NODE_LINES
NodeName=$HOST-$i NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((PORT0 + 10 + i)) CPUs=$CPUS RealMemory=$MEM State=UNKNOWN"
  done
  PARTITIONS="PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=multi Nodes=$(echo "$NAMES" | tr ' ' ,) MaxTime=INFINITE State=UP"
fi
cat > "$CONF" <<CONF
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$SLURMD_LOG
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
MpiDefault=none
SlurmdTimeout=300
$NODE_LINES
$PARTITIONS
CONF

slurm_stop
sleep 1
slurmctld
if [ "$NODES" = 1 ]; then
  slurmd
else
  for name in $NAMES; do slurmd -N "$name"; done
fi
for _ in $(seq 1 30); do
  up=$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u | grep -cE ' (idle|mix|alloc)' || true)
  if [ "$up" -ge "$NODES" ]; then
    for name in $NAMES; do scontrol update nodename="$name" state=resume >/dev/null 2>&1 || true; done
    echo "slurm-up: $NODES node(s) up: $NAMES ($CPUS cpus, ${MEM} MB each)"; exit 0
  fi
  sleep 1
done
echo "slurm-up: SLURM did not come up; see $DIR/slurmctld.log and $DIR/slurmd*.log" >&2
sinfo -N >&2 || true
exit 1
