// Operator schemas (namespace fused_act) and the CPU implementations.  For each
// activation NAME of activations.h:
//   NAME(Tensor x, float p, float q) -> Tensor        forward
//   NAME_(Tensor(a!) x, float p, float q) -> ()       forward in place
//   NAME_backward(Tensor grad, Tensor saved, float p, float q, bool saved_is_output) -> Tensor
//   NAME_double_backward(Tensor gg, Tensor grad, Tensor saved, float p, float q,
//                        bool saved_is_output) -> Tensor   (gg * grad * D'(saved))
// p and q are the activation's scalar parameters (activations.h): every operator of the
// table takes both, so one schema, one fake kernel and one Python call shape serve them
// all; the one-parameter activations ignore q (callers pass 0).
// and for the weighted ones (prelu = leaky_relu with a weight, swish_weighted):
//   prelu(Tensor x, Tensor weight) -> Tensor
//   prelu_backward(Tensor grad, Tensor x, Tensor weight, bool need_weight_grad) -> (Tensor, Tensor)
// and softmax / softmax_backward (softmax_ops.h).  The derivative composites (NAME_double_backward,
// NAME_reference / NAME_jvp of the weighted ones, softmax_jvp, softmax_backward_backward,
// softmax_backward_jvp) and the saving rule (saves_output) are in autograd.cpp.
#include <torch/library.h>

#include "ops_impl.h"
#include "softmax_ops.h"

namespace fused_act {
namespace autograd_impl {
bool saves_output(const std::string& op, double p, double q, bool inplace);  // autograd.cpp
}
namespace {

// The operators of the elementwise table, in its order (Python builds its lists from it).
std::vector<std::string> activation_names() {
  return {
#define FA_NAME_STR(name, F) #name,
      FA_FOR_EACH_ACTIVATION(FA_NAME_STR)
#undef FA_NAME_STR
  };
}

bool built_with_cuda() {
#ifdef FA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace
}  // namespace fused_act

TORCH_LIBRARY(fused_act, m) {
#define FA_DEF(name, F)                                                               \
  m.def(#name "(Tensor x, float p, float q) -> Tensor");                              \
  m.def(#name "_(Tensor(a!) x, float p, float q) -> ()");                             \
  m.def(#name "_backward(Tensor grad, Tensor saved, float p, float q, "               \
              "bool saved_is_output) -> Tensor");                                     \
  m.def(#name "_double_backward(Tensor gg, Tensor grad, Tensor saved, float p, "      \
              "float q, bool saved_is_output) -> Tensor");
  FA_FOR_EACH_ACTIVATION(FA_DEF)
#undef FA_DEF
#define FA_DEF_WEIGHTED(name, F, op)                                                   \
  m.def(#op "(Tensor x, Tensor weight) -> Tensor");                                    \
  m.def(#op "_backward(Tensor grad, Tensor x, Tensor weight, bool need_weight_grad) " \
            "-> (Tensor, Tensor)");                                                     \
  m.def(#op "_reference(Tensor x, Tensor weight) -> Tensor");                          \
  m.def(#op "_jvp(Tensor x, Tensor weight, Tensor? x_t, Tensor? weight_t) -> Tensor");
  FA_FOR_EACH_WEIGHTED(FA_DEF_WEIGHTED)
#undef FA_DEF_WEIGHTED
  m.def("built_with_cuda() -> bool", &fused_act::built_with_cuda);
  m.def("activation_names() -> str[]", &fused_act::activation_names);
  m.def("cpu_capability() -> str", &fused_act::cpu_capability);
  m.def("set_cpu_capability(str name) -> ()", &fused_act::set_cpu_capability);
  m.def("nontemporal_threshold() -> int", &fused_act::nontemporal_threshold);
  m.def("set_nontemporal_threshold(int bytes) -> ()", &fused_act::set_nontemporal_threshold);
  // Softmax (log = false) and log-softmax along dim (softmax_ops.h).
  m.def("softmax(Tensor x, int dim, bool log) -> Tensor");
  m.def("softmax_backward(Tensor grad, Tensor y, int dim, bool log) -> Tensor");
  m.def("softmax_jvp(Tensor t, Tensor y, int dim, bool log) -> Tensor");
  m.def("softmax_backward_backward(Tensor gg, Tensor grad, Tensor y, int dim, bool log) -> Tensor");
  m.def("softmax_backward_jvp(Tensor y_t, Tensor grad, Tensor y, int dim, bool log) -> Tensor");
  // Whether operator `op`'s backward reads its output (else its input), out of place or
  // in place, for parameters (p, q): the one saving rule (autograd.cpp), for Python too.
  m.def("saves_output(str op, float p, float q, bool inplace) -> bool",
        &fused_act::autograd_impl::saves_output);
}

TORCH_LIBRARY_IMPL(fused_act, CPU, m) {
  fused_act::register_device_impls<fused_act::CpuKernels>(m);
  fused_act::register_softmax_impls<fused_act::CpuKernels>(m);
}
