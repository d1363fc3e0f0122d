#!/usr/bin/env bash
# Stop the SLURM cluster started by slurm-up.sh (cancels every job first): slurmctld and every slurmd
# (one per node name; two by default, all on this host).
set -u
scancel --user="$(id -un)" 2>/dev/null || true
timeout 10 scontrol shutdown >/dev/null 2>&1 && sleep 2
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
echo "slurm-down: stopped"
