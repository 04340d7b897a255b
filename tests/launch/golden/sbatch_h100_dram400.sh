#!/bin/bash

# Parameters
#SBATCH --account=gts-lab
#SBATCH --array=0-1%2
#SBATCH --cpus-per-task=8
#SBATCH --error=/SWEEP/_submitit/%A_%a_0_log.err
#SBATCH --gres=gpu:h100:1
#SBATCH --job-name=kvbench-h100_dram400
#SBATCH --mem=448GB
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=/SWEEP/_submitit/%A_%a_0_log.out
#SBATCH --partition=gpu
#SBATCH --qos=inferno
#SBATCH --signal=USR2@90
#SBATCH --time=240
#SBATCH --wckey=submitit

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /SWEEP/_submitit/%A_%a_%t_log.out --error /SWEEP/_submitit/%A_%a_%t_log.err python -u -m submitit.core._submit /SWEEP/_submitit
