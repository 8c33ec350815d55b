#!/usr/bin/env bash
# Usage: tools/dist_train_distill.sh NUM_PROCS --student CFG --teacher CFG --teacher-ckpt CKPT
#            --recipe RECIPE [train_distill.py args...]
# Runs tools/train_distill.py under torchrun with mmengine's pytorch launcher (gloo on CPU,
# nccl on GPU). PORT sets the rendezvous port (default 29500).
exec bash "$(dirname "$0")/dist_launch.sh" "$1" train_distill.py "${@:2}"
