// Bilinear point-set sampling (SALT-Net Eq. 7-8): shared declarations and the corner geometry.
//
// Layout (channels-last, see distill/ops/point_sample.py for why):
//   feats  (B, C, H, W), read as (B, H, W, C): each sample gathers 4 contiguous C-vectors;
//   points (B, 2N, H, W), (dx_i, dy_i) at channels (2i, 2i + 1), pixels relative to (x, y);
//   cols   (B, H, W, N, C): the N sampled vectors of each location, contiguous, so the
//          per-point weighted sum of the alignment is one GEMM (B*H*W, N*C) x (N*C, C_out).
// Zero padding outside the map; pixel i samples pixel i exactly (grid_sample with
// align_corners=False, which the pure-PyTorch reference uses).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define PS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PS_HOST_DEVICE inline
#endif

namespace distill {
namespace ops {

// The 4 bilinear neighbours of (px, py): row offsets (y * W + x) into the map, weights (zero for
// a neighbour outside the map, so it contributes nothing and receives no gradient) and the
// fractional parts used by the gradient with respect to the point.
template <typename T>
struct Corners {
  int64_t row[4];
  T w[4];
  bool inside[4];
  T lx, ly;
};

PS_HOST_DEVICE float ps_floor(float v) { return floorf(v); }
PS_HOST_DEVICE double ps_floor(double v) { return floor(v); }

template <typename T>
PS_HOST_DEVICE Corners<T> corners(T px, T py, int64_t H, int64_t W) {
  Corners<T> g;
  g.lx = T(0);
  g.ly = T(0);
  for (int k = 0; k < 4; ++k) {
    g.row[k] = 0;
    g.w[k] = T(0);
    g.inside[k] = false;
  }
  // Also false for NaN. Beyond [-1, W] every neighbour is outside (and floor() of a huge value
  // would overflow the integer cast), so the sample is 0 with a zero gradient.
  if (!(px >= T(-1) && px <= T(W) && py >= T(-1) && py <= T(H))) return g;
  const T fx = ps_floor(px), fy = ps_floor(py);
  const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  g.lx = px - fx;
  g.ly = py - fy;
  const int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1};
  const int64_t ys[4] = {y0, y0, y0 + 1, y0 + 1};
  const T ws[4] = {(T(1) - g.lx) * (T(1) - g.ly), g.lx * (T(1) - g.ly), (T(1) - g.lx) * g.ly,
                   g.lx * g.ly};
  for (int k = 0; k < 4; ++k) {
    g.inside[k] = xs[k] >= 0 && xs[k] < W && ys[k] >= 0 && ys[k] < H;
    g.row[k] = g.inside[k] ? ys[k] * W + xs[k] : 0;
    g.w[k] = g.inside[k] ? ws[k] : T(0);
  }
  return g;
}

// d(sample . grad)/d(px, py) from the 4 dot products d_k = <grad, F(corner k)> (0 outside):
// the derivative of the bilinear weights (1 - lx)(1 - ly), lx (1 - ly), (1 - lx) ly, lx ly.
template <typename T>
PS_HOST_DEVICE void point_grad(const Corners<T>& g, const T d[4], T* gx, T* gy) {
  *gx = (T(1) - g.ly) * (d[1] - d[0]) + g.ly * (d[3] - d[2]);
  *gy = (T(1) - g.lx) * (d[2] - d[0]) + g.lx * (d[3] - d[1]);
}

// Checks shared by every device: shapes, dtypes, devices. Returns N.
int64_t check_inputs(const at::Tensor& feats, const at::Tensor& points, const char* op);

// The gradient of an op's output must have its shape: `layout` names it in the error.
void check_grad(const at::Tensor& grad, at::IntArrayRef sizes, const char* layout,
                const char* op);

// Channels-last contiguous copy of a (B, C, H, W) tensor: (B, H, W, C).
inline at::Tensor channels_last(const at::Tensor& t) {
  return t.permute({0, 2, 3, 1}).contiguous();
}

// kernel (N * C, C_out), rows ordered (n, c); returns C_out.
int64_t check_kernel(const at::Tensor& feats, const at::Tensor& kernel, int64_t N,
                     const char* op);

at::Tensor point_sample_cols_cpu(const at::Tensor& feats, const at::Tensor& points);
std::tuple<at::Tensor, at::Tensor> point_sample_cols_backward_cpu(const at::Tensor& grad,
                                                                  const at::Tensor& feats,
                                                                  const at::Tensor& points);

// tile: rows per tile, 0 = sized by the kernel (about 1 MiB of columns forward, 8 MiB backward)
at::Tensor point_sample_sum_cpu(const at::Tensor& feats, const at::Tensor& points,
                                const at::Tensor& kernel, int64_t tile);
std::tuple<at::Tensor, at::Tensor, at::Tensor> point_sample_sum_backward_cpu(
    const at::Tensor& grad, const at::Tensor& feats, const at::Tensor& points,
    const at::Tensor& kernel, int64_t tile);

}  // namespace ops
}  // namespace distill
