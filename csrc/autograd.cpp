// Autograd kernels of the out-of-place operators, in C++ so that a call from Python costs
// what a call of a torch operator costs (no Python autograd.Function in between):
//   NAME(x, p)                              saves y or x (as activations.h says), and
//   NAME_backward(grad, saved, p, o)        is itself differentiable (double backward);
//   softmax(x, dim, log) / softmax_backward the same for the row-wise softmax.
// Each forward calls the device kernel below the autograd layer; each backward calls the
// backward operator through the dispatcher, so a graph of the gradient (create_graph)
// records it with its own autograd kernel.  The derivative of a backward with respect to
// its gradient argument is the same backward (it is linear in the gradient); with respect
// to the saved tensor it is grad * D'(saved), written with ATen operators.
// The weighted operators (prelu, swish_weighted) save x and the weight; their backward
// operator gives dx and the weight gradient, and when a graph of the gradient is wanted
// (create_graph) the gradients come from differentiating their composite formula instead.
// In-place operators get their autograd in Python (fused_act/autograd.py).
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <string>

#include "op_names.h"

namespace fused_act {
namespace autograd_impl {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What each activation's backward reads, and D'(saved) where dx = grad * D(saved).
template <Act A> struct Rule;
template <> struct Rule<Act::relu> {
  static bool saves_output(double) { return true; }
  static at::Tensor d2(const at::Tensor&, double, bool) { return {}; }
};
template <> struct Rule<Act::relu6> {
  static bool saves_output(double) { return true; }
  static at::Tensor d2(const at::Tensor&, double, bool) { return {}; }
};
template <> struct Rule<Act::leaky_relu> {
  static bool saves_output(double slope) { return slope >= 0; }
  static at::Tensor d2(const at::Tensor&, double, bool) { return {}; }
};
template <> struct Rule<Act::elu> {
  static bool saves_output(double alpha) { return alpha >= 0; }
  static at::Tensor d2(const at::Tensor& s, double alpha, bool from_output) {
    if (from_output) return (s <= 0).to(s.scalar_type());  // D(y) = y + alpha for y <= 0
    return at::where(s <= 0, at::exp(s) * alpha, at::zeros_like(s));
  }
};
template <> struct Rule<Act::sigmoid> {
  static bool saves_output(double) { return true; }
  static at::Tensor d2(const at::Tensor& y, double, bool) { return 1 - 2 * y; }
};
template <> struct Rule<Act::tanh> {
  static bool saves_output(double) { return true; }
  static at::Tensor d2(const at::Tensor& y, double, bool) { return -2 * y; }
};
template <> struct Rule<Act::swish> {
  static bool saves_output(double) { return false; }
  static at::Tensor d2(const at::Tensor& x, double beta, bool) {
    at::Tensor s = at::sigmoid(x * beta);
    return beta * s * (1 - s) * (2 + beta * x * (1 - 2 * s));
  }
};

template <Act A> const c10::TypedOperatorHandle<sig::Forward>& forward_op() {
  static const auto op = find_op<sig::Forward>(act_name(A));
  return op;
}
template <Act A> const c10::TypedOperatorHandle<sig::Backward>& backward_op() {
  static const auto op = find_op<sig::Backward>(std::string(act_name(A)) + "_backward");
  return op;
}

// Self: the named node type below (its name is what grad_fn.name() shows).
template <Act A, class Self>
struct BackwardFunction : public torch::autograd::Function<Self> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad,
                            const at::Tensor& saved, double p, bool from_output) {
    ctx->save_for_backward({grad, saved});
    ctx->saved_data["p"] = p;
    ctx->saved_data["from_output"] = from_output;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return backward_op<A>().call(grad, saved, p, from_output);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const double p = ctx->saved_data["p"].toDouble();
    const bool from_output = ctx->saved_data["from_output"].toBool();
    const at::Tensor& gg = grads[0];
    at::Tensor d_grad, d_saved;
    if (ctx->needs_input_grad(0)) d_grad = backward_op<A>().call(gg, saved[1], p, from_output);
    if (ctx->needs_input_grad(1)) {
      at::Tensor d2 = Rule<A>::d2(saved[1], p, from_output);
      if (d2.defined()) d_saved = gg * saved[0] * d2;
    }
    return {d_grad, d_saved, at::Tensor(), at::Tensor()};
  }
};

template <Act A, class Self>
struct ForwardFunction : public torch::autograd::Function<Self> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, double p) {
    const bool from_output = Rule<A>::saves_output(p);
    at::Tensor y;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      y = forward_op<A>().call(x, p);
    }
    ctx->save_for_backward({from_output ? y : x});
    ctx->saved_data["p"] = p;
    ctx->saved_data["from_output"] = from_output;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const double p = ctx->saved_data["p"].toDouble();
    const bool from_output = ctx->saved_data["from_output"].toBool();
    return {backward_op<A>().call(grads[0], saved[0], p, from_output), at::Tensor()};
  }
};

// ---- softmax / log_softmax: the backward saves only the output y -------------------
//   softmax:     dx = y * (g - sum(g * y));  d/dg: the same map on gg;
//                d/dy = gg * (g - sum(g * y)) - g * sum(gg * y)
//   log_softmax: dx = g - exp(y) * sum(g);   d/dg = gg - sum(gg * exp(y));
//                d/dy = -gg * exp(y) * sum(g)
const c10::TypedOperatorHandle<sig::Softmax>& softmax_op() {
  static const auto op = find_op<sig::Softmax>("softmax");
  return op;
}
const c10::TypedOperatorHandle<sig::SoftmaxBackward>& softmax_backward_op() {
  static const auto op = find_op<sig::SoftmaxBackward>("softmax_backward");
  return op;
}

template <class Self>
struct SoftmaxBackwardFunction : public torch::autograd::Function<Self> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& y,
                            int64_t dim, bool log) {
    ctx->save_for_backward({grad, y});
    ctx->saved_data["dim"] = dim;
    ctx->saved_data["log"] = log;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return softmax_backward_op().call(grad, y, dim, log);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &grad = saved[0], &y = saved[1], &gg = grads[0];
    const int64_t dim = ctx->saved_data["dim"].toInt();
    const bool log = ctx->saved_data["log"].toBool();
    at::Tensor d_grad, d_y;
    if (log) {
      at::Tensor p = at::exp(y);
      if (ctx->needs_input_grad(0)) d_grad = gg - (gg * p).sum(dim, /*keepdim=*/true);
      if (ctx->needs_input_grad(1)) d_y = -gg * p * grad.sum(dim, /*keepdim=*/true);
    } else {
      if (ctx->needs_input_grad(0)) d_grad = softmax_backward_op().call(gg, y, dim, false);
      if (ctx->needs_input_grad(1))
        d_y = gg * (grad - (grad * y).sum(dim, /*keepdim=*/true)) -
              grad * (gg * y).sum(dim, /*keepdim=*/true);
    }
    return {d_grad, d_y, at::Tensor(), at::Tensor()};
  }
};

template <class Self>
struct SoftmaxFunction : public torch::autograd::Function<Self> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t dim, bool log) {
    at::Tensor y;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      y = softmax_op().call(x, dim, log);
    }
    ctx->save_for_backward({y});
    ctx->saved_data["dim"] = dim;
    ctx->saved_data["log"] = log;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    return {softmax_backward_op().call(grads[0], saved[0], ctx->saved_data["dim"].toInt(),
                                       ctx->saved_data["log"].toBool()),
            at::Tensor(), at::Tensor()};
  }
};

// ---- prelu / swish_weighted: one weight, or one per channel along dim 1 ------------
// The weight shaped to broadcast against x: a scalar, or [1, C, 1, ...].
at::Tensor broadcast_weight(const at::Tensor& w, const at::Tensor& x) {
  if (w.numel() == 1 || x.dim() < 2) return w.reshape({});
  std::vector<int64_t> shape(x.dim(), 1);
  shape[1] = w.numel();
  return w.reshape(shape);
}

// The composite formulas, differentiable in both arguments (wb already broadcast).
template <Act A> at::Tensor weighted_reference(const at::Tensor& x, const at::Tensor& wb);
template <> at::Tensor weighted_reference<Act::leaky_relu>(const at::Tensor& x,
                                                           const at::Tensor& wb) {
  return at::where(x > 0, x, wb * x);
}
template <> at::Tensor weighted_reference<Act::swish>(const at::Tensor& x, const at::Tensor& wb) {
  return x * at::sigmoid(wb * x);
}

template <Act A, const char* kOp, class Self>
struct WeightedFunction : public torch::autograd::Function<Self> {
  static const c10::TypedOperatorHandle<sig::Weighted>& forward_handle() {
    static const auto op = find_op<sig::Weighted>(kOp);
    return op;
  }
  static const c10::TypedOperatorHandle<sig::WeightedBackward>& backward_handle() {
    static const auto op = find_op<sig::WeightedBackward>(std::string(kOp) + "_backward");
    return op;
  }

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    at::Tensor y;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      y = forward_handle().call(x, w);
    }
    ctx->save_for_backward({x, w});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &g = grads[0];
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    if (at::GradMode::is_enabled()) {  // create_graph: differentiable gradients
      at::Tensor xi = x.requires_grad() ? x : x.detach().requires_grad_();
      at::Tensor wi = w.requires_grad() ? w : w.detach().requires_grad_();
      at::Tensor y = weighted_reference<A>(xi, broadcast_weight(wi, xi));
      auto d = torch::autograd::grad({y}, {xi, wi}, {g}, /*retain_graph=*/true,
                                     /*create_graph=*/true, /*allow_unused=*/true);
      return {need_x ? d[0] : at::Tensor(), need_w ? d[1] : at::Tensor()};
    }
    at::Tensor dx, dw;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(dx, dw) = backward_handle().call(g, x, w, need_w);
    }
    return {need_x ? dx : at::Tensor(), need_w ? dw : at::Tensor()};
  }
};


}  // namespace autograd_impl

// The autograd nodes, named as torch names its own (grad_fn.name() shows
// "torch::autograd::CppNode<fused_act::ReluBackward>"); NAMEBackwardBackward is the node of
// a backward recorded for double backward.
#define FA_NODES(name, F)                                                                  \
  struct F##Backward : autograd_impl::ForwardFunction<Act::name, F##Backward> {};          \
  struct F##BackwardBackward : autograd_impl::BackwardFunction<Act::name, F##BackwardBackward> {};
FA_FOR_EACH_ACTIVATION(FA_NODES)
#undef FA_NODES
struct SoftmaxBackward : autograd_impl::SoftmaxFunction<SoftmaxBackward> {};
struct SoftmaxBackwardBackward : autograd_impl::SoftmaxBackwardFunction<SoftmaxBackwardBackward> {};
struct PreluBackward
    : autograd_impl::WeightedFunction<Act::leaky_relu, kWeightedName_prelu, PreluBackward> {};
struct SwishWeightedBackward
    : autograd_impl::WeightedFunction<Act::swish, kWeightedName_swish_weighted,
                                      SwishWeightedBackward> {};

namespace autograd_impl {

template <Act A> struct Node;
#define FA_NODE_OF(name, F)            \
  template <> struct Node<Act::name> { \
    using Forward = F##Backward;        \
    using Backward = F##BackwardBackward; \
  };
FA_FOR_EACH_ACTIVATION(FA_NODE_OF)
#undef FA_NODE_OF

// Whether a call records a graph; when not, the autograd kernels call the device kernel
// directly (no autograd Function to set up).
bool records(std::initializer_list<const at::Tensor*> ts) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : ts)
    if (t->requires_grad()) return true;
  return false;
}

template <Act A> at::Tensor forward_autograd(const at::Tensor& x, double p) {
  if (!records({&x})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op<A>().call(x, p);
  }
  return Node<A>::Forward::apply(x, p);
}
template <Act A>
at::Tensor backward_autograd(const at::Tensor& grad, const at::Tensor& saved, double p,
                             bool from_output) {
  if (!records({&grad, &saved})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return backward_op<A>().call(grad, saved, p, from_output);
  }
  return Node<A>::Backward::apply(grad, saved, p, from_output);
}

at::Tensor softmax_autograd(const at::Tensor& x, int64_t dim, bool log) {
  if (!records({&x})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return softmax_op().call(x, dim, log);
  }
  return SoftmaxBackward::apply(x, dim, log);
}
at::Tensor softmax_backward_autograd(const at::Tensor& grad, const at::Tensor& y, int64_t dim,
                                     bool log) {
  if (!records({&grad, &y})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return softmax_backward_op().call(grad, y, dim, log);
  }
  return SoftmaxBackwardBackward::apply(grad, y, dim, log);
}

template <Act A, const char* kOp, class NodeT>
at::Tensor weighted_autograd(const at::Tensor& x, const at::Tensor& w) {
  if (!records({&x, &w})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return NodeT::forward_handle().call(x, w);
  }
  return NodeT::apply(x, w);
}

}  // namespace autograd_impl
}  // namespace fused_act

TORCH_LIBRARY_IMPL(fused_act, Autograd, m) {
  namespace impl = fused_act::autograd_impl;
  m.impl("prelu", TORCH_FN((impl::weighted_autograd<fused_act::Act::leaky_relu,
                                                    fused_act::kWeightedName_prelu,
                                                    fused_act::PreluBackward>)));
  m.impl("swish_weighted", TORCH_FN((impl::weighted_autograd<fused_act::Act::swish,
                                                             fused_act::kWeightedName_swish_weighted,
                                                             fused_act::SwishWeightedBackward>)));
#define FA_AUTOGRAD(name, F)                                                     \
  m.impl(#name, TORCH_FN(fused_act::autograd_impl::forward_autograd<fused_act::Act::name>)); \
  m.impl(#name "_backward",                                                              \
         TORCH_FN(fused_act::autograd_impl::backward_autograd<fused_act::Act::name>));
  FA_FOR_EACH_ACTIVATION(FA_AUTOGRAD)
#undef FA_AUTOGRAD
  m.impl("softmax", TORCH_FN(fused_act::autograd_impl::softmax_autograd));
  m.impl("softmax_backward", TORCH_FN(fused_act::autograd_impl::softmax_backward_autograd));
}
