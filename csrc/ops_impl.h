// The operators' device-independent layer: argument checks, output allocation and
// layout handling, then a call into one device's kernels (Dev = CpuKernels or
// CudaKernels).  register_device_impls<Dev>() binds every operator of the activation
// table for one dispatch key; the schemas are defined in ops.cpp.
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "kernels.h"
#include "op_names.h"

namespace fused_act {

inline void check_floating(const at::Tensor& t, const char* op, const char* what) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
                   "fused_act::", op, ": ", what, " has dtype ", st,
                   "; supported dtypes are float32, float64, float16 and bfloat16");
}

inline void check_same(const at::Tensor& a, const at::Tensor& b, const char* op,
                       const char* name_a, const char* name_b) {
  TORCH_CHECK(a.device() == b.device(), "fused_act::", op, ": ", name_b, " is on ", b.device(),
              " but ", name_a, " is on ", a.device());
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), "fused_act::", op, ": ", name_b,
                   " has dtype ", b.scalar_type(), " but ", name_a, " has dtype ",
                   a.scalar_type());
}

// The activation's own check of its parameters (e.g. CELU's alpha != 0, hardtanh's
// min_val <= max_val), raised as the error type torch raises for it.
inline void check_param(Act act, double p, double q) {
  const char* error = nullptr;
  bool value_error = false;
  visit_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    error = Params<F>::param_error(p, q);
    value_error = F::kParamValueError;
  });
  if (error == nullptr) return;
  TORCH_CHECK_VALUE(!value_error, "fused_act::", act_name(act), ": ", error);
  TORCH_CHECK(false, "fused_act::", act_name(act), ": ", error);
}

// Kernels walk storage flat: fine when all tensors share one dense layout.
inline bool flat_ok(std::initializer_list<const at::Tensor*> ts) {
  const at::Tensor& first = **ts.begin();
  if (!first.is_non_overlapping_and_dense()) return false;
  for (const at::Tensor* t : ts)
    if (t->sizes() != first.sizes() || t->strides() != first.strides()) return false;
  return true;
}

// Outputs are allocated like the first input (torch's preserve_format), as the fake
// kernels in Python do; when the inputs' layouts differ, the kernel runs on contiguous
// copies and the result is copied into the output.
inline at::Tensor contig(const at::Tensor& t) { return t.contiguous(); }

template <class Dev>
struct Ops {
  static at::Tensor forward(Act act, const at::Tensor& x, double p, double q) {
    check_floating(x, act_name(act), "input");
    check_param(act, p, q);
    at::Tensor y = at::empty_like(x);
    if (x.numel() == 0) return y;
    if (flat_ok({&x, &y})) {
      Dev::forward(act, x, y, p, q);
    } else {
      at::Tensor xc = contig(x), yc = at::empty_like(xc);
      Dev::forward(act, xc, yc, p, q);
      y.copy_(yc);
    }
    return y;
  }

  static void forward_(Act act, const at::Tensor& x, double p, double q) {
    check_floating(x, act_name(act), "input");
    check_param(act, p, q);
    if (x.numel() == 0) return;
    if (x.is_non_overlapping_and_dense()) {
      Dev::forward(act, x, x, p, q);
    } else {
      at::Tensor xc = contig(x);
      Dev::forward(act, xc, xc, p, q);
      x.copy_(xc);
    }
  }

  static at::Tensor backward(Act act, const at::Tensor& g, const at::Tensor& s, double p,
                             double q, bool saved_is_output) {
    const char* op = act_name(act);
    check_floating(g, op, "grad");
    check_same(g, s, op, "grad", "saved tensor");
    TORCH_CHECK(g.sizes() == s.sizes(), "fused_act::", op, ": grad has shape ", g.sizes(),
                " but the saved tensor has shape ", s.sizes());
    at::Tensor dx = at::empty_like(g);
    if (g.numel() == 0) return dx;
    if (flat_ok({&g, &s, &dx})) {
      Dev::backward(act, g, s, dx, p, q, saved_is_output);
    } else {
      at::Tensor gc = contig(g), sc = contig(s), dc = at::empty_like(gc);
      Dev::backward(act, gc, sc, dc, p, q, saved_is_output);
      dx.copy_(dc);
    }
    return dx;
  }

  // Weight layout: one value, or one per channel along dim 1 (dim 0 counts as no
  // channel dim for inputs of fewer than 2 dims, as in torch.prelu).
  static void check_weight(const char* op, const at::Tensor& x, const at::Tensor& w) {
    check_floating(x, op, "input");
    check_same(x, w, op, "input", "weight");
    TORCH_CHECK(w.dim() <= 1, "fused_act::", op,
                ": weight must be a scalar or a 1-D tensor, but has ", w.dim(), " dims");
    const int64_t channels = x.dim() >= 2 ? x.size(1) : 1;
    TORCH_CHECK(w.numel() == 1 || w.numel() == channels, "fused_act::", op, ": weight has ",
                w.numel(), " elements but the input has ", channels,
                " channels (dim 1); expected 1 or ", channels);
  }

  // (inner, channels) for the flat-offset rule w[(o / inner) % channels] on x's layout.
  static std::pair<int64_t, int64_t> weight_layout(const at::Tensor& x, const at::Tensor& w) {
    if (w.numel() == 1) return {std::max<int64_t>(x.numel(), 1), 1};
    return {x.stride(1), w.numel()};
  }

  static at::Tensor weighted(Act act, const char* op, const at::Tensor& x, const at::Tensor& w) {
    check_weight(op, x, w);
    at::Tensor y = at::empty_like(x);
    if (x.numel() == 0) return y;
    if (flat_ok({&x, &y})) {
      auto [inner, channels] = weight_layout(x, w);
      Dev::weighted_forward(act, x, w, y, inner, channels);
    } else {
      at::Tensor xc = contig(x), yc = at::empty_like(xc);
      auto [inner, channels] = weight_layout(xc, w);
      Dev::weighted_forward(act, xc, w, yc, inner, channels);
      y.copy_(yc);
    }
    return y;
  }

  static std::tuple<at::Tensor, at::Tensor> weighted_backward(Act act, const char* op,
                                                               const at::Tensor& g,
                                                               const at::Tensor& x,
                                                               const at::Tensor& w,
                                                               bool need_weight_grad) {
    check_weight(op, x, w);
    check_same(x, g, op, "input", "grad");
    TORCH_CHECK(g.sizes() == x.sizes(), "fused_act::", op, ": grad has shape ", g.sizes(),
                " but the input has shape ", x.sizes());
    at::Tensor dx = at::empty_like(g);
    // (written whole by the kernel when it is asked for)
    at::Tensor dw = need_weight_grad && x.numel() != 0 ? at::empty_like(w) : at::zeros_like(w);
    if (x.numel() == 0) return {dx, dw};
    at::Tensor dw_arg = need_weight_grad ? dw : at::Tensor();
    if (flat_ok({&g, &x, &dx})) {
      auto [inner, channels] = weight_layout(x, w);
      Dev::weighted_backward(act, g, x, w, dx, dw_arg, inner, channels);
    } else {
      at::Tensor gc = contig(g), xc = contig(x), dc = at::empty_like(gc);
      auto [inner, channels] = weight_layout(xc, w);
      Dev::weighted_backward(act, gc, xc, w, dc, dw_arg, inner, channels);
      dx.copy_(dc);
    }
    return {dx, dw};
  }
};

// One function per (device, activation), bound to the schemas of ops.cpp.
template <class Dev, Act A>
struct Bound {
  static at::Tensor forward(const at::Tensor& x, double p, double q) {
    return Ops<Dev>::forward(A, x, p, q);
  }
  static void forward_(const at::Tensor& x, double p, double q) { Ops<Dev>::forward_(A, x, p, q); }
  static at::Tensor backward(const at::Tensor& g, const at::Tensor& s, double p, double q,
                             bool out) {
    return Ops<Dev>::backward(A, g, s, p, q, out);
  }
};

template <class Dev, Act A, const char* kName>
struct BoundWeighted {
  static at::Tensor forward(const at::Tensor& x, const at::Tensor& w) {
    return Ops<Dev>::weighted(A, kName, x, w);
  }
  static std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& g, const at::Tensor& x,
                                                     const at::Tensor& w, bool need_wgrad) {
    return Ops<Dev>::weighted_backward(A, kName, g, x, w, need_wgrad);
  }
};


template <class Dev>
void register_device_impls(torch::Library& m) {
#define FA_IMPL(name, F)                                                   \
  m.impl(#name, TORCH_FN((Bound<Dev, Act::name>::forward)));             \
  m.impl(#name "_", TORCH_FN((Bound<Dev, Act::name>::forward_)));        \
  m.impl(#name "_backward", TORCH_FN((Bound<Dev, Act::name>::backward)));
  FA_FOR_EACH_ACTIVATION(FA_IMPL)
#undef FA_IMPL
#define FA_IMPL_WEIGHTED(name, F, op)                                                   \
  m.impl(#op, TORCH_FN((BoundWeighted<Dev, Act::name, kWeightedName_##op>::forward))); \
  m.impl(#op "_backward",                                                             \
         TORCH_FN((BoundWeighted<Dev, Act::name, kWeightedName_##op>::backward)));
  FA_FOR_EACH_WEIGHTED(FA_IMPL_WEIGHTED)
#undef FA_IMPL_WEIGHTED
}

}  // namespace fused_act
