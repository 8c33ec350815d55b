// Parallel loops that hold up on busy cores. at::parallel_for (an `omp parallel` region) splits
// a loop into one fixed chunk per thread and ends at a barrier. When another process holds a
// core (dataloader workers, a second run, DDP ranks on one machine), the thread scheduled there
// runs its chunk at a fraction of the speed, or starts it a scheduler timeslice late, and the
// whole op waits for it: measured, APS's compiled path took 65 ms against 38 ms for PyTorch ops
// with one core busy (benchmarks/aps_assign.py --busy). Two remedies:
// - a loop whose whole work is small runs on the calling thread (no region, no barrier), as
//   PyTorch's own loops do below at::internal::GRAIN_SIZE elements;
// - a larger loop hands out small tasks from an atomic counter inside one region, so a slowed
//   thread takes fewer tasks instead of a fixed half. Tasks must write disjoint outputs: the
//   result then does not depend on which thread ran which task (bitwise the same on any
//   thread count and any load).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace distill {
namespace ops {

// The least work (about one scalar operation per unit) worth a parallel region; set from Python
// by distill._C.set_min_parallel_work (0: every loop longer than its grain is parallel).
inline std::atomic<int64_t>& min_parallel_work() {
  static std::atomic<int64_t> work{1 << 16};
  return work;
}

// Whether a loop of `items` items of `work_per_item` units each should run serially.
inline bool run_serially(int64_t items, int64_t grain, int64_t work_per_item) {
  return at::get_num_threads() == 1 || items <= grain || at::in_parallel_region() ||
         items * std::max<int64_t>(work_per_item, 1) < min_parallel_work().load();
}

// f(begin, end) over [0, n) in tasks of `grain` items, balanced across the threads (see above).
template <typename F>
void balanced_for(int64_t n, int64_t grain, int64_t work_per_item, const F& f) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (run_serially(n, grain, work_per_item)) {
    f(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    for (int64_t b = next.fetch_add(grain); b < n; b = next.fetch_add(grain)) {
      f(b, std::min(n, b + grain));
    }
  });
}

// at::parallel_for, serial below min_parallel_work (for loops whose tasks share per-thread
// accumulators, which a balanced loop would fill in a load-dependent order).
template <typename F>
void static_for(int64_t n, int64_t grain, int64_t work_per_item, const F& f) {
  if (n <= 0) return;
  if (run_serially(n, std::max<int64_t>(grain, 1), work_per_item)) {
    f(0, n);
    return;
  }
  at::parallel_for(0, n, grain, f);
}

}  // namespace ops
}  // namespace distill
