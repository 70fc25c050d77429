#!/usr/bin/env bash
# Multi-node hubtune training under SLURM: one `accelerate launch` per node, rendezvous on the first node.
#
#   sbatch --nodes=2 --gpus-per-node=8 --ntasks-per-node=1 scripts/slurm_launch.sh RECIPE.yaml [key=value ...]
#
#SBATCH --job-name=hubtune
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: sbatch scripts/slurm_launch.sh RECIPE.yaml [key=value ...]" >&2
  exit 2
fi

GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
MAIN_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}
CONFIG=${ACCELERATE_CONFIG:-accelerate_configs/multi_node.yaml}

# srun starts one launcher per node; each reads its node rank from SLURM_NODEID.
srun --kill-on-bad-exit=1 bash -c "accelerate launch \
  --config_file $CONFIG \
  --num_machines $SLURM_NNODES \
  --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
  --machine_rank \$SLURM_NODEID \
  --main_process_ip $MAIN_NODE \
  --main_process_port $MAIN_PORT \
  --rdzv_backend c10d \
  -m pipelines train $*"
