// Schemas of the gated operators (gated.h) and their CPU implementations.  For each NAME
// of FA_FOR_EACH_GATED:
//   NAME(Tensor x, int dim) -> Tensor
//   NAME_backward(Tensor grad, Tensor x, int dim) -> Tensor      the gradient of all of x
//   NAME_jvp(Tensor x, Tensor x_t, int dim) -> Tensor             the tangent of NAME
//   NAME_backward_backward(Tensor gg, Tensor grad, Tensor x, int dim) -> Tensor
//                         the gradient of NAME_backward with respect to x (also its tangent)
// The derivative composites and the autograd kernels are in autograd.cpp.
#include <torch/library.h>

#include "gated_ops.h"

namespace fused_act {
namespace {
// The gated operators in the table's order (Python builds its list from it).
std::vector<std::string> gated_names() {
  return {
#define FA_GATED_STR(name, F, p, second) #name,
      FA_FOR_EACH_GATED(FA_GATED_STR)
#undef FA_GATED_STR
  };
}
}  // namespace
}  // namespace fused_act

TORCH_LIBRARY_FRAGMENT(fused_act, m) {
#define FA_GATED_DEF(name, F, p, second)                                                  \
  m.def(#name "(Tensor x, int dim) -> Tensor");                                           \
  m.def(#name "_backward(Tensor grad, Tensor x, int dim) -> Tensor");                     \
  m.def(#name "_jvp(Tensor x, Tensor x_t, int dim) -> Tensor");                           \
  m.def(#name "_backward_backward(Tensor gg, Tensor grad, Tensor x, int dim) -> Tensor");
  FA_FOR_EACH_GATED(FA_GATED_DEF)
#undef FA_GATED_DEF
  m.def("gated_names() -> str[]", &fused_act::gated_names);
}

TORCH_LIBRARY_IMPL(fused_act, CPU, m) { fused_act::register_gated_impls<fused_act::CpuKernels>(m); }
