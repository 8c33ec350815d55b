#!/usr/bin/env bash
# Create or refresh the project virtual environment (.venv by default).
#
# Idempotent: `make` calls this only when the stamp file is older than the files that
# define the environment; a second call installs nothing. The pins and the mmcv build
# flags follow the verified recipe (README "The stack").
set -euo pipefail

VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

t0=$(date +%s)
step() { echo "[setup_env] $(date +%H:%M:%S) $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip "$@"; }

# Every pip call runs under these pins: torch 2.13.0 because any unpinned request would pull a
# multi-GB CUDA build; setuptools 77-81 because torch 2.13 requires >=77.0.3 while mmcv 2.1.0's
# setup.py imports pkg_resources, which setuptools 82 removed (81 is the last release with it).
CONSTRAINT=$(mktemp)
printf 'torch==2.13.0\nsetuptools>=77.0.3,<82\n' >"$CONSTRAINT"

step "build tools and torch 2.13.0"
pip install -q -c "$CONSTRAINT" setuptools wheel ninja torch==2.13.0 numpy

step "mmengine 0.10.7 and pure-Python dependencies"
pip install -q -c "$CONSTRAINT" mmengine==0.10.7 opencv-python-headless pycocotools \
  scikit-learn scikit-image matplotlib scipy shapely terminaltables tqdm joblib ordered_set \
  pytest ruff

# mmcv 2.1.0 = the "full" build (mmcv._ext with compiled ops). No build isolation: an isolated
# build environment would download the newest CUDA torch. pip caches the built wheel, so a
# second install on the same machine takes seconds; a fresh machine compiles (~9 min, 2 cores).
if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  step "mmcv 2.1.0 with ops (a fresh machine compiles it: ~9 min on 2 cores)"
  FORCE_CUDA_FLAG=0
  if command -v nvcc >/dev/null 2>&1 && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    FORCE_CUDA_FLAG=1
  fi
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} FORCE_CUDA=$FORCE_CUDA_FLAG \
    pip install --no-build-isolation -c "$CONSTRAINT" mmcv==2.1.0
fi

# mmdet/mmrazor with --no-deps would skip real requirements; -c keeps torch and mmcv pinned.
step "mmdet 3.3.0, mmrazor 1.0.0"
echo "mmcv==2.1.0" >>"$CONSTRAINT"
pip install -q -c "$CONSTRAINT" mmdet==3.3.0 mmrazor==1.0.0

# The 'trees' dataset reads the aerial images inside the deepforest wheel (never imports it):
# --no-deps, since its requirements include torchvision, which has no CPU build here.
step "deepforest 2.1.0 data files (--no-deps)"
pip install -q --no-deps deepforest==2.1.0

step "the project (editable; builds distill._C when ops/csrc exists)"
pip install -q --no-build-isolation -c "$CONSTRAINT" -e .

rm -f "$CONSTRAINT"
"$VENV/bin/python" - <<'PY'
import torch, mmengine, mmcv, mmdet
import mmcv.ops  # noqa: F401  (the full build)
import distill  # noqa: F401  (applies distill.compat before mmrazor)
import mmrazor
print(f"[setup_env] torch {torch.__version__} mmengine {mmengine.__version__} mmcv {mmcv.__version__} "
      f"mmdet {mmdet.__version__} mmrazor {mmrazor.__version__}")
PY
step "done in $(( $(date +%s) - t0 )) s"
