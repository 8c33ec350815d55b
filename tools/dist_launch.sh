#!/usr/bin/env bash
# Shared by dist_train.sh and dist_train_distill.sh: run a tool under torchrun and, when it
# fails, print our one-line error (`error: ...`) again as the last line, after torchrun's own
# failure report. Usage: tools/dist_launch.sh NUM_PROCS TOOL.py [tool args...]
# PORT sets the rendezvous port (default 29500); PYTHON the interpreter (default: the
# repository's .venv/bin/python when it exists, else python).
NPROC=$1
TOOL=$2
HERE="$(cd "$(dirname "$0")" && pwd)"
PORT=${PORT:-29500}
if [ -z "$PYTHON" ]; then
  if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python; fi
fi
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run --nnodes=1 --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$HERE/$TOOL" --launcher pytorch "${@:3}" 2>&1 | tee "$LOG"
code=${PIPESTATUS[0]}
if [ "$code" -ne 0 ]; then
  grep -a '^error: ' "$LOG" | tail -n 1 >&2
fi
exit "$code"
