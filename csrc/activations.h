// fused_act — the math of every elementwise activation, written once.
//
// Each functor gives forward(x, p) and backward(g, s, p) for a value type T that is
// `float` or `double` (host and CUDA device) or a CPU SIMD vector of floats (see
// cpu/simd.h).  Half and bfloat16 are computed in float (at::opmath_type).  `p` is the
// activation's scalar parameter (negative slope, alpha, beta) or the per-channel weight
// of PReLU / trainable Swish; activations without one ignore it.
//
// The primitives the formulas use (fa_select, fa_exp, fa_expm1, fa_tanh) are overloaded
// for scalars below and for SIMD vectors next to the vector type, found by ADL.
//
// What each backward reads (`s`, "saved"):
//   relu, relu6, leaky_relu (slope >= 0), elu (alpha >= 0), sigmoid, tanh: the output y,
//     so the input can be freed (or overwritten in place) after the forward;
//   leaky_relu (slope < 0), elu (alpha < 0): the input x, because y no longer tells the
//     sign of x;
//   swish / silu and prelu: the input x (the derivative needs x itself).
// Comparisons mirror ATen's (e.g. `x <= 0 ? 0 : x` for relu) so NaN propagates exactly
// as in torch.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FA_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define FA_HD inline __attribute__((always_inline))  // into the SIMD loops, no call
#else
#define FA_HD inline
#endif

namespace fused_act {

// ---- scalar primitives (host and device) ------------------------------------------
template <class T> FA_HD T fa_select(bool c, T a, T b) { return c ? a : b; }
FA_HD float fa_exp(float x) { return ::expf(x); }
FA_HD double fa_exp(double x) { return ::exp(x); }
FA_HD float fa_expm1(float x) { return ::expm1f(x); }
FA_HD double fa_expm1(double x) { return ::expm1(x); }
FA_HD float fa_tanh(float x) { return ::tanhf(x); }
FA_HD double fa_tanh(double x) { return ::tanh(x); }

// sigmoid(z) from e = exp(-|z|) <= 1: 1/(1+e) for z >= 0 and e/(1+e) below, so tiny
// results keep full relative precision instead of flushing to 0 once exp(-z) overflows.
template <class T> FA_HD T fa_sigmoid(T z) {
  T e = fa_exp(-fa_select(z < T(0), -z, z));
  return fa_select(z < T(0), e, T(1)) / (T(1) + e);
}

// ---- the activations ---------------------------------------------------------------
// kFromOutput: whether `s` is the output y (true) or the input x (false).

// relu: y = max(x, 0); dx = y > 0 ? dy : 0
struct Relu {
  template <class T> FA_HD static T forward(T x, T) { return fa_select(x <= T(0), T(0), x); }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T s, T) {
    return fa_select(s <= T(0), T(0), g);  // sign(y) == sign(x): same test either way
  }
};

// relu6: y = min(max(x, 0), 6); dx = 0 < y < 6 ? dy : 0 (so 0 for NaN, as in torch)
struct Relu6 {
  template <class T> FA_HD static T forward(T x, T) {
    return fa_select(x <= T(0), T(0), fa_select(x >= T(6), T(6), x));
  }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T s, T) {
    return fa_select(s > T(0), fa_select(s < T(6), g, T(0)), T(0));
  }
};

// leaky_relu / prelu: y = x > 0 ? x : p*x; dx = x > 0 ? dy : p*dy; dp = x > 0 ? 0 : dy*x
// With p >= 0, y > 0 exactly when x > 0, so the output serves as well as the input.
struct LeakyRelu {
  template <class T> FA_HD static T forward(T x, T p) { return fa_select(x > T(0), x, x * p); }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T s, T p) {
    return fa_select(s > T(0), g, g * p);
  }
  template <class T> FA_HD static T weight_grad(T g, T x, T) {
    return fa_select(x > T(0), T(0), g * x);
  }
};

// elu: y = x > 0 ? x : alpha*(exp(x)-1)
//   from the output (alpha >= 0): dx = y > 0 ? dy : dy*(y + alpha)
//   from the input:               dx = x > 0 ? dy : dy*alpha*exp(x)
struct Elu {
  template <class T> FA_HD static T forward(T x, T alpha) {
    return fa_select(x <= T(0), fa_expm1(x) * alpha, x);
  }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T s, T alpha) {
    // A NaN takes the negative branch: its gradient is NaN.
    if (kFromOutput) return fa_select(s > T(0), g, g * (s + alpha));
    return fa_select(s > T(0), g, g * alpha * fa_exp(s));
  }
};

// sigmoid: y = 1/(1+exp(-x)); dx = dy*(1-y)*y
struct Sigmoid {
  template <class T> FA_HD static T forward(T x, T) { return fa_sigmoid(x); }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T y, T) {
    return g * (T(1) - y) * y;
  }
};

// tanh: y = tanh(x); dx = dy*(1-y*y)
struct Tanh {
  template <class T> FA_HD static T forward(T x, T) { return fa_tanh(x); }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T y, T) {
    return g * (T(1) - y * y);
  }
};

// swish / silu (beta = 1): y = x*sigmoid(beta*x)
//   dx    = dy*(s + beta*s*x*(1-s)),  s = sigmoid(beta*x) recomputed from the saved input
//   dbeta = dy*x*s*(1-s)*x
// Products are grouped so that a huge |x| meets s*(1-s) = 0 before it can overflow.
struct Swish {
  template <class T> FA_HD static T forward(T x, T beta) { return x * fa_sigmoid(beta * x); }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T x, T beta) {
    T s = fa_sigmoid(beta * x);
    return g * (s + (beta * s) * (x * (T(1) - s)));
  }
  template <class T> FA_HD static T weight_grad(T g, T x, T beta) {
    T s = fa_sigmoid(beta * x);
    return ((g * x) * (s * (T(1) - s))) * x;
  }
};

// The table of operators: (operator name, functor).  Adding an activation means a
// functor above and a line here; registration and both devices' kernels follow.
#define FA_FOR_EACH_ACTIVATION(X) \
  X(relu, Relu)                   \
  X(relu6, Relu6)                 \
  X(leaky_relu, LeakyRelu)        \
  X(elu, Elu)                     \
  X(sigmoid, Sigmoid)             \
  X(tanh, Tanh)                   \
  X(swish, Swish)

// Activations whose parameter can also be a learnable tensor (one value, or one per
// channel along dim 1), with the name of that operator: leaky_relu with a weight is
// prelu; swish with a tensor beta is swish_weighted (Swish(trainable=True)).
#define FA_FOR_EACH_WEIGHTED(X)        \
  X(leaky_relu, LeakyRelu, prelu)      \
  X(swish, Swish, swish_weighted)

enum class Act : int {
#define FA_ENUM(name, F) name,
  FA_FOR_EACH_ACTIVATION(FA_ENUM)
#undef FA_ENUM
};

template <class F> struct ActTag { using type = F; };

// Calls fn(ActTag<Functor>{}) for the functor of `act` (host code only).
template <class Fn> inline void visit_act(Act act, Fn&& fn) {
  switch (act) {
#define FA_CASE(name, F) \
  case Act::name: fn(ActTag<F>{}); return;
    FA_FOR_EACH_ACTIVATION(FA_CASE)
#undef FA_CASE
  }
}

}  // namespace fused_act
