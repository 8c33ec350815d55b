// The op schema (torch library "distill") and its CPU kernels; point_sample_cuda.cu adds the
// CUDA kernels when built with WITH_CUDA. Autograd and the fake (meta) implementation that
// torch.compile traces are registered from Python (distill/ops/point_sample.py).
#include <torch/library.h>

#include "point_sample.h"

TORCH_LIBRARY(distill, m) {
  m.def("point_sample_cols(Tensor feats, Tensor points) -> Tensor");
  m.def("point_sample_cols_backward(Tensor grad, Tensor feats, Tensor points) -> (Tensor, Tensor)");
  // fused with the per-point weighted sum: kernel (N * C, C_out), rows ordered (n, c) as the
  // columns -> out (B, H, W, C_out), without materialising the columns
  // (tile: rows per tile on CPU, 0 = automatic; the CUDA kernels do not tile)
  m.def("point_sample_sum(Tensor feats, Tensor points, Tensor kernel, int tile=0) -> Tensor");
  m.def(
      "point_sample_sum_backward(Tensor grad, Tensor feats, Tensor points, Tensor kernel, "
      "int tile=0) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(distill, CPU, m) {
  m.impl("point_sample_cols", &distill::ops::point_sample_cols_cpu);
  m.impl("point_sample_cols_backward", &distill::ops::point_sample_cols_backward_cpu);
  m.impl("point_sample_sum", &distill::ops::point_sample_sum_cpu);
  m.impl("point_sample_sum_backward", &distill::ops::point_sample_sum_backward_cpu);
}
