// Autograd kernels of every operator, in C++ so that a call from Python costs what a call
// of a torch operator costs (no Python autograd.Function in between):
//   NAME(x, p, q)                           saves y or x (Rule below), and
//   NAME_backward(grad, saved, p, q, o)     is itself differentiable (double backward);
//   NAME_(x, p, q)                          in place: through the dispatcher's
//                                           ADInplaceOrView kernel (version counter,
//                                           inference-tensor check), history rebased;
//   softmax(x, dim, log) / softmax_backward the same for the row-wise softmax;
//   prelu / swish_weighted (x, weight)      save x and the weight.
// Each forward calls the device kernel below the autograd layer; each backward calls the
// backward operator through the dispatcher, so a graph of the gradient (create_graph)
// records it with its own autograd kernel.  The derivative of a backward with respect to
// its gradient argument is the same backward (it is linear in the gradient); with respect
// to the saved tensor it is grad * D'(saved): NAME_double_backward, a composite of ATen
// operators (so that it works under every torch.func transform too).
//
// Forward-mode AD (torch.autograd.forward_ad, level 0) is handled here too: the tangent
// of y = f(x) is f'(x) * x_t, which is the backward kernel applied to the tangent
// (NAME_backward(x_t, saved)); softmax's Jacobian is symmetric, so its tangent is its
// backward too, and log_softmax's is softmax_jvp.  Tangents are computed from primal
// values with forward AD off (torch's own rule), then attached to the output.
//
// The out-of-place elementwise, softmax, gated and weighted (PReLU, trainable Swish)
// forwards record plain autograd Nodes (what torch's own operators record); the rest use
// torch::autograd::Function.
//
// torch.func transforms (functorch) cannot run these C++ nodes: fused_act's Python entry
// points send functorch-wrapped tensors to the torch.autograd.Function classes of
// fused_act/autograd.py instead, which use the same operators and the same saving rule
// (fused_act::saves_output).
#include <ATen/ATen.h>
#include <ATen/WrapDimUtils.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <torch/library.h>
#include <torch/version.h>

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <type_traits>
#include <utility>

#include "gated.h"
#include "op_names.h"

namespace fused_act {
namespace autograd_impl {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---- what each activation's backward reads: its functor's rule (activations.h) -----
template <Act A> struct Functor;
#define FA_FUNCTOR(name, F) \
  template <> struct Functor<Act::name> { using type = F; };
FA_FOR_EACH_ACTIVATION(FA_FUNCTOR)
#undef FA_FUNCTOR
// Every functor through Params (activations.h): both scalar parameters (p, q).
template <Act A> using F_ = Params<typename Functor<A>::type>;

template <Act A> struct Rule {
  static bool saves_output(double p, double q) { return F_<A>::saves_output(p, q); }
  static bool inplace_saves_output(double p, double q) {
    return F_<A>::inplace_saves_output(p, q);
  }
};

bool saves_output(const std::string& op, double p, double q, bool inplace) {
#define FA_RULE(name, F)                                                                   \
  if (op == #name)                                                                          \
    return inplace ? Rule<Act::name>::inplace_saves_output(p, q)                            \
                   : Rule<Act::name>::saves_output(p, q);
  FA_FOR_EACH_ACTIVATION(FA_RULE)
#undef FA_RULE
  TORCH_CHECK(false, "fused_act::saves_output: unknown operator '", op, "'");
}

// ---- the math header's formulas evaluated on tensors ------------------------------
// TV is a tensor or a constant with the arithmetic, comparisons and primitives the
// functors use, so a functor's grad_saved, written once for the kernels' value types, is
// also an ATen composite: differentiable, and traceable by every torch.func transform.
struct TMask {
  at::Tensor m;  // undefined: the constant b
  bool b = false;
};
struct TV {
  at::Tensor t;  // undefined: the constant c
  double c = 0;
  TV(const at::Tensor& tensor) : t(tensor) {}
  TV(double v) : c(v) {}
  TV(int v) : c(v) {}
  bool is_const() const { return !t.defined(); }
};
#define FA_TV_BINARY(op)                                                 \
  inline TV operator op(const TV& a, const TV& b) {                     \
    if (a.is_const() && b.is_const()) return TV(a.c op b.c);            \
    if (a.is_const()) return TV(at::Scalar(a.c) op b.t);                \
    if (b.is_const()) return TV(a.t op at::Scalar(b.c));                \
    return TV(a.t op b.t);                                              \
  }
FA_TV_BINARY(+)
FA_TV_BINARY(-)
FA_TV_BINARY(*)
FA_TV_BINARY(/)
#undef FA_TV_BINARY
inline TV operator-(const TV& a) { return a.is_const() ? TV(-a.c) : TV(-a.t); }
inline TMask tv_compare(const TV& a, const TV& b, int kind) {
  // kind: 0 <, 1 <=, 2 >, 3 >=
  if (a.is_const() && b.is_const()) {
    const bool r = kind == 0 ? a.c < b.c : kind == 1 ? a.c <= b.c : kind == 2 ? a.c > b.c : a.c >= b.c;
    return TMask{at::Tensor(), r};
  }
  // A constant on the left: swap the sides and the comparison.
  if (a.is_const()) return tv_compare(b, a, kind == 0 ? 2 : kind == 1 ? 3 : kind == 2 ? 0 : 1);
  if (b.is_const()) {
    const at::Scalar v(b.c);
    return TMask{kind == 0 ? at::lt(a.t, v) : kind == 1 ? at::le(a.t, v)
                 : kind == 2 ? at::gt(a.t, v) : at::ge(a.t, v)};
  }
  return TMask{kind == 0 ? at::lt(a.t, b.t) : kind == 1 ? at::le(a.t, b.t)
               : kind == 2 ? at::gt(a.t, b.t) : at::ge(a.t, b.t)};
}
inline TMask operator<(const TV& a, const TV& b) { return tv_compare(a, b, 0); }
inline TMask operator<=(const TV& a, const TV& b) { return tv_compare(a, b, 1); }
inline TMask operator>(const TV& a, const TV& b) { return tv_compare(a, b, 2); }
inline TMask operator>=(const TV& a, const TV& b) { return tv_compare(a, b, 3); }

// The tensor whose dtype and device constants take when they must become tensors.
thread_local const at::Tensor* tv_like = nullptr;
inline at::Tensor tv_tensor(const TV& v) {
  return v.is_const() ? at::full_like(*tv_like, v.c) : v.t;
}
inline TV fa_select(const TMask& c, const TV& a, const TV& b) {
  if (!c.m.defined()) return c.b ? a : b;
  if (a.is_const() && b.is_const() && a.c == b.c) return a;
  return TV(at::where(c.m, tv_tensor(a), tv_tensor(b)));
}
#define FA_TV_UNARY(name, tensor_fn, scalar_fn)                          \
  inline TV name(const TV& a) {                                          \
    return a.is_const() ? TV(scalar_fn(a.c)) : TV(tensor_fn(a.t));       \
  }
FA_TV_UNARY(fa_exp, at::exp, std::exp)
FA_TV_UNARY(fa_expm1, at::expm1, std::expm1)
FA_TV_UNARY(fa_tanh, at::tanh, std::tanh)
FA_TV_UNARY(fa_sigmoid, at::sigmoid, fused_act::fa_sigmoid)
// Phi from erfc, as the scalar form: ndtr's 1 + erf cancels for negative x.
FA_TV_UNARY(fa_normcdf, [](const at::Tensor& x) { return at::erfc(x * -0.707106781186547524) * 0.5; },
            fused_act::fa_normcdf)
FA_TV_UNARY(fa_gauss, [](const at::Tensor& x) { return at::exp(x * x * -0.5); },
            fused_act::fa_gauss)
inline TV fa_gelu(const TV& a) { return a * fa_normcdf(a); }
#undef FA_TV_UNARY

// ---- second derivatives: grad * D'(saved), where dx = grad * D(saved) ---------------
template <Act A>
at::Tensor d_saved(const at::Tensor& g, const at::Tensor& s, double p, double q,
                   bool from_output) {
  const at::Tensor* previous = tv_like;
  tv_like = &g;
  TV r = from_output ? F_<A>::template grad_saved<true>(TV(g), TV(s), TV(p), TV(q))
                     : F_<A>::template grad_saved<false>(TV(g), TV(s), TV(p), TV(q));
  at::Tensor out = tv_tensor(r);
  tv_like = previous;
  return out;
}

// NAME_double_backward(gg, grad, saved, p, q, o) = gg * grad * D'(saved): the gradient of
// NAME_backward with respect to `saved`, and (D' being diagonal) its tangent too.
template <Act A>
at::Tensor double_backward(const at::Tensor& gg, const at::Tensor& grad, const at::Tensor& saved,
                           double p, double q, bool from_output) {
  return d_saved<A>(gg * grad, saved, p, q, from_output);
}

template <Act A> const c10::TypedOperatorHandle<sig::Forward>& forward_op() {
  static const auto op = find_op<sig::Forward>(act_name(A));
  return op;
}
template <Act A> const c10::TypedOperatorHandle<sig::Inplace>& inplace_op() {
  static const auto op = find_op<sig::Inplace>(std::string(act_name(A)) + "_");
  return op;
}
template <Act A> const c10::TypedOperatorHandle<sig::Backward>& backward_op() {
  static const auto op = find_op<sig::Backward>(std::string(act_name(A)) + "_backward");
  return op;
}

// ---- forward-mode AD helpers ------------------------------------------------------
constexpr uint64_t kLevel = 0;  // torch.autograd.forward_ad has one level at a time

// The tangent of t (undefined when it has none or forward AD is off).
inline at::Tensor tangent(const at::Tensor& t) {
  return t.defined() ? t._fw_grad(kLevel) : at::Tensor();
}
// t without its tangent (differentiable in reverse mode), for computing tangents.
inline at::Tensor primal(const at::Tensor& t) {
  return t.defined() && t._fw_grad(kLevel).defined() ? t._fw_primal(kLevel) : t;
}
inline at::Tensor add_defined(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return a + b;
}

// ---- the nodes of the out-of-place forwards: plain autograd Nodes -------------------
// A torch::autograd::Function costs a few microseconds per call (its context, generic
// output wrapping); these record what torch's own operators record: the next edges, the
// output's history and one saved tensor.  (Node handles are std::shared_ptr in older
// torch releases, c10::intrusive_ptr in newer ones.)
using NodeRef = decltype(std::declval<torch::autograd::Edge>().function);
template <class T> struct IsSharedPtr : std::false_type {};
template <class T> struct IsSharedPtr<std::shared_ptr<T>> : std::true_type {};

template <class N, class... Args> NodeRef make_node(Args&&... args) {
  if constexpr (IsSharedPtr<NodeRef>::value) {
    return std::shared_ptr<N>(new N(std::forward<Args>(args)...));
  } else {
    return c10::make_intrusive<N>(std::forward<Args>(args)...);
  }
}

// ---- compiled autograd -------------------------------------------------------------
// torch.compile's compiled autograd turns an eagerly recorded graph into one traced
// backward: it asks each node for compiled_args (what the traced backward depends on: the
// node's constants and saved tensors, its cache key) and calls apply_with_saved with the
// saved tensors swapped for the tracer's.  From torch 2.7 on, a node's backward goes into
// the traced graph as a call of a stateless function of (gradients, packed values), bound
// to Python once per node type; before, the tracer recorded the operators that apply
// calls.  compiled_args is const in newer releases and not in older ones: the nodes define
// both, and the one that matches the base class overrides it.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 7)
#define FA_FUNCTIONAL_COMPILED_AUTOGRAD 1
#else
#define FA_FUNCTIONAL_COMPILED_AUTOGRAD 0
#endif
using torch::dynamo::autograd::CompiledNodeArgs;
using torch::dynamo::autograd::SwapSavedVariables;
using PackedValues = std::vector<c10::IValue>;
using Functional = variable_list (*)(const variable_list&, const PackedValues&);

// Collects a saved tensor: with whether it is the node's output where the release takes
// it (2.6 on), without before.
template <class Args>
auto collect_saved(Args& args, const torch::autograd::SavedVariable& v, bool is_output, int)
    -> decltype(args.collect(v, is_output), void()) {
  args.collect(v, is_output);
}
template <class Args>
void collect_saved(Args& args, const torch::autograd::SavedVariable& v, bool, long) {
  args.collect(v);
}

#if FA_FUNCTIONAL_COMPILED_AUTOGRAD
// Records `fn`(grads, packed) in the traced graph for `node`; `name` (a Python identifier,
// one per function: fused_act_<operator>_backward) names the bound function.
variable_list traced_call(const torch::autograd::Node& node, const std::string& name,
                          Functional fn, const variable_list& grads, const PackedValues& packed,
                          SwapSavedVariables& saved) {
  namespace ca = torch::dynamo::autograd;
  const auto& py = ca::getPyCompilerInterface();
  {
    static std::mutex mutex;
    static std::set<std::string> bound;
    std::lock_guard<std::mutex> lock(mutex);
    if (bound.insert(name).second) {
      std::vector<at::TypePtr> schema;
      for (const c10::IValue& v : packed)
        schema.push_back(v.isTensor() ? at::TensorType::get() : v.type());
      py->bind_function(saved.get_py_compiler(), name, fn, schema);
    }
  }
  const c10::IValue metadata = ca::IValuePacker<std::vector<std::optional<
      torch::autograd::InputMetadata>>>::pack(ca::get_input_metadata(node.next_edges()));
  return py->call_function(saved.get_py_compiler(), "apply_functional", name, grads, packed,
                           metadata);
}
#endif

// One saved tensor and the backward operator to call with it.  Subclasses give the
// backward's constants (collected for compiled autograd's cache key, packed after the
// saved tensor) and the stateless backward (`functional`) of
// (grads, {saved, constants..., whether dx is needed}).
struct SavedOneNode : public torch::autograd::Node {
  explicit SavedOneNode(const char* name) : name_(name) {}
  void release_variables() override { saved_.reset_data(); }
  std::string name() const override { return name_; }

  virtual void collect_constants(CompiledNodeArgs& args) const = 0;
  virtual void pack_constants(PackedValues& packed) const = 0;
  virtual Functional functional() const = 0;
  virtual std::string functional_name() const = 0;
  void compiled_args(CompiledNodeArgs& args) const {
    args.collect(std::string(name_));
    collect_saved(args, saved_, saved_is_output_, 0);
    collect_constants(args);
  }
  void compiled_args(CompiledNodeArgs& args) { std::as_const(*this).compiled_args(args); }
  variable_list apply_with_saved(const variable_list& grads, SwapSavedVariables& saved) override {
    saved.before(saved_);
#if FA_FUNCTIONAL_COMPILED_AUTOGRAD
    PackedValues packed{saved_.unpack(getptr())};
    pack_constants(packed);
    packed.emplace_back(task_should_compute_output(0));
    variable_list out = traced_call(*this, functional_name(), functional(), grads, packed, saved);
#else
    variable_list out = apply(variable_list(grads));
#endif
    saved.after(saved_);
    return out;
  }

  torch::autograd::SavedVariable saved_;
  bool saved_is_output_ = false;
  const char* name_;
};

template <Act A> struct ElementwiseNode : public SavedOneNode {
  ElementwiseNode(const char* name, double p, double q, bool from_output)
      : SavedOneNode(name), p_(p), q_(q), from_output_(from_output) {}
  variable_list apply(variable_list&& grads) override;
  void collect_constants(CompiledNodeArgs& args) const override {
    args.collect(p_);
    args.collect(q_);
    args.collect(from_output_);
  }
  void pack_constants(PackedValues& packed) const override {
    packed.emplace_back(p_);
    packed.emplace_back(q_);
    packed.emplace_back(from_output_);
  }
  static variable_list backward(const variable_list& grads, const PackedValues& v);
  Functional functional() const override { return &backward; }
  std::string functional_name() const override {
    return std::string("fused_act_") + act_name(A) + "_backward";
  }
  double p_, q_;
  bool from_output_;
};

struct SoftmaxNode : public SavedOneNode {
  SoftmaxNode(const char* name, int64_t dim, bool log) : SavedOneNode(name), dim_(dim), log_(log) {}
  variable_list apply(variable_list&& grads) override;
  void collect_constants(CompiledNodeArgs& args) const override {
    args.collect(dim_);
    args.collect(log_);
  }
  void pack_constants(PackedValues& packed) const override {
    packed.emplace_back(dim_);
    packed.emplace_back(log_);
  }
  static variable_list backward(const variable_list& grads, const PackedValues& v);
  Functional functional() const override { return &backward; }
  std::string functional_name() const override { return "fused_act_softmax_backward"; }
  int64_t dim_;
  bool log_;
};

// Records `node` as the history of y (computed from x), then saves `saved` in it: after
// the tangents are attached, so that a saved output keeps its tangent.
template <class N, class SetTangent>
void record(const NodeRef& node, const at::Tensor& x, const at::Tensor& y,
            SetTangent&& set_tangent, const at::Tensor& saved, bool saved_is_output) {
  if (node) {
    node->set_next_edges(torch::autograd::collect_next_edges(x));
    torch::autograd::set_history(y, node);
  }
  set_tangent();
  if (node) {
    static_cast<N*>(node.get())->saved_ = torch::autograd::SavedVariable(saved, saved_is_output);
    static_cast<N*>(node.get())->saved_is_output_ = saved_is_output;
  }
}

// Self: the named node type below (its name is what grad_fn.name() shows).
template <Act A, class Self>
struct BackwardFunction : public torch::autograd::Function<Self> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad,
                            const at::Tensor& saved, double p, double q, bool from_output) {
    ctx->save_for_backward({grad, saved});
    ctx->saved_data["p"] = p;
    ctx->saved_data["q"] = q;
    ctx->saved_data["from_output"] = from_output;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return backward_op<A>().call(grad, saved, p, q, from_output);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const double p = ctx->saved_data["p"].toDouble();
    const double q = ctx->saved_data["q"].toDouble();
    const bool from_output = ctx->saved_data["from_output"].toBool();
    const at::Tensor& gg = grads[0];
    at::Tensor d_grad, d_s;
    if (ctx->needs_input_grad(0))
      d_grad = backward_op<A>().call(gg, saved[1], p, q, from_output);
    if (ctx->needs_input_grad(1))
      d_s = double_backward<A>(gg, saved[0], saved[1], p, q, from_output);
    return {d_grad, d_s, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// In place: x is overwritten by the activation.  `copy` is x's value before, when the
// backward reads the input (taken by the caller under autograd, so that double backward
// reaches x through it); undefined when it reads the output.
template <Act A, class Self>
struct InplaceFunction : public torch::autograd::Function<Self> {
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x,
                            const std::optional<at::Tensor>& copy, double p, double q) {
    {
      // mark_dirty bumps the version counter, so the kernel itself runs below
      // ADInplaceOrView.
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      inplace_op<A>().call(x, p, q);
    }
    ctx->mark_dirty({x});
    const bool from_output = !copy.has_value();
    ctx->save_for_backward({from_output ? x : *copy});
    ctx->saved_data["p"] = p;
    ctx->saved_data["q"] = q;
    ctx->saved_data["from_output"] = from_output;
    return x;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const double p = ctx->saved_data["p"].toDouble();
    const double q = ctx->saved_data["q"].toDouble();
    const bool from_output = ctx->saved_data["from_output"].toBool();
    return {backward_op<A>().call(grads[0], saved[0], p, q, from_output), at::Tensor(),
            at::Tensor(), at::Tensor()};
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

// The composites (ATen operators only, so they run under every transform):
// softmax_jvp(t, y) = J t, the tangent of y for an input tangent t (for softmax J is
// symmetric: the backward; the fused kernel is used for it where autograd allows).
at::Tensor softmax_jvp(const at::Tensor& t, const at::Tensor& y, int64_t dim, bool log) {
  if (log) return t - (at::exp(y) * t).sum(dim, /*keepdim=*/true);
  return y * (t - (t * y).sum(dim, /*keepdim=*/true));
}
// The gradient of softmax_backward(grad, y) with respect to y, for an incoming gg.
at::Tensor softmax_backward_backward(const at::Tensor& gg, const at::Tensor& grad,
                                     const at::Tensor& y, int64_t dim, bool log) {
  if (log) return -gg * at::exp(y) * grad.sum(dim, /*keepdim=*/true);
  return gg * (grad - (grad * y).sum(dim, /*keepdim=*/true)) -
         grad * (gg * y).sum(dim, /*keepdim=*/true);
}
// The tangent of softmax_backward(grad, y) for a tangent y_t of y.
at::Tensor softmax_backward_jvp(const at::Tensor& y_t, const at::Tensor& grad, const at::Tensor& y,
                                int64_t dim, bool log) {
  if (log) return -y_t * at::exp(y) * grad.sum(dim, /*keepdim=*/true);
  return y_t * (grad - (grad * y).sum(dim, /*keepdim=*/true)) -
         y * (grad * y_t).sum(dim, /*keepdim=*/true);
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
    if (ctx->needs_input_grad(0))
      d_grad = log ? softmax_jvp(gg, y, dim, true) : softmax_backward_op().call(gg, y, dim, false);
    if (ctx->needs_input_grad(1)) d_y = softmax_backward_backward(gg, grad, y, dim, log);
    return {d_grad, d_y, at::Tensor(), at::Tensor()};
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

// Their tangent for tangents x_t, w_t (either may be undefined).
template <Act A>
at::Tensor weighted_tangent(const at::Tensor& x, const at::Tensor& wb, const at::Tensor& x_t,
                            const at::Tensor& wb_t);
template <>
at::Tensor weighted_tangent<Act::leaky_relu>(const at::Tensor& x, const at::Tensor& wb,
                                             const at::Tensor& x_t, const at::Tensor& wb_t) {
  at::Tensor neg = add_defined(x_t.defined() ? wb * x_t : at::Tensor(),
                               wb_t.defined() ? wb_t * x : at::Tensor());
  return at::where(x > 0, x_t.defined() ? x_t : at::zeros_like(x), neg);
}
template <>
at::Tensor weighted_tangent<Act::swish>(const at::Tensor& x, const at::Tensor& wb,
                                        const at::Tensor& x_t, const at::Tensor& wb_t) {
  at::Tensor s = at::sigmoid(wb * x);
  at::Tensor ds = s * (1 - s);
  return add_defined(x_t.defined() ? x_t * (s + wb * x * ds) : at::Tensor(),
                     wb_t.defined() ? wb_t * (x * x * ds) : at::Tensor());
}

// NAME_reference(x, weight) and NAME_jvp(x, weight, x_t?, w_t?): composites.
template <Act A> at::Tensor weighted_reference_op(const at::Tensor& x, const at::Tensor& w) {
  return weighted_reference<A>(x, broadcast_weight(w, x));
}
template <Act A>
at::Tensor weighted_jvp_op(const at::Tensor& x, const at::Tensor& w,
                           const std::optional<at::Tensor>& x_t,
                           const std::optional<at::Tensor>& w_t) {
  at::Tensor xt = x_t.has_value() ? *x_t : at::Tensor();
  at::Tensor wt = w_t.has_value() && w_t->defined() ? broadcast_weight(*w_t, x) : at::Tensor();
  if (!xt.defined() && !wt.defined()) return at::zeros_like(x);
  return weighted_tangent<A>(x, broadcast_weight(w, x), xt, wt);
}

// PReLU's and trainable Swish's node: x and w saved, gradients for both (a plain Node,
// as ElementwiseNode: a torch::autograd::Function's context costs about a microsecond
// more per call).
template <Act A, const char* kOp>
struct WeightedNode : public torch::autograd::Node {
  explicit WeightedNode(const char* name) : name_(name) {}
  static const c10::TypedOperatorHandle<sig::Weighted>& forward_handle() {
    static const auto op = find_op<sig::Weighted>(kOp);
    return op;
  }
  static const c10::TypedOperatorHandle<sig::WeightedBackward>& backward_handle() {
    static const auto op = find_op<sig::WeightedBackward>(std::string(kOp) + "_backward");
    return op;
  }
  void release_variables() override {
    x_.reset_data();
    w_.reset_data();
  }
  std::string name() const override { return name_; }

  // Compiled autograd (see SavedOneNode): packed {x, w, whether dx, dw are needed}.
  void compiled_args(CompiledNodeArgs& args) const {
    args.collect(std::string(name_));
    collect_saved(args, x_, false, 0);
    collect_saved(args, w_, false, 0);
  }
  void compiled_args(CompiledNodeArgs& args) { std::as_const(*this).compiled_args(args); }
  static variable_list backward(const variable_list& grads, const PackedValues& v) {
    const at::Tensor& g = grads[0];
    const bool need_x = v[2].toBool(), need_w = v[3].toBool();
    if (!g.defined() || (!need_x && !need_w)) return {at::Tensor(), at::Tensor()};
    at::Tensor dx, dw;
    std::tie(dx, dw) = backward_handle().call(g, v[0].toTensor(), v[1].toTensor(), need_w);
    return {need_x ? dx : at::Tensor(), need_w ? dw : at::Tensor()};
  }
  variable_list apply_with_saved(const variable_list& grads, SwapSavedVariables& saved) override {
    saved.before(x_);
    saved.before(w_);
#if FA_FUNCTIONAL_COMPILED_AUTOGRAD
    const PackedValues packed{x_.unpack(getptr()), w_.unpack(getptr()),
                              task_should_compute_output(0), task_should_compute_output(1)};
    variable_list out = traced_call(*this, std::string("fused_act_") + kOp + "_backward",
                                    &backward, grads, packed, saved);
#else
    variable_list out = apply(variable_list(grads));
#endif
    saved.after(x_);
    saved.after(w_);
    return out;
  }

  variable_list apply(variable_list&& grads) override {
    const at::Tensor& g = grads[0];
    const bool need_x = task_should_compute_output(0), need_w = task_should_compute_output(1);
    if (!g.defined() || (!need_x && !need_w)) return {at::Tensor(), at::Tensor()};
    const at::Tensor x = x_.unpack(getptr()), w = w_.unpack(getptr());
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

  torch::autograd::SavedVariable x_, w_;
  const char* name_;
};

}  // namespace autograd_impl

// The autograd nodes, named as torch names its own (grad_fn.name() shows
// "torch::autograd::CppNode<fused_act::ReluBackward>"); NAMEBackwardBackward is the node of
// a backward recorded for double backward, NAMEInplaceBackward that of an in-place call.
#define FA_NODES(name, F)                                                                   \
  struct F##InplaceBackward : autograd_impl::InplaceFunction<Act::name, F##InplaceBackward> {}; \
  struct F##BackwardBackward : autograd_impl::BackwardFunction<Act::name, F##BackwardBackward> {};
FA_FOR_EACH_ACTIVATION(FA_NODES)
#undef FA_NODES
struct SoftmaxBackwardBackward : autograd_impl::SoftmaxBackwardFunction<SoftmaxBackwardBackward> {};
constexpr char kPreluNodeName[] = "fused_act::PreluBackward";
constexpr char kSwishWeightedNodeName[] = "fused_act::SwishWeightedBackward";

namespace autograd_impl {

template <Act A> struct Node;
#define FA_NODE_OF(name, F)                                                   \
  template <> struct Node<Act::name> {                                        \
    static constexpr const char* kForwardName = "fused_act::" #F "Backward";  \
    using Inplace = F##InplaceBackward;                                       \
    using Backward = F##BackwardBackward;                                     \
  };
FA_FOR_EACH_ACTIVATION(FA_NODE_OF)
#undef FA_NODE_OF

template <Act A> const char* node_name() { return Node<A>::kForwardName; }

// Whether a call records a graph; when not, the autograd kernels call the device kernel
// directly (no autograd Function to set up).
bool records(std::initializer_list<const at::Tensor*> ts) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : ts)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

// Runs fn() with forward AD off: C++ autograd Functions have no forward-mode formula, so
// the tangents are attached by the kernels below instead.
template <class Fn> auto without_forward_ad(Fn&& fn) {
  c10::AutoFwGradMode no_forward_ad(false);
  return fn();
}

template <Act A> at::Tensor backward_autograd(const at::Tensor& grad, const at::Tensor& saved,
                                              double p, double q, bool from_output);

template <Act A> at::Tensor forward_autograd(const at::Tensor& x, double p, double q) {
  const at::Tensor x_t = tangent(x);
  const bool from_output = Rule<A>::saves_output(p, q);
  at::Tensor y;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    y = forward_op<A>().call(x, p, q);
  }
  NodeRef node;
  if (records({&x})) node = make_node<ElementwiseNode<A>>(node_name<A>(), p, q, from_output);
  record<ElementwiseNode<A>>(
      node, x, y,
      [&] {
        if (!x_t.defined()) return;
        at::Tensor y_t = without_forward_ad(
            [&] { return backward_autograd<A>(x_t, from_output ? y : primal(x), p, q, from_output); });
        y._set_fw_grad(y_t, kLevel, /*is_inplace_op=*/false);
      },
      from_output ? y : x, from_output);
  return y;
}

template <Act A> variable_list ElementwiseNode<A>::apply(variable_list&& grads) {
  at::Tensor dx;
  if (grads[0].defined() && task_should_compute_output(0))
    dx = backward_op<A>().call(grads[0], saved_.unpack(getptr()), p_, q_, from_output_);
  return {dx};
}

template <Act A>
variable_list ElementwiseNode<A>::backward(const variable_list& grads, const PackedValues& v) {
  at::Tensor dx;
  if (grads[0].defined() && v[4].toBool())
    dx = backward_op<A>().call(grads[0], v[0].toTensor(), v[1].toDouble(), v[2].toDouble(),
                               v[3].toBool());
  return {dx};
}

template <Act A> void inplace_autograd(const at::Tensor& x, double p, double q) {
  const bool need_grad = records({&x});
  const at::Tensor x_t = tangent(x);
  const bool from_output = Rule<A>::inplace_saves_output(p, q);
  // What the backward (or the tangent) reads must survive the overwrite.
  std::optional<at::Tensor> copy;
  if (!from_output && (need_grad || x_t.defined()))
    copy = without_forward_ad([&] { return x.clone(); });
  without_forward_ad([&] {
    if (need_grad) {
      Node<A>::Inplace::apply(x, copy, p, q);
      return 0;
    }
    at::AutoDispatchBelowAutograd below_autograd;  // ADInplaceOrView: version counter
    inplace_op<A>().call(x, p, q);
    return 0;
  });
  if (x_t.defined()) {
    at::Tensor new_t = without_forward_ad([&] {
      return backward_autograd<A>(x_t, from_output ? primal(x) : *copy, p, q, from_output);
    });
    x_t.copy_(new_t);  // a tangent is updated in place, like the tensor
  }
}

template <Act A>
at::Tensor backward_autograd(const at::Tensor& grad, const at::Tensor& saved, double p,
                             double q, bool from_output) {
  const at::Tensor g_t = tangent(grad), s_t = tangent(saved);
  at::Tensor dx = without_forward_ad([&] {
    if (!records({&grad, &saved})) {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      return backward_op<A>().call(grad, saved, p, q, from_output);
    }
    return Node<A>::Backward::apply(grad, saved, p, q, from_output);
  });
  if (g_t.defined() || s_t.defined()) {
    at::Tensor dx_t = without_forward_ad([&] {
      const at::Tensor g = primal(grad), s = primal(saved);
      return add_defined(
          g_t.defined() ? backward_autograd<A>(g_t, s, p, q, from_output) : at::Tensor(),
          s_t.defined() ? double_backward<A>(s_t, g, s, p, q, from_output) : at::Tensor());
    });
    dx._set_fw_grad(dx_t, kLevel, false);
  }
  return dx;
}

at::Tensor softmax_backward_autograd(const at::Tensor& grad, const at::Tensor& y, int64_t dim,
                                     bool log);

at::Tensor softmax_autograd(const at::Tensor& x, int64_t dim, bool log) {
  const at::Tensor x_t = tangent(x);
  at::Tensor y;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    y = softmax_op().call(x, dim, log);
  }
  NodeRef node;
  if (records({&x}))
    node = make_node<SoftmaxNode>(log ? "fused_act::LogSoftmaxBackward" : "fused_act::SoftmaxBackward",
                                  dim, log);
  record<SoftmaxNode>(
      node, x, y,
      [&] {
        if (!x_t.defined()) return;
        at::Tensor y_t = without_forward_ad([&] {
          return log ? softmax_jvp(x_t, y, at::maybe_wrap_dim(dim, std::max<int64_t>(y.dim(), 1)), true)
                     : softmax_backward_autograd(x_t, y, dim, false);
        });
        y._set_fw_grad(y_t, kLevel, false);
      },
      y, /*saved_is_output=*/true);
  return y;
}

variable_list SoftmaxNode::apply(variable_list&& grads) {
  at::Tensor dx;
  if (grads[0].defined() && task_should_compute_output(0))
    dx = softmax_backward_op().call(grads[0], saved_.unpack(getptr()), dim_, log_);
  return {dx};
}

variable_list SoftmaxNode::backward(const variable_list& grads, const PackedValues& v) {
  at::Tensor dx;
  if (grads[0].defined() && v[3].toBool())
    dx = softmax_backward_op().call(grads[0], v[0].toTensor(), v[1].toInt(), v[2].toBool());
  return {dx};
}

at::Tensor softmax_backward_autograd(const at::Tensor& grad, const at::Tensor& y, int64_t dim,
                                     bool log) {
  const at::Tensor g_t = tangent(grad), y_t = tangent(y);
  at::Tensor dx = without_forward_ad([&] {
    if (!records({&grad, &y})) {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      return softmax_backward_op().call(grad, y, dim, log);
    }
    return SoftmaxBackwardBackward::apply(grad, y, dim, log);
  });
  if (g_t.defined() || y_t.defined()) {
    at::Tensor dx_t = without_forward_ad([&] {
      const at::Tensor g = primal(grad), yp = primal(y);
      const int64_t d = at::maybe_wrap_dim(dim, std::max<int64_t>(yp.dim(), 1));
      return add_defined(
          g_t.defined() ? softmax_backward_autograd(g_t, yp, dim, log) : at::Tensor(),
          y_t.defined() ? softmax_backward_jvp(y_t, g, yp, d, log) : at::Tensor());
    });
    dx._set_fw_grad(dx_t, kLevel, false);
  }
  return dx;
}

template <Act A, const char* kOp, const char* kNodeName>
at::Tensor weighted_autograd(const at::Tensor& x, const at::Tensor& w) {
  using NodeT = WeightedNode<A, kOp>;
  const at::Tensor x_t = tangent(x), w_t = tangent(w);
  at::Tensor y;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    y = NodeT::forward_handle().call(x, w);
  }
  if (records({&x, &w})) {
    NodeRef node = make_node<NodeT>(kNodeName);
    node->set_next_edges(torch::autograd::collect_next_edges(x, w));
    torch::autograd::set_history(y, node);
    auto* n = static_cast<NodeT*>(node.get());
    n->x_ = torch::autograd::SavedVariable(x, false);
    n->w_ = torch::autograd::SavedVariable(w, false);
  }
  if (x_t.defined() || w_t.defined()) {
    at::Tensor y_t = without_forward_ad([&] {
      return weighted_jvp_op<A>(primal(x), primal(w), x_t, w_t);
    });
    y._set_fw_grad(y_t, kLevel, false);
  }
  return y;
}

// The in-place kernel below the autograd layer: runs the device kernel, then bumps the
// version counter of the overwritten tensor (which also refuses an inference tensor
// outside inference mode), as torch's own in-place operators do.
template <Act A> void inplace_version(const at::Tensor& x, double p, double q) {
  {
    at::AutoDispatchBelowADInplaceOrView below;
    inplace_op<A>().call(x, p, q);
  }
  torch::autograd::impl::bump_version(x);
}

// The weighted backward operators are called by the nodes above only when no graph of
// the gradient is recorded; a direct call with tangents has no formula here.
template <const char* kOp>
std::tuple<at::Tensor, at::Tensor> weighted_backward_autograd(const at::Tensor& g,
                                                             const at::Tensor& x,
                                                             const at::Tensor& w, bool need_w) {
  TORCH_CHECK(!records({&g, &x, &w}) && !tangent(g).defined() && !tangent(x).defined() &&
                  !tangent(w).defined(),
              "fused_act::", kOp, "_backward is not differentiable; differentiate fused_act::",
              kOp, " twice instead (its backward then uses a differentiable composite)");
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  static const auto op = find_op<sig::WeightedBackward>(std::string(kOp) + "_backward");
  return op.call(g, x, w, need_w);
}

}  // namespace autograd_impl
}  // namespace fused_act

TORCH_LIBRARY_IMPL(fused_act, Autograd, m) {
  namespace impl = fused_act::autograd_impl;
  using fused_act::Act;
  m.impl("prelu", TORCH_FN((impl::weighted_autograd<Act::leaky_relu, fused_act::kWeightedName_prelu,
                                                    fused_act::kPreluNodeName>)));
  m.impl("swish_weighted",
         TORCH_FN((impl::weighted_autograd<Act::swish, fused_act::kWeightedName_swish_weighted,
                                           fused_act::kSwishWeightedNodeName>)));
  m.impl("prelu_backward",
         TORCH_FN((impl::weighted_backward_autograd<fused_act::kWeightedName_prelu>)));
  m.impl("swish_weighted_backward",
         TORCH_FN((impl::weighted_backward_autograd<fused_act::kWeightedName_swish_weighted>)));
#define FA_AUTOGRAD(name, F)                                                             \
  m.impl(#name, TORCH_FN(impl::forward_autograd<Act::name>));                            \
  m.impl(#name "_", TORCH_FN(impl::inplace_autograd<Act::name>));                        \
  m.impl(#name "_backward", TORCH_FN(impl::backward_autograd<Act::name>));
  FA_FOR_EACH_ACTIVATION(FA_AUTOGRAD)
#undef FA_AUTOGRAD
  m.impl("softmax", TORCH_FN(impl::softmax_autograd));
  m.impl("softmax_backward", TORCH_FN(impl::softmax_backward_autograd));
}

// The in-place operators' ADInplaceOrView kernels: the version counter of the overwritten
// tensor is bumped (which also refuses inference tensors outside inference mode), as for
// torch's own in-place operators.
TORCH_LIBRARY_IMPL(fused_act, ADInplaceOrView, m) {
#define FA_INPLACE_VIEW(name, F) \
  m.impl(#name "_", TORCH_FN(fused_act::autograd_impl::inplace_version<fused_act::Act::name>));
  FA_FOR_EACH_ACTIVATION(FA_INPLACE_VIEW)
#undef FA_INPLACE_VIEW
}

// The derivative composites (ATen operators only): differentiable, and run under every
// torch.func transform by decomposition (FuncTorchBatchedDecomposition: vmap decomposes
// them too instead of looping over the batch).
namespace fused_act::autograd_impl {
void register_composites(torch::Library& m) {
  namespace impl = fused_act::autograd_impl;
  using fused_act::Act;
#define FA_COMPOSITE(name, F) \
  m.impl(#name "_double_backward", TORCH_FN(impl::double_backward<Act::name>));
  FA_FOR_EACH_ACTIVATION(FA_COMPOSITE)
#undef FA_COMPOSITE
#define FA_WEIGHTED_COMPOSITE(name, F, op)                                        \
  m.impl(#op "_reference", TORCH_FN(impl::weighted_reference_op<Act::name>));     \
  m.impl(#op "_jvp", TORCH_FN(impl::weighted_jvp_op<Act::name>));
  FA_FOR_EACH_WEIGHTED(FA_WEIGHTED_COMPOSITE)
#undef FA_WEIGHTED_COMPOSITE
  m.impl("softmax_jvp", TORCH_FN(impl::softmax_jvp));
  m.impl("softmax_backward_backward", TORCH_FN(impl::softmax_backward_backward));
  m.impl("softmax_backward_jvp", TORCH_FN(impl::softmax_backward_jvp));
}
}  // namespace fused_act::autograd_impl

TORCH_LIBRARY_IMPL(fused_act, CompositeImplicitAutograd, m) {
  fused_act::autograd_impl::register_composites(m);
}
TORCH_LIBRARY_IMPL(fused_act, FuncTorchBatchedDecomposition, m) {
  fused_act::autograd_impl::register_composites(m);
}

// ---- gated operators (gated.h): out = act(u) * v, (u, v) the halves of x along dim ---
// NAME(x, dim) saves x (no intermediate); NAME_backward(grad, x, dim) writes the gradient
// of all of x in one kernel and is differentiable:
//   with respect to grad: the tangent map of NAME, NAME_jvp(x, gg):
//     out_t = act'(u) * (u_t * v) + act(u) * v_t
//   with respect to x: NAME_backward_backward(gg, grad, x), (gu, gv) the halves of gg:
//     u: act''(u) * (gu * grad * v) + act'(u) * (gv * grad),   v: act'(u) * (gu * grad)
//   (the Hessian of <grad, NAME(x)> is symmetric, so this is also the backward's tangent
//   for a tangent of x).
// act' and act'' come from the functor (act'(u) * w: its backward; act''(u) * w: its
// grad_saved), evaluated on tensors as TV: ATen composites, differentiable and traceable by
// every torch.func transform.
namespace fused_act {
namespace autograd_impl {

template <Gate G> struct GateOf;
#define FA_GATE_OF(name, F, p, second)                                           \
  template <> struct GateOf<Gate::name> {                                        \
    using type = F;                                                              \
    static constexpr bool kSecond = second;                                      \
    static constexpr const char* kNodeName = "fused_act::" #name "_Backward";   \
  };
FA_FOR_EACH_GATED(FA_GATE_OF)
#undef FA_GATE_OF

// The (u, v) halves of t along dim (contiguous or not: views).
inline std::pair<at::Tensor, at::Tensor> gate_halves(const at::Tensor& t, int64_t dim,
                                                     bool second) {
  auto c = t.chunk(2, dim);
  return second ? std::make_pair(c[1], c[0]) : std::make_pair(c[0], c[1]);
}

// act(u), act'(u) * w and act''(u) * w for gated op G, from the functor (gated.h).
template <Gate G> struct GateDerivs {
  using F = typename GateOf<G>::type;
  double p = gate_param(G);
  TV act(const TV& u) const { return F::forward(u, TV(p)); }
  TV d1(const TV& w, const TV& u) const { return F::template backward<false>(w, u, TV(p)); }
  TV d2(const TV& w, const TV& u) const { return F::template grad_saved<false>(w, u, TV(p)); }
};

// Runs fn() with TV's constants shaped like `like`.
template <class Fn> at::Tensor with_tv_like(const at::Tensor& like, Fn&& fn) {
  const at::Tensor* previous = tv_like;
  tv_like = &like;
  at::Tensor out = tv_tensor(fn());
  tv_like = previous;
  return out;
}

template <Gate G> at::Tensor gated_jvp(const at::Tensor& x, const at::Tensor& x_t, int64_t dim) {
  constexpr bool second = GateOf<G>::kSecond;
  const auto xs = gate_halves(x, dim, second), ts = gate_halves(x_t, dim, second);
  const at::Tensor &u = xs.first, &v = xs.second, &ut = ts.first, &vt = ts.second;
  GateDerivs<G> d;
  return with_tv_like(u, [&] { return d.d1(TV(ut) * TV(v), TV(u)) + d.act(TV(u)) * TV(vt); });
}

template <Gate G>
at::Tensor gated_backward_backward(const at::Tensor& gg, const at::Tensor& grad,
                                   const at::Tensor& x, int64_t dim) {
  constexpr bool second = GateOf<G>::kSecond;
  const auto xs = gate_halves(x, dim, second), gs = gate_halves(gg, dim, second);
  const at::Tensor &u = xs.first, &v = xs.second, &gu = gs.first, &gv = gs.second;
  GateDerivs<G> d;
  at::Tensor du, dv;
  du = with_tv_like(u, [&] {
    return d.d2(TV(gu) * TV(grad) * TV(v), TV(u)) + d.d1(TV(gv) * TV(grad), TV(u));
  });
  dv = with_tv_like(u, [&] { return d.d1(TV(gu) * TV(grad), TV(u)); });
  return second ? at::cat({dv, du}, dim) : at::cat({du, dv}, dim);
}

template <Gate G> const c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, int64_t)>&
gated_forward_op() {
  static const auto op = find_op<at::Tensor(const at::Tensor&, int64_t)>(gate_name(G));
  return op;
}
template <Gate G>
const c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>&
gated_backward_op() {
  static const auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>(
      std::string(gate_name(G)) + "_backward");
  return op;
}

template <Gate G> struct GatedNode : public SavedOneNode {
  GatedNode(const char* name, int64_t dim) : SavedOneNode(name), dim_(dim) {}
  variable_list apply(variable_list&& grads) override {
    at::Tensor dx;
    if (grads[0].defined() && task_should_compute_output(0))
      dx = gated_backward_op<G>().call(grads[0], saved_.unpack(getptr()), dim_);
    return {dx};
  }
  void collect_constants(CompiledNodeArgs& args) const override { args.collect(dim_); }
  void pack_constants(PackedValues& packed) const override { packed.emplace_back(dim_); }
  static variable_list backward(const variable_list& grads, const PackedValues& v) {
    at::Tensor dx;
    if (grads[0].defined() && v[2].toBool())
      dx = gated_backward_op<G>().call(grads[0], v[0].toTensor(), v[1].toInt());
    return {dx};
  }
  Functional functional() const override { return &backward; }
  std::string functional_name() const override {
    return std::string("fused_act_") + gate_name(G) + "_backward";
  }
  int64_t dim_;
};

template <Gate G, class Self>
struct GatedBackwardFunction : public torch::autograd::Function<Self> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& x,
                            int64_t dim) {
    ctx->save_for_backward({grad, x});
    ctx->saved_data["dim"] = dim;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return gated_backward_op<G>().call(grad, x, dim);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const int64_t dim = ctx->saved_data["dim"].toInt();
    const at::Tensor& gg = grads[0];
    at::Tensor d_grad, d_x;
    if (ctx->needs_input_grad(0)) d_grad = gated_jvp<G>(saved[1], gg, dim);
    if (ctx->needs_input_grad(1)) d_x = gated_backward_backward<G>(gg, saved[0], saved[1], dim);
    return {d_grad, d_x, at::Tensor()};
  }
};

}  // namespace autograd_impl

#define FA_GATED_NODES(name, F, p, second)                                              \
  struct name##_BackwardBackward                                                        \
      : autograd_impl::GatedBackwardFunction<Gate::name, name##_BackwardBackward> {};
FA_FOR_EACH_GATED(FA_GATED_NODES)
#undef FA_GATED_NODES

namespace autograd_impl {

template <Gate G> struct GatedBackwardNode;
#define FA_GATED_NODE_OF(name, F, p, second) \
  template <> struct GatedBackwardNode<Gate::name> { using type = name##_BackwardBackward; };
FA_FOR_EACH_GATED(FA_GATED_NODE_OF)
#undef FA_GATED_NODE_OF

template <Gate G> at::Tensor gated_autograd(const at::Tensor& x, int64_t dim) {
  const at::Tensor x_t = tangent(x);
  at::Tensor y;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    y = gated_forward_op<G>().call(x, dim);
  }
  NodeRef node;
  if (records({&x})) node = make_node<GatedNode<G>>(GateOf<G>::kNodeName, dim);
  record<GatedNode<G>>(
      node, x, y,
      [&] {
        if (!x_t.defined()) return;
        at::Tensor y_t = without_forward_ad([&] { return gated_jvp<G>(primal(x), x_t, dim); });
        y._set_fw_grad(y_t, kLevel, /*is_inplace_op=*/false);
      },
      x, /*saved_is_output=*/false);
  return y;
}

template <Gate G>
at::Tensor gated_backward_autograd(const at::Tensor& grad, const at::Tensor& x, int64_t dim) {
  const at::Tensor g_t = tangent(grad), x_t = tangent(x);
  at::Tensor dx = without_forward_ad([&] {
    if (!records({&grad, &x})) {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      return gated_backward_op<G>().call(grad, x, dim);
    }
    return GatedBackwardNode<G>::type::apply(grad, x, dim);
  });
  if (g_t.defined() || x_t.defined()) {
    at::Tensor dx_t = without_forward_ad([&] {
      const at::Tensor g = primal(grad), xp = primal(x);
      return add_defined(
          g_t.defined() ? gated_backward_autograd<G>(g_t, xp, dim) : at::Tensor(),
          x_t.defined() ? gated_backward_backward<G>(x_t, g, xp, dim) : at::Tensor());
    });
    dx._set_fw_grad(dx_t, kLevel, false);
  }
  return dx;
}

// The composites take any dim (negative too); the operators check it.
template <Gate G> at::Tensor gated_jvp_op(const at::Tensor& x, const at::Tensor& x_t, int64_t dim) {
  return gated_jvp<G>(x, x_t, at::maybe_wrap_dim(dim, x.dim()));
}
template <Gate G>
at::Tensor gated_backward_backward_op(const at::Tensor& gg, const at::Tensor& grad,
                                      const at::Tensor& x, int64_t dim) {
  return gated_backward_backward<G>(gg, grad, x, at::maybe_wrap_dim(dim, x.dim()));
}

void register_gated_composites(torch::Library& m) {
#define FA_GATED_COMPOSITE(name, F, p, second)                                     \
  m.impl(#name "_jvp", TORCH_FN(gated_jvp_op<Gate::name>));                        \
  m.impl(#name "_backward_backward", TORCH_FN(gated_backward_backward_op<Gate::name>));
  FA_FOR_EACH_GATED(FA_GATED_COMPOSITE)
#undef FA_GATED_COMPOSITE
}

}  // namespace autograd_impl
}  // namespace fused_act

TORCH_LIBRARY_IMPL(fused_act, Autograd, m) {
  namespace impl = fused_act::autograd_impl;
  using fused_act::Gate;
#define FA_GATED_AUTOGRAD(name, F, p, second)                                \
  m.impl(#name, TORCH_FN(impl::gated_autograd<Gate::name>));                 \
  m.impl(#name "_backward", TORCH_FN(impl::gated_backward_autograd<Gate::name>));
  FA_FOR_EACH_GATED(FA_GATED_AUTOGRAD)
#undef FA_GATED_AUTOGRAD
}
TORCH_LIBRARY_IMPL(fused_act, CompositeImplicitAutograd, m) {
  fused_act::autograd_impl::register_gated_composites(m);
}
TORCH_LIBRARY_IMPL(fused_act, FuncTorchBatchedDecomposition, m) {
  fused_act::autograd_impl::register_gated_composites(m);
}
