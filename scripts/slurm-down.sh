#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by slurm-up.sh (cancels every job first).
set -u
scancel --user="$(id -un)" 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
echo "slurm-down: stopped"
