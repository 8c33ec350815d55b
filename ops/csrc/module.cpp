// The Python module distill._C: importing it registers every op of ops/csrc with the torch
// dispatcher (TORCH_LIBRARY blocks); it also says which devices the build covers.
#include <torch/extension.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "distill's compiled ops (torch.ops.distill.*)";
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
