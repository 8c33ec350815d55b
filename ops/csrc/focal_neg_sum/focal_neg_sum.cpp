// Each row's sigmoid focal loss with every class a negative, summed over the classes:
//   out[r] = (1 - alpha) * sum_c sigmoid(x_rc)^2 * softplus(x_rc)        (gamma = 2)
// (Lin et al., focal loss, Eq. 5 with y = 0: -log(1 - p) = softplus(x)). MOD's APS scores every
// location as a positive of every GT from this sum (distill/models/assigners/aps_assigner.py).
//
// Why a kernel: in PyTorch the sum is 5 passes (sigmoid, square, softplus, product, sum) over a
// (rows, classes) tensor with two full-size temporaries; at APS's COCO shapes (2 x 5456 x 80)
// each temporary is 3.5 MB, past glibc's mmap threshold, so every call page-faults them in
// (2.8-3.5 ms of a 6.6-8 ms assignment, measured). Here: one pass, no temporary, one exp and
// one log1p per element (sigmoid and softplus share t = exp(-|x|)), vectorised over classes.
//
// exp and log1p are Cephes' single-precision polynomials (S. L. Moshier, Cephes Math Library,
// expf.c and logf.c), written branch-free so the class loop vectorises: relative error about
// 1e-7, the sum within 1e-5 (relative) of PyTorch's (tests/ops/test_focal_neg_sum.py).
// CPU, float32, gamma = 2 only; distill/ops/focal_neg_sum.py runs the reference otherwise.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../clones.h"
#include "../parallel.h"

namespace distill {
namespace ops {
namespace {

// exp(a) for a <= 0. Below -87.3, 2^n would leave the normal range: clamped (exp(-87.3) is
// 1.2e-38, and every use here multiplies it by itself or adds it to 1).
DISTILL_INLINE float exp_nonpositive(float a) {
  a = a < -87.3f ? -87.3f : a;
  // n = round(a / ln 2) by the 1.5 * 2^23 trick (branch-free, no floor call: vectorises on
  // baseline x86-64); |a / ln 2| < 126 << 2^22, so it is exact
  const float magic = 12582912.0f;
  const float n = (a * 1.44269504088896341f + magic) - magic;
  // a - n ln 2 in two parts (Cephes' C1 + C2 = ln 2), so the reduction loses no bits
  const float r = (a - n * 0.693359375f) - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

// log1p(t) for 0 <= t <= 1: log(m) + e ln 2 with 1 + t = m 2^e, m in [sqrt(1/2), sqrt(2)).
// m - 1 is formed from t without rounding 1 + t (t itself, or (t - 1) / 2), so a small t keeps
// its full precision (log(1 + t) computed as log of the rounded sum would not).
DISTILL_INLINE float log1p_unit(float t) {
  const bool big = t > 0.41421356237f;  // 1 + t >= sqrt(2): e = 1, m = (1 + t) / 2
  const float e = big ? 1.0f : 0.0f;
  const float x = big ? (t - 1.0f) * 0.5f : t;  // m - 1, in [-0.293, 0.414]
  const float z = x * x;
  float y = 7.0376836292e-2f;
  y = y * x - 1.1514610310e-1f;
  y = y * x + 1.1676998740e-1f;
  y = y * x - 1.2420140846e-1f;
  y = y * x + 1.4249322787e-1f;
  y = y * x - 1.6668057665e-1f;
  y = y * x + 2.0000714765e-1f;
  y = y * x - 2.4999993993e-1f;
  y = y * x + 3.3333331174e-1f;
  y = y * x * z + e * -2.12194440e-4f - 0.5f * z;
  return (x + y) + e * 0.693359375f;
}

// sigmoid(x)^2 * softplus(x) from t = exp(-|x|): sigmoid = (x >= 0 ? 1 : t) / (1 + t),
// softplus = max(x, 0) + log1p(t) (both exact rewrites, stable for any x)
DISTILL_INLINE float focal_neg_term(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float t = exp_nonpositive(-ax);
  const float p = (x >= 0.0f ? 1.0f : t) / (1.0f + t);
  const float softplus = (x > 0.0f ? x : 0.0f) + log1p_unit(t);
  return p * p * softplus;
}

// The terms of n consecutive elements, then their sums per row: the term loop runs over the
// flat block (fully vectorised whatever the class count; a loop over one row's 10 classes would
// leave AVX-512 lanes idle), the row sums read the block back from L1.
DISTILL_INLINE void terms(const float* x, float* buf, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) buf[i] = focal_neg_term(x[i]);
}

DISTILL_INLINE float sum(const float* buf, int64_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += buf[i];
  return acc;
}

constexpr int64_t kBlock = 4096;  // elements per block: 16 KB of terms, in L1

DISTILL_CLONES void rows_kernel(const float* x, float* out, int64_t classes, float scale,
                                int64_t begin, int64_t end) {
  float buf[kBlock];
  if (classes <= kBlock) {
    const int64_t per_block = kBlock / classes;
    for (int64_t r0 = begin; r0 < end; r0 += per_block) {
      const int64_t r1 = std::min(end, r0 + per_block);
      terms(x + r0 * classes, buf, (r1 - r0) * classes);
      for (int64_t r = r0; r < r1; ++r) out[r] = sum(buf + (r - r0) * classes, classes) * scale;
    }
    return;
  }
  for (int64_t r = begin; r < end; ++r) {  // a row longer than a block: in pieces
    float acc = 0.0f;
    for (int64_t c0 = 0; c0 < classes; c0 += kBlock) {
      const int64_t n = std::min(kBlock, classes - c0);
      terms(x + r * classes + c0, buf, n);
      acc += sum(buf, n);
    }
    out[r] = acc * scale;
  }
}

at::Tensor focal_neg_sum_cpu(const at::Tensor& logits, double gamma, double alpha) {
  TORCH_CHECK(logits.dim() == 2, "focal_neg_sum: logits must be (rows, classes), got ",
              logits.sizes());
  TORCH_CHECK(logits.scalar_type() == at::kFloat, "focal_neg_sum: float32 only, got ",
              logits.scalar_type());
  TORCH_CHECK(gamma == 2.0, "focal_neg_sum: the kernel computes gamma = 2 only, got ", gamma);
  const at::Tensor x = logits.contiguous();
  const int64_t rows = x.size(0), classes = x.size(1);
  if (classes == 0) return at::zeros({rows}, x.options());  // an empty sum
  at::Tensor out = at::empty({rows}, x.options());
  const float* px = x.data_ptr<float>();
  float* po = out.data_ptr<float>();
  const float scale = static_cast<float>(1.0 - alpha);
  // about 4k elements per task: enough work to pay for a thread's start
  const int64_t grain = std::max<int64_t>(1, kBlock / std::max<int64_t>(classes, 1));
  // about 20 operations per element (the exp and log1p polynomials)
  balanced_for(rows, grain, 20 * classes, [&](int64_t begin, int64_t end) {
    rows_kernel(px, po, classes, scale, begin, end);
  });
  return out;
}

}  // namespace
}  // namespace ops
}  // namespace distill

TORCH_LIBRARY_FRAGMENT(distill, m) {
  m.def("focal_neg_sum(Tensor logits, float gamma, float alpha) -> Tensor");
}

TORCH_LIBRARY_IMPL(distill, CPU, m) {
  m.impl("focal_neg_sum", &distill::ops::focal_neg_sum_cpu);
}
