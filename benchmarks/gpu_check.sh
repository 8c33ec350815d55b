#!/usr/bin/env bash
# The one prepared GPU check (issue 20), for a device machine of the device tool: about 8 min on
# one GPU with 16 cores. Prepare here with `bash benchmarks/gpu_wheels.sh`, then run there from
# the repository root, carrying .whl:
#     bash benchmarks/gpu_check.sh [OUT]      (OUT: where the logs go; default $OUT or gpu_check/)
# 1. installs the carried wheels (no network there) and builds mmcv 2.1.0 with its CUDA ops for
#    this GPU only (TORCH_CUDA_ARCH_LIST of the visible GPU; the longest step);
# 2. builds distill._C with its CUDA kernels in place;
# 3. runs the GPU tests: the point-sampling kernels against the reference (values, gradients),
#    the deformable convs (mmcv's kernels and ours agree), one SALT-Net, DDOD and MOD training
#    step on CUDA against the CPU step (losses 1e-3, gradients 1e-2 relative; with mmcv's and
#    with our deformable-conv kernels) and an AMP step of each (finite);
# 4. times point sampling on CUDA (ours, the reference, mmcv's DeformConv2d) and a COCO-shaped
#    GFL R101 -> R50 kd_ld_vlr step (800 x 1333 pipeline, batch 2, AMP) against its floor.
# Every step logs to OUT/<step>.log and a summary line to OUT/summary.txt; a failed step is
# recorded and the next ones still run (each has its own time limit, cut to what is left of
# GPU_CHECK_BUDGET seconds, default 570: one device call), so one run shows all. The logs are
# also packed into OUT/gpu_check_logs.tgz (the device tool brings back at most 8 files).
# GPU_CHECK_TESTS_ONLY=1: the builds and the GPU tests alone (no import check, no nvcc
# compile test, no timings): a rerun after a fix, about 6 min.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check}}
mkdir -p "$out"
summary="$out/summary.txt"
: >"$summary"
t_start=$(date +%s)
deadline=$(( t_start + ${GPU_CHECK_BUDGET:-570} ))
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}

run() {  # run <name> <time limit s> <command...>: log, time and record one step
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  local left=$(( deadline - t0 ))
  (( left < limit )) && limit=$left
  if (( limit < 5 )); then echo "$name: skipped (out of time)" | tee -a "$summary"; return 124; fi
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local code=$?
  local line="$name: exit $code in $(( $(date +%s) - t0 )) s (limit $limit s; $(( $(date +%s) - t_start )) s so far)"
  echo "$line" | tee -a "$summary"
  tail -n 25 "$out/$name.log"
  return $code
}

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no GPU visible'; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" \
  | tee -a "$summary" || { echo 'gpu_check: no GPU here; nothing to check' | tee -a "$summary"; exit 2; }
arch=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$arch} FORCE_CUDA=1

# 1. the OpenMMLab stack from the carried wheels, mmcv built here
site=/tmp/distill_site
ls .whl/*.whl >/dev/null 2>&1 || { echo 'gpu_check: no .whl/ (run benchmarks/gpu_wheels.sh here and carry .whl)' | tee -a "$summary"; exit 2; }
run install_wheels 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# mmcv 2.1.0's CUDA helper includes <THC/THCAtomics.cuh>, a shim of <ATen/cuda/Atomic.cuh> that
# newer torch builds may no longer ship: point it at the ATen header when it is missing.
src=/tmp/mmcv-src; rm -rf "$src"; mkdir -p "$src"; tar xzf .whl/mmcv-2.1.0.tar.gz -C "$src"
src=$src/mmcv-2.1.0
thc=$("$PY" -c "import os, torch.utils.cpp_extension as c; print(any(os.path.exists(os.path.join(d, 'THC/THCAtomics.cuh')) for d in c.include_paths()))")
if [ "$thc" != True ]; then
  grep -rl 'THC/THCAtomics.cuh' "$src/mmcv/ops/csrc" | xargs sed -i 's#<THC/THCAtomics.cuh>#<ATen/cuda/Atomic.cuh>#'
  echo "mmcv: torch has no THC/THCAtomics.cuh; included ATen/cuda/Atomic.cuh instead" | tee -a "$summary"
fi
run build_mmcv 330 env MMCV_WITH_OPS=1 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation \
  --no-compile --target "$site" "$src"
quick=${GPU_CHECK_TESTS_ONLY:-0}
[ "$quick" = 1 ] || run import_stack 60 "$PY" -c "import mmcv, mmcv.ops, mmdet, mmrazor, mmengine; from mmcv.ops import DeformConv2d; print(mmcv.__version__, mmdet.__version__)"

# 2. distill._C with CUDA, in place (the package is imported from the repository root)
run build_ext 240 "$PY" setup.py build_ext --inplace
[ "$quick" = 1 ] || run ext_has_cuda 60 "$PY" -c "from distill.ops.point_sample import compiled_available as c; assert c('cuda'), 'distill._C has no CUDA kernels'; print('distill._C: CUDA kernels loaded')"

# 3. the GPU tests (they skip on a CPU machine; here none may skip)
run gpu_tests 300 "$PY" -m pytest -q -rs -p no:cacheprovider tests/ops/test_point_sample_cuda.py \
  tests/ops/test_deform_conv.py tests/models/test_cuda_training_step.py -s \
  $([ "$quick" = 1 ] && echo --deselect=tests/ops/test_point_sample_cuda.py::test_cuda_source_compiles_with_nvcc)

# 4. timings
[ "$quick" = 1 ] || run point_sample_bench 150 "$PY" benchmarks/point_sample.py --device cuda --rounds 9
[ "$quick" = 1 ] || run coco_step_bench 300 "$PY" benchmarks/distill_step.py --pair coco --device cuda --amp \
  --recipe kd_ld_vlr --rounds 10 --no-memory

echo "gpu_check: done in $(( $(date +%s) - t_start )) s" | tee -a "$summary"
tar czf "$out/gpu_check_logs.tgz" -C "$out" --exclude gpu_check_logs.tgz $(cd "$out" && ls *.log 2>/dev/null) \
  && rm -f "$out"/*.log
cat "$summary"
