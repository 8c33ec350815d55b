// CUDA kernels of the point-set sampling op (channels-last, see point_sample.h).
//
// Forward: one thread per output element (location, point, channel); consecutive threads read
// consecutive channels of the same 4 corner rows, so the loads and the store are coalesced.
// Backward: the feature gradient scatters w_k * grad into the corner rows with atomicAdd (into a
// float buffer for half inputs, then cast); the point gradient gives one warp per sample, which
// reduces the 4 dot products <grad, F(corner)> over channels with warp shuffles.
#include <ATen/AccumulateType.h>
#include <ATen/Context.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/detail/KernelUtils.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "point_sample.h"

namespace distill {
namespace ops {
namespace {

constexpr int kThreads = 256;

int64_t blocks_for(int64_t work) {
  return std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, 1 << 20));
}


// The corners of point n of location p (its index i over the flattened (B, H, W)); pts is
// channels-last (B, H, W, 2N). The geometry is computed in acc_t (float for half inputs).
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ Corners<acc_t> sample_corners(const scalar_t* pts, int64_t i,
                                                         int64_t p, int64_t n, int64_t H,
                                                         int64_t W, int64_t N) {
  const acc_t px = static_cast<acc_t>(p % W) + static_cast<acc_t>(pts[i * 2 * N + 2 * n]);
  const acc_t py = static_cast<acc_t>(p / W) + static_cast<acc_t>(pts[i * 2 * N + 2 * n + 1]);
  return corners<acc_t>(px, py, H, W);
}

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ f, const scalar_t* __restrict__ pts,
                               scalar_t* __restrict__ out, int64_t total, int64_t H, int64_t W,
                               int64_t C, int64_t N) {
  const int64_t HW = H * W;
  CUDA_KERNEL_LOOP_TYPE(idx, total, int64_t) {
    const int64_t c = idx % C, r = idx / C, n = r % N, i = r / N;
    const int64_t b = i / HW, p = i % HW;
    const Corners<acc_t> g = sample_corners<acc_t>(pts, i, p, n, H, W, N);
    const scalar_t* fb = f + b * HW * C + c;
    acc_t v = 0;
    for (int k = 0; k < 4; ++k)
      if (g.inside[k]) v += g.w[k] * static_cast<acc_t>(fb[g.row[k] * C]);
    out[idx] = static_cast<scalar_t>(v);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void feats_grad_kernel(const scalar_t* __restrict__ gc,
                                  const scalar_t* __restrict__ pts, acc_t* __restrict__ gf,
                                  int64_t total, int64_t H, int64_t W, int64_t C, int64_t N) {
  const int64_t HW = H * W;
  CUDA_KERNEL_LOOP_TYPE(idx, total, int64_t) {
    const int64_t c = idx % C, r = idx / C, n = r % N, i = r / N;
    const int64_t b = i / HW, p = i % HW;
    const Corners<acc_t> g = sample_corners<acc_t>(pts, i, p, n, H, W, N);
    const acc_t v = static_cast<acc_t>(gc[idx]);
    acc_t* gfb = gf + b * HW * C + c;
    for (int k = 0; k < 4; ++k)
      if (g.inside[k]) gpuAtomicAdd(gfb + g.row[k] * C, g.w[k] * v);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void points_grad_kernel(const scalar_t* __restrict__ gc,
                                   const scalar_t* __restrict__ f,
                                   const scalar_t* __restrict__ pts, scalar_t* __restrict__ gp,
                                   int64_t samples, int64_t H, int64_t W, int64_t C, int64_t N) {
  const int64_t HW = H * W;
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(blockDim.x) * gridDim.x / 32;
  for (int64_t s = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
       s < samples; s += warps) {
    const int64_t n = s % N, i = s / N, b = i / HW, p = i % HW;
    const Corners<acc_t> g = sample_corners<acc_t>(pts, i, p, n, H, W, N);
    const scalar_t* gr = gc + s * C;
    const scalar_t* fb = f + b * HW * C;
    acc_t d[4] = {0, 0, 0, 0};
    for (int64_t c = lane; c < C; c += 32) {
      const acc_t v = static_cast<acc_t>(gr[c]);
      for (int k = 0; k < 4; ++k)
        if (g.inside[k]) d[k] += v * static_cast<acc_t>(fb[g.row[k] * C + c]);
    }
    for (int k = 0; k < 4; ++k)
      for (int offset = 16; offset > 0; offset /= 2)
        d[k] += __shfl_down_sync(0xffffffff, d[k], offset);
    if (lane == 0) {
      acc_t gx, gy;
      point_grad(g, d, &gx, &gy);
      gp[i * 2 * N + 2 * n] = static_cast<scalar_t>(gx);
      gp[i * 2 * N + 2 * n + 1] = static_cast<scalar_t>(gy);
    }
  }
}

at::Tensor point_sample_cols_cuda(const at::Tensor& feats, const at::Tensor& points) {
  const int64_t N = check_inputs(feats, points, "distill::point_sample_cols");
  const c10::cuda::CUDAGuard guard(feats.device());
  const int64_t B = feats.size(0), C = feats.size(1), H = feats.size(2), W = feats.size(3);
  auto out = at::empty({B, H, W, N, C}, feats.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const auto f = channels_last(feats), pts = channels_last(points);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(feats.scalar_type(), "point_sample_cols_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    forward_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
        f.data_ptr<scalar_t>(), pts.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), total, H, W,
        C, N);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor> point_sample_cols_backward_cuda(const at::Tensor& grad,
                                                                   const at::Tensor& feats,
                                                                   const at::Tensor& points) {
  const int64_t N = check_inputs(feats, points, "distill::point_sample_cols_backward");
  const c10::cuda::CUDAGuard guard(feats.device());
  const int64_t B = feats.size(0), C = feats.size(1), H = feats.size(2), W = feats.size(3);
  check_grad(grad, {B, H, W, N, C}, "(B, H, W, N, C)",
             "distill::point_sample_cols_backward");
  // atomicAdd: the order of the feature gradient's additions varies from run to run
  at::globalContext().alertNotDeterministic("distill::point_sample_cols_backward (CUDA)");
  auto gp = at::zeros({B, H, W, 2 * N}, points.options());
  const int64_t total = grad.numel();
  if (total == 0)
    return {at::zeros_like(feats, at::MemoryFormat::ChannelsLast), gp.permute({0, 3, 1, 2})};
  const auto f = channels_last(feats), pts = channels_last(points), gc = grad.contiguous();
  const auto acc_dtype = at::toAccumulateType(feats.scalar_type(), /*is_cuda=*/true);
  auto gf = at::zeros({B, H, W, C}, feats.options().dtype(acc_dtype));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t samples = B * H * W * N;
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(feats.scalar_type(), "point_sample_cols_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    feats_grad_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
        gc.data_ptr<scalar_t>(), pts.data_ptr<scalar_t>(), gf.data_ptr<acc_t>(), total, H, W, C,
        N);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    points_grad_kernel<scalar_t, acc_t><<<blocks_for(samples * 32), kThreads, 0, stream>>>(
        gc.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), pts.data_ptr<scalar_t>(),
        gp.data_ptr<scalar_t>(), samples, H, W, C, N);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gf.to(feats.scalar_type()).permute({0, 3, 1, 2}), gp.permute({0, 3, 1, 2})};
}

// The fused weighted sum on CUDA: the columns, then one cuBLAS GEMM (the columns are
// materialised: GPU memory bandwidth makes the tiling of the CPU kernel unnecessary here).
at::Tensor point_sample_sum_cuda(const at::Tensor& feats, const at::Tensor& points,
                                 const at::Tensor& kernel, int64_t /*tile*/) {
  const int64_t N = check_inputs(feats, points, "distill::point_sample_sum");
  const int64_t C_out = check_kernel(feats, kernel, N, "distill::point_sample_sum");
  const int64_t B = feats.size(0), C = feats.size(1), H = feats.size(2), W = feats.size(3);
  const auto cols = point_sample_cols_cuda(feats, points).view({B * H * W, N * C});
  return at::mm(cols, kernel.detach()).view({B, H, W, C_out});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> point_sample_sum_backward_cuda(
    const at::Tensor& grad, const at::Tensor& feats, const at::Tensor& points,
    const at::Tensor& kernel, int64_t /*tile*/) {
  const char* op = "distill::point_sample_sum_backward";
  const int64_t N = check_inputs(feats, points, op);
  const int64_t C_out = check_kernel(feats, kernel, N, op);
  const int64_t B = feats.size(0), C = feats.size(1), H = feats.size(2), W = feats.size(3);
  check_grad(grad, {B, H, W, C_out}, "(B, H, W, C_out)", op);
  const auto g2 = grad.detach().reshape({B * H * W, C_out});
  const auto cols = point_sample_cols_cuda(feats, points).view({B * H * W, N * C});
  const auto gcols = at::mm(g2, kernel.detach().t()).view({B, H, W, N, C});
  auto [gf, gp] = point_sample_cols_backward_cuda(gcols, feats, points);
  return {gf, gp, at::mm(cols.t(), g2)};
}

}  // namespace
}  // namespace ops
}  // namespace distill

TORCH_LIBRARY_IMPL(distill, CUDA, m) {
  m.impl("point_sample_cols", &distill::ops::point_sample_cols_cuda);
  m.impl("point_sample_cols_backward", &distill::ops::point_sample_cols_backward_cuda);
  m.impl("point_sample_sum", &distill::ops::point_sample_sum_cuda);
  m.impl("point_sample_sum_backward", &distill::ops::point_sample_sum_backward_cuda);
}
