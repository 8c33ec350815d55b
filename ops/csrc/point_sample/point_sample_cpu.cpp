// CPU kernels of the point-set sampling op: parallel over locations (at::parallel_for), every
// inner loop over contiguous channels (channels-last), so it vectorises.
//
// The loops are compiled for AVX-512, AVX2 (+ FMA with GCC >= 12) and baseline x86-64 (GCC/Clang
// target_clones, picked at load time from the CPU), since the build cannot assume the machine's
// vector width and the tiny configs' 48 channels are too few for the baseline's 128-bit vectors
// to hide the gather; measured on the 2-core AMD EPYC (AVX-512) at (B, C, N, H, W) =
// (2, 48, 9, 32, 32): forward 1.3 -> 0.7 ms, backward 2.1 -> 1.3 ms with the clones.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../clones.h"
#include "../parallel.h"
#include "point_sample.h"

namespace distill {
namespace ops {
namespace {


// Samples of the locations [begin, end) of the flattened (B, H, W); `out` holds row `begin`.
template <typename T>
DISTILL_INLINE void forward_rows(const T* f, const T* pts, T* out, const T* zero_row, int64_t H,
                            int64_t W, int64_t C, int64_t N, int64_t begin, int64_t end) {
  const int64_t HW = H * W;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t b = i / HW, p = i % HW;
    const T x = static_cast<T>(p % W), y = static_cast<T>(p / W);
    const T* fb = f + b * HW * C;
    const T* pt = pts + i * 2 * N;
    for (int64_t n = 0; n < N; ++n) {
      const Corners<T> g = corners<T>(x + pt[2 * n], y + pt[2 * n + 1], H, W);
      // an outside neighbour reads a row of zeros (weight 0 too): no branch in the loop
      const T* s[4];
      for (int k = 0; k < 4; ++k) s[k] = g.inside[k] ? fb + g.row[k] * C : zero_row;
      const T w0 = g.w[0], w1 = g.w[1], w2 = g.w[2], w3 = g.w[3];
      const T *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
      T* dst = out + ((i - begin) * N + n) * C;
      for (int64_t c = 0; c < C; ++c) dst[c] = w0 * s0[c] + w1 * s1[c] + w2 * s2[c] + w3 * s3[c];
    }
  }
}

DISTILL_CLONES void forward_rows_mv(const float* f, const float* pts, float* out, const float* zero,
                               int64_t H, int64_t W, int64_t C, int64_t N, int64_t begin,
                               int64_t end) {
  forward_rows<float>(f, pts, out, zero, H, W, C, N, begin, end);
}

DISTILL_CLONES void forward_rows_mv(const double* f, const double* pts, double* out,
                               const double* zero, int64_t H, int64_t W, int64_t C, int64_t N,
                               int64_t begin, int64_t end) {
  forward_rows<double>(f, pts, out, zero, H, W, C, N, begin, end);
}

template <typename T>
void forward_kernel(const T* f, const T* pts, T* out, int64_t B, int64_t H, int64_t W, int64_t C,
                    int64_t N) {
  const std::vector<T> zero_row(C, T(0));
  // each location samples N points of C channels at 4 corners
  balanced_for(B * H * W, 16, 4 * N * C, [&](int64_t begin, int64_t end) {
    forward_rows_mv(f, pts, out + begin * N * C, zero_row.data(), H, W, C, N, begin, end);
  });
}

// One pass over the column gradient computes both gradients: for each sample, the 4 dot
// products <grad, F(corner)> (-> the point's gradient) and the scatter of w_k * grad into the
// feature gradient's corner rows. Locations of one image are split into `slabs`; each (image,
// slab) task scatters into its own copy of the image's feature gradient (no race, no atomics),
// and the copies are summed at the end (one copy when there are at least as many images as
// threads).
// Locations [p_begin, p_end) of image b; `gc` holds the column gradient of location p_begin;
// gfb: this task's copy of the image's feature gradient.
template <typename T>
DISTILL_INLINE void backward_rows(const T* gc, const T* fb, const T* pts, T* gfb, T* gp,
                             const T* zero_row, T* sink, int64_t b, int64_t H, int64_t W,
                             int64_t C, int64_t N, int64_t p_begin, int64_t p_end) {
  const int64_t HW = H * W;
  for (int64_t p = p_begin; p < p_end; ++p) {
    const int64_t i = b * HW + p;
    const T x = static_cast<T>(p % W), y = static_cast<T>(p / W);
    const T* pt = pts + i * 2 * N;
    for (int64_t n = 0; n < N; ++n) {
      const Corners<T> g = corners<T>(x + pt[2 * n], y + pt[2 * n + 1], H, W);
      const T* gr = gc + ((p - p_begin) * N + n) * C;
      const T* s[4];
      T* rows[4];
      for (int k = 0; k < 4; ++k) {
        s[k] = g.inside[k] ? fb + g.row[k] * C : zero_row;
        rows[k] = g.inside[k] ? gfb + g.row[k] * C : sink;
      }
      const T w0 = g.w[0], w1 = g.w[1], w2 = g.w[2], w3 = g.w[3];
      const T *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
      T *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
      T d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
      for (int64_t c = 0; c < C; ++c) {
        const T v = gr[c];
        d0 += v * s0[c];
        d1 += v * s1[c];
        d2 += v * s2[c];
        d3 += v * s3[c];
      }
      // separate loops: two corners share a row only when both are outside (the sink)
      for (int64_t c = 0; c < C; ++c) r0[c] += w0 * gr[c];
      for (int64_t c = 0; c < C; ++c) r1[c] += w1 * gr[c];
      for (int64_t c = 0; c < C; ++c) r2[c] += w2 * gr[c];
      for (int64_t c = 0; c < C; ++c) r3[c] += w3 * gr[c];
      const T d[4] = {d0, d1, d2, d3};
      point_grad(g, d, gp + i * 2 * N + 2 * n, gp + i * 2 * N + 2 * n + 1);
    }
  }
}

DISTILL_CLONES void backward_rows_mv(const float* gc, const float* fb, const float* pts, float* gfb,
                                float* gp, const float* zero, float* sink, int64_t b, int64_t H,
                                int64_t W, int64_t C, int64_t N, int64_t p0, int64_t p1) {
  backward_rows<float>(gc, fb, pts, gfb, gp, zero, sink, b, H, W, C, N, p0, p1);
}

DISTILL_CLONES void backward_rows_mv(const double* gc, const double* fb, const double* pts,
                                double* gfb, double* gp, const double* zero, double* sink,
                                int64_t b, int64_t H, int64_t W, int64_t C, int64_t N,
                                int64_t p0, int64_t p1) {
  backward_rows<double>(gc, fb, pts, gfb, gp, zero, sink, b, H, W, C, N, p0, p1);
}

// One pass over the column gradient computes both gradients: for each sample, the 4 dot
// products <grad, F(corner)> (-> the point's gradient) and the scatter of w_k * grad into the
// feature gradient's corner rows. Locations of one image are split into `slabs`; each (image,
// slab) task scatters into its own copy of the image's feature gradient (no race, no atomics),
// and the copies are summed at the end (one copy when there are at least as many images as
// threads).
template <typename T>
void backward_kernel(const T* gc, const T* f, const T* pts, T* gf_slabs, T* gp, int64_t B,
                     int64_t H, int64_t W, int64_t C, int64_t N, int64_t slabs) {
  const int64_t HW = H * W;
  const int64_t per_slab = (HW + slabs - 1) / slabs;
  const std::vector<T> zero_row(C, T(0));
  // tasks write their own slab copy and their own locations' point gradients: balanced
  balanced_for(B * slabs, 1, 8 * per_slab * N * C, [&](int64_t begin, int64_t end) {
    std::vector<T> sink(C);  // scatter target of outside neighbours (weight 0)
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / slabs, slab = t % slabs;
      const int64_t p0 = slab * per_slab, p1 = std::min(HW, p0 + per_slab);
      if (p0 >= p1) continue;
      backward_rows_mv(gc + (b * HW + p0) * N * C, f + b * HW * C, pts,
                       gf_slabs + (slab * B + b) * HW * C, gp, zero_row.data(), sink.data(), b,
                       H, W, C, N, p0, p1);
    }
  });
}

// Rows (locations) per tile of the fused op: the tile's columns take about `kb` KiB (forward:
// 1 MiB, still in cache when the GEMM reads them), and the full (B*H*W, N*C) column matrix
// (75 MB per alignment at P3 of a 512 px image, C = 256) is never allocated.
int64_t tile_rows(int64_t N, int64_t C, int64_t elem, int64_t kb, int64_t rows) {
  if (rows > 0) return rows;  // set by the caller (tests: several tiles on small inputs)
  return std::clamp<int64_t>((kb << 10) / std::max<int64_t>(1, N * C * elem), 16, 1 << 16);
}

// Tasks of the backward: (image, slab) pairs, enough for every thread, each with its own copy of
// the image's feature gradient; at most 8 slabs per image bound those copies' memory.
int64_t num_slabs(int64_t B, int64_t HW) {
  const int64_t threads = at::get_num_threads();
  return std::max<int64_t>(1, std::min<int64_t>({HW, (threads + B - 1) / B, 8}));
}

}  // namespace

int64_t check_inputs(const at::Tensor& feats, const at::Tensor& points, const char* op) {
  TORCH_CHECK(feats.dim() == 4, op, ": feats must be (B, C, H, W), got ", feats.sizes());
  TORCH_CHECK(points.dim() == 4 && points.size(1) % 2 == 0 && points.size(0) == feats.size(0) &&
                  points.size(2) == feats.size(2) && points.size(3) == feats.size(3),
              op, ": points must be (B, 2N, H, W) = (", feats.size(0), ", 2N, ", feats.size(2),
              ", ", feats.size(3), "), got ", points.sizes());
  TORCH_CHECK(feats.scalar_type() == points.scalar_type(), op,
              ": feats and points must have one dtype, got ", feats.scalar_type(), " and ",
              points.scalar_type());
  TORCH_CHECK(feats.device() == points.device(), op, ": feats on ", feats.device(),
              " but points on ", points.device());
  return points.size(1) / 2;
}

at::Tensor point_sample_cols_cpu(const at::Tensor& feats, const at::Tensor& points) {
  const int64_t N = check_inputs(feats, points, "distill::point_sample_cols");
  const int64_t B = feats.size(0), C = feats.size(1), H = feats.size(2), W = feats.size(3);
  auto out = at::empty({B, H, W, N, C}, feats.options());
  if (out.numel() == 0) return out;
  const auto f = channels_last(feats), pts = channels_last(points);
  AT_DISPATCH_FLOATING_TYPES(feats.scalar_type(), "point_sample_cols_cpu", [&] {
    forward_kernel<scalar_t>(f.data_ptr<scalar_t>(), pts.data_ptr<scalar_t>(),
                             out.data_ptr<scalar_t>(), B, H, W, C, N);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> point_sample_cols_backward_cpu(const at::Tensor& grad,
                                                                  const at::Tensor& feats,
                                                                  const at::Tensor& points) {
  const int64_t N = check_inputs(feats, points, "distill::point_sample_cols_backward");
  const int64_t B = feats.size(0), C = feats.size(1), H = feats.size(2), W = feats.size(3);
  check_grad(grad, {B, H, W, N, C}, "(B, H, W, N, C)",
             "distill::point_sample_cols_backward");
  // both gradients are produced channels-last and returned as (B, C, H, W) / (B, 2N, H, W) views
  auto gp = at::zeros({B, H, W, 2 * N}, points.options());
  if (B * H * W * N * C == 0)
    return {at::zeros_like(feats, at::MemoryFormat::ChannelsLast), gp.permute({0, 3, 1, 2})};
  const int64_t slabs = num_slabs(B, H * W);
  auto gf = at::zeros({slabs, B, H, W, C}, feats.options());
  const auto f = channels_last(feats), pts = channels_last(points), gc = grad.contiguous();
  AT_DISPATCH_FLOATING_TYPES(feats.scalar_type(), "point_sample_cols_backward_cpu", [&] {
    backward_kernel<scalar_t>(gc.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(),
                              pts.data_ptr<scalar_t>(), gf.data_ptr<scalar_t>(),
                              gp.data_ptr<scalar_t>(), B, H, W, C, N, slabs);
  });
  auto gf_sum = slabs == 1 ? gf[0] : gf.sum(0);
  return {gf_sum.permute({0, 3, 1, 2}), gp.permute({0, 3, 1, 2})};
}


void check_grad(const at::Tensor& grad, at::IntArrayRef sizes, const char* layout,
                const char* op) {
  TORCH_CHECK(grad.sizes() == sizes, op, ": grad must be ", layout, " = ", sizes, ", got ",
              grad.sizes());
}

int64_t check_kernel(const at::Tensor& feats, const at::Tensor& kernel, int64_t N,
                     const char* op) {
  TORCH_CHECK(kernel.dim() == 2 && kernel.size(0) == N * feats.size(1), op,
              ": kernel must be (N * C, C_out) = (", N * feats.size(1), ", C_out), got ",
              kernel.sizes());
  TORCH_CHECK(kernel.scalar_type() == feats.scalar_type() && kernel.device() == feats.device(),
              op, ": kernel must have the dtype and device of feats, got ", kernel.scalar_type(),
              " on ", kernel.device());
  return kernel.size(1);
}

// Fused sampling + weighted sum, tile by tile: a tile's columns (T, N*C) go into a buffer of
// this thread and out[tile] = columns @ kernel, so the column matrix is never allocated (the
// inference path; training keeps the columns for the kernel's gradient, see point_sample.py).
at::Tensor point_sample_sum_cpu(const at::Tensor& feats, const at::Tensor& points,
                                const at::Tensor& kernel, int64_t tile) {
  const char* op = "distill::point_sample_sum";
  const int64_t N = check_inputs(feats, points, op);
  const int64_t C_out = check_kernel(feats, kernel, N, op);
  const int64_t B = feats.size(0), C = feats.size(1), H = feats.size(2), W = feats.size(3);
  const int64_t R = B * H * W;
  auto out = at::empty({B, H, W, C_out}, feats.options());
  if (R * C_out == 0) return out;
  if (N * C == 0) return out.zero_();
  const auto k = kernel.detach().contiguous();
  const auto f = channels_last(feats), pts = channels_last(points);
  const int64_t T = tile_rows(N, C, feats.element_size(), 1024, tile);
  const auto out2 = out.view({R, C_out});
  AT_DISPATCH_FLOATING_TYPES(feats.scalar_type(), "point_sample_sum_cpu", [&] {
    const std::vector<scalar_t> zero_row(C, scalar_t(0));
    const scalar_t *fp = f.data_ptr<scalar_t>(), *pp = pts.data_ptr<scalar_t>();
    static_for((R + T - 1) / T, 1, T * N * C * (4 + 2 * C_out), [&](int64_t t0, int64_t t1) {
      auto cols = at::empty({T, N * C}, f.options());
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t r0 = t * T, rows = std::min(R, r0 + T) - r0;
        forward_rows_mv(fp, pp, cols.data_ptr<scalar_t>(), zero_row.data(), H, W, C, N, r0,
                        r0 + rows);
        auto dst = out2.narrow(0, r0, rows);
        at::mm_out(dst, cols.narrow(0, 0, rows), k);
      }
    });
  });
  return out;
}

// Its gradients, without the column matrix either: within each (image, slab) task (see
// backward_kernel), tile by tile, re-gather the tile's columns, grad_kernel += columns^T @
// grad[tile] (one accumulator per thread), grad_columns = grad[tile] @ kernel^T into a buffer of
// this thread, then the one-pass sampling backward on it while it is in cache.
std::tuple<at::Tensor, at::Tensor, at::Tensor> point_sample_sum_backward_cpu(
    const at::Tensor& grad, const at::Tensor& feats, const at::Tensor& points,
    const at::Tensor& kernel, int64_t tile) {
  const char* op = "distill::point_sample_sum_backward";
  const int64_t N = check_inputs(feats, points, op);
  const int64_t C_out = check_kernel(feats, kernel, N, op);
  const int64_t B = feats.size(0), C = feats.size(1), H = feats.size(2), W = feats.size(3);
  check_grad(grad, {B, H, W, C_out}, "(B, H, W, C_out)", op);
  const int64_t HW = H * W, R = B * HW;
  auto gp = at::zeros({B, H, W, 2 * N}, points.options());
  if (R * N * C * C_out == 0)
    return {at::zeros_like(feats, at::MemoryFormat::ChannelsLast), gp.permute({0, 3, 1, 2}),
            at::zeros(kernel.sizes(), kernel.options())};
  const int64_t threads = at::get_num_threads();
  const int64_t slabs = num_slabs(B, HW);
  const int64_t per_slab = (HW + slabs - 1) / slabs;
  auto gf = at::zeros({slabs, B, H, W, C}, feats.options());
  const auto f = channels_last(feats), pts = channels_last(points);
  const auto k = kernel.detach().contiguous();
  const auto g2 = grad.detach().reshape({R, C_out}).contiguous();
  // each tile adds to the whole kernel gradient: larger tiles than the forward's, fewer passes
  const int64_t T = tile_rows(N, C, feats.element_size(), 8192, tile);
  auto gk = at::zeros({threads, N * C, C_out}, feats.options());
  AT_DISPATCH_FLOATING_TYPES(feats.scalar_type(), "point_sample_sum_backward_cpu", [&] {
    const std::vector<scalar_t> zero_row(C, scalar_t(0));
    const scalar_t *fp = f.data_ptr<scalar_t>(), *pp = pts.data_ptr<scalar_t>();
    // one kernel-gradient accumulator per thread: static, so the summation order is fixed
    static_for(B * slabs, 1, per_slab * N * C * (8 + 4 * C_out), [&](int64_t t0, int64_t t1) {
      auto tile = at::empty({T, N * C}, f.options());
      auto gcols = at::empty({T, N * C}, f.options());
      auto acc = gk[at::get_thread_num()];
      std::vector<scalar_t> sink(C);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / slabs, slab = t % slabs;
        const int64_t p_end = std::min(HW, (slab + 1) * per_slab);
        for (int64_t p0 = slab * per_slab; p0 < p_end; p0 += T) {
          const int64_t rows = std::min(p_end, p0 + T) - p0, i0 = b * HW + p0;
          const auto g_tile = g2.narrow(0, i0, rows);
          forward_rows_mv(fp, pp, tile.data_ptr<scalar_t>(), zero_row.data(), H, W, C, N, i0,
                          i0 + rows);
          acc.addmm_(tile.narrow(0, 0, rows).t(), g_tile);
          auto gc_tile = gcols.narrow(0, 0, rows);
          at::mm_out(gc_tile, g_tile, k.t());
          backward_rows_mv(gcols.data_ptr<scalar_t>(), fp + b * HW * C, pp,
                           gf.data_ptr<scalar_t>() + (slab * B + b) * HW * C,
                           gp.data_ptr<scalar_t>(), zero_row.data(), sink.data(), b, H, W, C, N,
                           p0, p0 + rows);
        }
      }
    });
  });
  auto gf_sum = slabs == 1 ? gf[0] : gf.sum(0);
  return {gf_sum.permute({0, 3, 1, 2}), gp.permute({0, 3, 1, 2}), gk.sum(0)};
}

}  // namespace ops
}  // namespace distill
