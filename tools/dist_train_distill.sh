#!/usr/bin/env bash
# Usage: tools/dist_train_distill.sh NUM_PROCS --student CFG --teacher CFG --teacher-ckpt CKPT
#            --recipe RECIPE [train_distill.py args...]
# Runs tools/train_distill.py under torchrun with mmengine's pytorch launcher (gloo on CPU,
# nccl on GPU). PORT sets the rendezvous port (default 29500).
NPROC=$1
PORT=${PORT:-29500}
PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
python -m torch.distributed.run --nnodes=1 --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$(dirname "$0")/train_distill.py" --launcher pytorch "${@:2}"
