// The Python module distill._C: importing it registers every op of ops/csrc with the torch
// dispatcher (TORCH_LIBRARY blocks); it also says which devices the build covers.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <mutex>
#include <set>

#include "parallel.h"

// How many threads one at::parallel_for over n items (grain 1) ran on. at::parallel_for is an
// inline `omp parallel` region (ATen/ParallelOpenMP.h): an extension compiled without -fopenmp
// runs every such loop on one thread, silently (tests/ops/test_extension.py).
int64_t parallel_threads(int64_t n) {
  std::mutex lock;
  std::set<int> seen;
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> guard(lock);
    seen.insert(at::get_thread_num());
  });
  return static_cast<int64_t>(seen.size());
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "distill's compiled ops (torch.ops.distill.*)";
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("parallel_threads", &parallel_threads,
        "Threads one at::parallel_for over n items ran on (1 without OpenMP)");
  m.def(
      "set_min_parallel_work",
      [](int64_t work) { return distill::ops::min_parallel_work().exchange(work); },
      "Set the least work of a parallel CPU loop (ops/csrc/parallel.h); returns the previous");
}
