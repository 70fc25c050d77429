#!/usr/bin/env bash
# A hubtune search spread over a SLURM job array: every array task is one worker on one GPU, all on one study.
#
#   sbatch --array=0-7 --gpus-per-task=1 scripts/slurm_search.sh STORAGE OUT RECIPE.yaml [key=value ...] [--trials N]
#
# STORAGE: a database every node reaches (postgresql://user@host/db; it records heartbeats, so a trial of a
# preempted or killed task is found and run again), or journal:/cluster/PATH (a file on the shared filesystem; no
# heartbeats). SQLite on a network filesystem is not safe: its file locks are broken on many NFS setups.
# OUT: the search folder on the shared filesystem; every worker writes its trials there and the summary when done.
# Resubmitting the same array continues the search; `hubtune search --report OUT` rewrites the summary any time.
#
#SBATCH --job-name=hubtune-search
#SBATCH --ntasks=1
#SBATCH --signal=B:TERM@120
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: sbatch --array=0-N scripts/slurm_search.sh STORAGE OUT RECIPE.yaml [key=value ...] [--trials N]" >&2
  exit 2
fi
STORAGE=$1
OUT=$2
shift 2

# One GPU per task (SLURM sets CUDA_VISIBLE_DEVICES from --gpus-per-task). `exec`: the SIGTERM that SLURM sends
# before the time limit reaches hubtune, which stops the running trial and queues it for another worker.
exec hubtune search "$@" --storage "$STORAGE" --out "$OUT"
