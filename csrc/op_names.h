// Operator names and typed dispatcher handles, shared by the operator layer (ops_impl.h),
// the C++ autograd kernels (autograd.cpp) and the Python fast paths (python_module.cpp).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <string>
#include <tuple>

#include "activations.h"

namespace fused_act {

// The operator name of an elementwise activation ("relu", ...).
inline const char* act_name(Act act) {
  switch (act) {
#define FA_NAME(name, F) \
  case Act::name: return #name;
    FA_FOR_EACH_ACTIVATION(FA_NAME)
#undef FA_NAME
  }
  return "?";
}

// Names of the weighted operators, as template arguments (kWeightedName_prelu, ...).
#define FA_WEIGHTED_NAME(name, F, op) inline constexpr char kWeightedName_##op[] = #op;
FA_FOR_EACH_WEIGHTED(FA_WEIGHTED_NAME)
#undef FA_WEIGHTED_NAME

// Signatures of the operators' schemas (ops.cpp).
namespace sig {
using Forward = at::Tensor(const at::Tensor&, double, double);
using Inplace = void(const at::Tensor&, double, double);
using Backward = at::Tensor(const at::Tensor&, const at::Tensor&, double, double, bool);
using Weighted = at::Tensor(const at::Tensor&, const at::Tensor&);
using WeightedBackward = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&,
                                                            const at::Tensor&,
                                                            const at::Tensor&, bool);
using Softmax = at::Tensor(const at::Tensor&, int64_t, bool);
using SoftmaxBackward = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool);
}  // namespace sig

// The typed handle of operator fused_act::<name> (look it up once, keep it in a static).
template <class Sig> c10::TypedOperatorHandle<Sig> find_op(const std::string& name) {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow(("fused_act::" + name).c_str(), "")
      .template typed<Sig>();
}

}  // namespace fused_act
