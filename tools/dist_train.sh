#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
# Runs tools/train.py under torchrun with mmengine's pytorch launcher (gloo on CPU, nccl on GPU).
# PORT sets the rendezvous port (default 29500).
exec bash "$(dirname "$0")/dist_launch.sh" "$2" train.py "$1" "${@:3}"
