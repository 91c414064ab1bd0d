// fused_act — the gated activations (GLU family), from the functors of activations.h.
//
// With a, b = input.chunk(2, dim), a gated op computes out = act(u) * v, where
// (u, v) = (b, a) for glu (a * sigmoid(b)) and (a, b) for the others:
//   swiglu = silu(a) * b,  geglu = gelu(a) * b (erf or tanh form),  reglu = relu(a) * b.
// The backward reads the saved input only and writes both halves in one pass:
//   dv = g * act(u),   du = act'(u) * (g * v)
// where act'(u) * w is the functor's own backward from its input, backward<false>(w, u)
// (also for sigmoid and relu, whose elementwise forms keep their output: from u, glu's
// gradient does not cancel where sigmoid(b) is near 1), computed together with act(u) by
// the functor's forward_backward where it has one (one exp or Phi for both, not two).
// Second order (autograd.cpp):
// act''(u) * w is the functor's grad_saved<false>(w, u).
#pragma once

#include <type_traits>

#include "activations.h"

namespace fused_act {

// The table of gated operators: (operator name, functor, the functor's parameter,
// whether the activated half u is the second one).  Adding one is a line here and a row
// in fused_act/_table.py; the schemas, both devices' kernels, the autograd kernels and
// Python's list of operators follow.
#define FA_FOR_EACH_GATED(X)          \
  X(glu, Sigmoid, 0.0, true)          \
  X(swiglu, Swish, 1.0, false)        \
  X(geglu, Gelu, 0.0, false)          \
  X(geglu_tanh, GeluTanh, 0.0, false) \
  X(reglu, Relu, 0.0, false)

enum class Gate : int {
#define FA_GATE_ENUM(name, F, p, second) name,
  FA_FOR_EACH_GATED(FA_GATE_ENUM)
#undef FA_GATE_ENUM
};

// act(u) and act'(u) * w: the functor's forward_backward where it has one (it shares the
// exp or Phi of the two, which the backward would otherwise compute twice), else its
// forward and its backward from the input.
template <class F, class = void> struct ForwardBackward {
  template <class T> FA_HD static T eval(T w, T u, T p, T& y) {
    y = F::forward(u, p);
    return F::template backward<false>(w, u, p);
  }
};
template <class F>
struct ForwardBackward<F, std::void_t<decltype(&F::template forward_backward<float>)>> {
  template <class T> FA_HD static T eval(T w, T u, T p, T& y) {
    return F::forward_backward(w, u, p, y);
  }
};

// The math of one gated op, for a value type T (float, double, SIMD vector, or the
// tensor type of autograd.cpp).
template <class F>
struct GatedMath {
  template <class T> FA_HD static T forward(T u, T v, T p) { return F::forward(u, p) * v; }
  template <class T> FA_HD static void backward(T g, T u, T v, T p, T& du, T& dv) {
    T y;
    du = ForwardBackward<F>::eval(g * v, u, p, y);
    dv = g * y;
  }
};

// One gated operator's constants: its functor and which half is activated.
template <class F, bool kSecond>
struct GateTag {
  using type = F;
  static constexpr bool gate_is_second_half = kSecond;
};

inline double gate_param(Gate g) {
  switch (g) {
#define FA_GATE_P(name, F, p, second) \
  case Gate::name: return p;
    FA_FOR_EACH_GATED(FA_GATE_P)
#undef FA_GATE_P
  }
  return 0.0;
}

inline const char* gate_name(Gate g) {
  switch (g) {
#define FA_GATE_NAME(name, F, p, second) \
  case Gate::name: return #name;
    FA_FOR_EACH_GATED(FA_GATE_NAME)
#undef FA_GATE_NAME
  }
  return "?";
}

// Calls fn(GateTag<Functor, second>{}) for gated op g (host code only).
template <class Fn> inline void visit_gate(Gate g, Fn&& fn) {
  switch (g) {
#define FA_GATE_CASE(name, F, p, second) \
  case Gate::name: fn(GateTag<F, second>{}); return;
    FA_FOR_EACH_GATED(FA_GATE_CASE)
#undef FA_GATE_CASE
  }
}

}  // namespace fused_act
