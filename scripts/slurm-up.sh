#!/usr/bin/env bash
# Start a single-node SLURM cluster (munge + slurmctld + slurmd) on this machine, for the tests.
# Installs slurm-wlm and munge from Debian when missing. Idempotent: does nothing if SLURM answers.
# A one-node slurm.conf (munge auth, cons_tres, linuxproc); state, spool and logs under $HPCPOP_SLURM_DIR.
set -euo pipefail
DIR=${HPCPOP_SLURM_DIR:-/var/tmp/hpcpop-slurm}
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)

if [ "$(id -u)" != 0 ]; then
  echo "slurm-up: needs root (to install packages and run slurmd); skipping" >&2
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q slurm-wlm munge
fi

if timeout 10 sinfo -h >/dev/null 2>&1 && sinfo -h -o %T | grep -qE 'idle|mix|alloc'; then
  echo "slurm-up: already running"; exit 0
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
CPUS=$(nproc)
cat > "$CONF" <<CONF
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
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
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF

pkill -x slurmctld 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
sleep 1
slurmctld
slurmd
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mix|alloc'; then
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    echo "slurm-up: node $HOST up ($CPUS cpus, ${MEM} MB)"; exit 0
  fi
  sleep 1
done
echo "slurm-up: SLURM did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log" >&2
sinfo >&2 || true
exit 1
