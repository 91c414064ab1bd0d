// Maxout: operator schemas, the CPU binding and the autograd kernels (math and mask:
// maxout.h; checks and layout: maxout_ops.h).
//
//   maxout(x, pieces, dim)             y; records a node that keeps only the mask of
//                                      maxima (maxout_forward below autograd), not x
//   maxout_backward(grad, mask, ...)   dx: linear in grad; its derivative with respect to
//                                      grad is maxout_gather, and gather's is
//                                      maxout_backward, so every order of derivative
//                                      runs the fused kernels
//   forward AD: the tangent of y is maxout_gather(x_t, mask) (amax's jvp)
// The mask is an integer tensor: it has no gradient.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "maxout_ops.h"

namespace fused_act {
namespace maxout_autograd {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using ForwardSig = at::Tensor(const at::Tensor&, int64_t, int64_t);
using ForwardMaskSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, int64_t);
using PairSig = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, int64_t);

template <class Sig> c10::TypedOperatorHandle<Sig> op_named(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}
const c10::TypedOperatorHandle<ForwardSig>& plain_op() {
  static const auto op = op_named<ForwardSig>("fused_act::maxout");
  return op;
}
const c10::TypedOperatorHandle<ForwardMaskSig>& mask_op() {
  static const auto op = op_named<ForwardMaskSig>("fused_act::maxout_forward");
  return op;
}
const c10::TypedOperatorHandle<PairSig>& backward_op() {
  static const auto op = op_named<PairSig>("fused_act::maxout_backward");
  return op;
}
const c10::TypedOperatorHandle<PairSig>& gather_op() {
  static const auto op = op_named<PairSig>("fused_act::maxout_gather");
  return op;
}

constexpr uint64_t kLevel = 0;  // torch.autograd.forward_ad has one level at a time
inline at::Tensor tangent(const at::Tensor& t) {
  return t.defined() ? t._fw_grad(kLevel) : at::Tensor();
}
inline at::Tensor primal(const at::Tensor& t) {
  return t.defined() && t._fw_grad(kLevel).defined() ? t._fw_primal(kLevel) : t;
}
inline bool records(const at::Tensor& t) {
  return at::GradMode::is_enabled() && t.requires_grad();
}
template <class Fn> auto without_forward_ad(Fn&& fn) {
  c10::AutoFwGradMode no_forward_ad(false);
  return fn();
}

// The node of maxout: runs the kernel that also writes the mask, keeps the mask (and
// hands it out through mask_out, for the tangent).
// (is_traceable: the backwards call operators only, so that compiled autograd may trace
// them into its graph rather than run them apart in eager mode.)
struct Forward : public torch::autograd::Function<Forward> {
  static constexpr bool is_traceable = true;
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t pieces,
                            int64_t dim, at::Tensor* mask_out) {
    at::Tensor y, mask;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(y, mask) = mask_op().call(x, pieces, dim);
    }
    ctx->save_for_backward({mask});
    ctx->saved_data["pieces"] = pieces;
    ctx->saved_data["dim"] = dim;
    *mask_out = mask;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor mask = ctx->get_saved_variables()[0];
    const int64_t pieces = ctx->saved_data["pieces"].toInt(), dim = ctx->saved_data["dim"].toInt();
    return {backward_op().call(grads[0], mask, pieces, dim), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

// The nodes of maxout_backward (kGather = false) and maxout_gather (true): each one's
// derivative with respect to its float argument is the other.
template <bool kGather>
struct Pair : public torch::autograd::Function<Pair<kGather>> {
  static constexpr bool is_traceable = true;
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& t, const at::Tensor& mask,
                            int64_t pieces, int64_t dim) {
    ctx->save_for_backward({mask});
    ctx->saved_data["pieces"] = pieces;
    ctx->saved_data["dim"] = dim;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return (kGather ? gather_op() : backward_op()).call(t, mask, pieces, dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor mask = ctx->get_saved_variables()[0];
    const int64_t pieces = ctx->saved_data["pieces"].toInt(), dim = ctx->saved_data["dim"].toInt();
    return {(kGather ? backward_op() : gather_op()).call(grads[0], mask, pieces, dim),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor maxout_autograd(const at::Tensor& x, int64_t pieces, int64_t dim) {
  const at::Tensor x_t = tangent(x);
  const bool need_grad = records(x);
  if (!need_grad && !x_t.defined()) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return plain_op().call(x, pieces, dim);
  }
  at::Tensor y, mask;
  if (need_grad) {
    y = without_forward_ad([&] { return Forward::apply(x, pieces, dim, &mask); });
  } else {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    std::tie(y, mask) = mask_op().call(x, pieces, dim);
  }
  if (x_t.defined()) {
    // Through the autograd kernel: a tangent that requires grad (forward-over-reverse)
    // gets a differentiable tangent.
    at::Tensor y_t = without_forward_ad([&] { return gather_op().call(x_t, mask, pieces, dim); });
    y._set_fw_grad(y_t, kLevel, /*is_inplace_op=*/false);
  }
  return y;
}

// maxout_forward itself (the Python autograd.Function's forward, under torch.func) has no
// derivative of its own: refuse a graph instead of recording a wrong one.
std::tuple<at::Tensor, at::Tensor> maxout_forward_autograd(const at::Tensor& x, int64_t pieces,
                                                           int64_t dim) {
  TORCH_CHECK(!records(x) && !tangent(x).defined(), "fused_act::maxout_forward is not "
              "differentiable; differentiate fused_act::maxout (or fused_act.functional.maxout)");
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return mask_op().call(x, pieces, dim);
}

template <bool kGather>
at::Tensor pair_autograd(const at::Tensor& t, const at::Tensor& mask, int64_t pieces,
                         int64_t dim) {
  const at::Tensor t_t = tangent(t);
  at::Tensor out = without_forward_ad([&] {
    if (!records(t)) {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      return (kGather ? gather_op() : backward_op()).call(t, mask, pieces, dim);
    }
    return Pair<kGather>::apply(t, mask, pieces, dim);
  });
  if (t_t.defined()) {  // linear in t: the tangent is the same map of t's tangent
    at::Tensor out_t = without_forward_ad(
        [&] { return pair_autograd<kGather>(t_t, primal(mask), pieces, dim); });
    out._set_fw_grad(out_t, kLevel, false);
  }
  return out;
}

}  // namespace maxout_autograd
}  // namespace fused_act

TORCH_LIBRARY_FRAGMENT(fused_act, m) {
  m.def("maxout(Tensor x, int pieces, int dim) -> Tensor");
  m.def("maxout_forward(Tensor x, int pieces, int dim) -> (Tensor, Tensor)");
  m.def("maxout_backward(Tensor grad, Tensor mask, int pieces, int dim) -> Tensor");
  m.def("maxout_gather(Tensor t, Tensor mask, int pieces, int dim) -> Tensor");
}

TORCH_LIBRARY_IMPL(fused_act, CPU, m) {
  fused_act::register_maxout_impls<fused_act::CpuMaxout>(m);
}

TORCH_LIBRARY_IMPL(fused_act, Autograd, m) {
  namespace impl = fused_act::maxout_autograd;
  m.impl("maxout", TORCH_FN(impl::maxout_autograd));
  m.impl("maxout_forward", TORCH_FN(impl::maxout_forward_autograd));
  m.impl("maxout_backward", TORCH_FN(impl::pair_autograd<false>));
  m.impl("maxout_gather", TORCH_FN(impl::pair_autograd<true>));
}
