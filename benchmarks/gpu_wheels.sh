#!/usr/bin/env bash
# Run HERE (a machine with internet), once per device session: fetches what benchmarks/gpu_check.sh
# installs on the device machine, which has CUDA torch, nvcc and numpy/scipy/matplotlib/opencv but
# no OpenMMLab packages and no network (see /work/.library/device/KINDS.md): the pure-Python
# wheels (no dependencies resolved: each one it needs is named), pycocotools built for its
# Python, and mmcv 2.1.0's source (mmcv publishes no wheel for that torch; gpu_check.sh builds
# it there). Into .whl/ (git-ignored through .git/info/exclude; the device tool's carry: .whl).
# Usage: bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]     (default 3.12, the device's)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-3.12}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
mkdir -p .whl
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do plat+=(--platform "$p"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  "${plat[@]}" -d .whl \
  mmengine==0.10.7 mmdet==3.3.0 mmrazor==1.0.0 pycocotools addict yapf platformdirs termcolor \
  terminaltables shapely ordered-set 'setuptools>=77.0.3,<82'
# the source; pip reads its metadata by running its setup.py, which needs torch and setuptools < 82
# (pkg_resources): the project's environment has both (make env)
.venv/bin/python -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d .whl mmcv==2.1.0
ls -la .whl
du -sh .whl
