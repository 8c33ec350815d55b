#!/usr/bin/env bash
# Keep a compare.py grid's finished runs across machines: copies each finished run's
# final_metrics.json and scalars.json from work_dirs/<grid>/ into docs/runs/<grid>/ (small,
# committed). Restore with `cp -r docs/runs/<grid>/. work_dirs/<grid>/`: compare.py then reuses
# those runs (its table and curves need only these two files) and trains the missing ones.
# Usage: tools/archive_runs.sh <grid>      (e.g. crosskd_digits)
set -euo pipefail
cd "$(dirname "$0")/.."
grid=${1:?usage: tools/archive_runs.sh <grid folder under work_dirs>}
for f in work_dirs/$grid/*/seed*/final_metrics.json; do
  [ -f "$f" ] || continue
  run=$(dirname "$f"); rel=${run#work_dirs/}
  mkdir -p "docs/runs/$rel"
  cp "$f" "docs/runs/$rel/"
  for s in "$run"/*/vis_data/scalars.json; do
    [ -f "$s" ] || continue
    d=$(dirname "$(dirname "$s")"); ts=$(basename "$d")
    mkdir -p "docs/runs/$rel/$ts/vis_data"; cp "$s" "docs/runs/$rel/$ts/vis_data/"
  done
done
ls -R docs/runs/$grid | head -30
