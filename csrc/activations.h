// fused_act — the math of every elementwise activation, written once.
//
// Each functor gives forward(x, p) and backward(g, s, p) for a value type T that is
// `float` or `double` (host and CUDA device) or a CPU SIMD vector of floats (see
// cpu/simd.h).  Half and bfloat16 are computed in float (at::opmath_type).  `p` is the
// activation's scalar parameter (negative slope, alpha, beta) or the per-channel weight
// of PReLU / trainable Swish; activations without one ignore it.  An activation with two
// scalar parameters (softplus's beta and threshold, hardtanh's min_val and max_val)
// derives from ActivationBase2 (kParams = 2) and takes a second one, q, after p in each
// of the functions below; the operators carry both (p, q) for every activation, and the
// kernels call every functor through Params<F> (end of this file), which drops q for
// the one-parameter functors, whose own signatures stay (x, p) and (g, s, p).
//
// The primitives the formulas use (fa_select, fa_exp, fa_expm1, fa_tanh) are overloaded
// for scalars below and for SIMD vectors next to the vector type, found by ADL.
//
// Each functor also holds, once for every device:
//   saves_output(p) / inplace_saves_output(p): what its backward reads ("saved"), out of
//     place and in place: the output y (so the input can be freed, or overwritten in
//     place, after the forward) or the input x (when y no longer tells what the
//     derivative needs, or when the derivative from y would lose accuracy);
//   grad_saved<kFromOutput>(g, s, p): the derivative of backward(g, s, p) with respect to
//     s (double backward and the tangent of a backward), written with the same
//     primitives, so that autograd.cpp evaluates it on tensors (an ATen composite);
//   param_error(p): why p is not a valid parameter (nullptr when it is; raised as a
//     ValueError when kParamValueError, as torch raises hardtanh's, else RuntimeError);
//   streaming_backward(from_output): whether its backward from that saved tensor does so
//     little per element that it is bound by memory bandwidth (the CPU picks its vector
//     width by it).
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
// a / d for a constant d (the SIMD overload avoids the division, same bits; simd.h).
FA_HD float fa_div_const(float a, float d) { return a / d; }
FA_HD double fa_div_const(double a, float d) { return a / double(d); }

// sigmoid(z) from e = exp(-|z|) <= 1: 1/(1+e) for z >= 0 and e/(1+e) below, so tiny
// results keep full relative precision instead of flushing to 0 once exp(-z) overflows.
template <class T> FA_HD T fa_sigmoid(T z) {
  T e = fa_exp(-fa_select(z < T(0), -z, z));
  return fa_select(z < T(0), e, T(1)) / (T(1) + e);
}

// softplus(z) = log(1 + exp(z)) as max(z, 0) + log1p(exp(-|z|)): exp never overflows,
// and log1p keeps the relative precision of tiny results (z far below 0).  NaN stays NaN.
FA_HD float fa_softplus(float z) { return (z > 0.0f ? z : 0.0f) + ::log1pf(::expf(-::fabsf(z))); }
FA_HD double fa_softplus(double z) { return (z > 0.0 ? z : 0.0) + ::log1p(::exp(-::fabs(z))); }

// The standard normal CDF Phi(x) = erfc(-x/sqrt(2))/2 (GELU), from erfc so that it keeps
// its relative precision for negative x, where 1 + erf(x/sqrt(2)) cancels.
FA_HD float fa_normcdf(float x) { return 0.5f * ::erfcf(x * -0.707106781186547524f); }
FA_HD double fa_normcdf(double x) { return 0.5 * ::erfc(x * -0.707106781186547524); }
// GELU(x) = x Phi(x) (the CPU's SIMD form evaluates it without forming Phi(x) itself).
FA_HD float fa_gelu(float x) { return x * fa_normcdf(x); }
FA_HD double fa_gelu(double x) { return x * fa_normcdf(x); }
// exp(-x^2/2), the normal density without its constant.
FA_HD float fa_gauss(float x) { return ::expf(x * x * -0.5f); }
FA_HD double fa_gauss(double x) { return ::exp(x * x * -0.5); }

constexpr double kInvSqrt2Pi = 0.398942280401432677939946059934;  // 1/sqrt(2 pi)
constexpr double kSqrt2OverPi = 0.797884560802865355879892119869;  // sqrt(2/pi)
constexpr double kGeluTanhCubic = 0.044715;

// Phi(x) + x*phi(x), GELU's derivative, and Phi(x) in `cdf` (the CPU's SIMD form shares
// one exp between them).
template <class T> FA_HD T fa_gelu_slope(T x, T& cdf) {
  cdf = fa_normcdf(x);
  return cdf + x * (fa_gauss(x) * T(kInvSqrt2Pi));
}
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;

// ---- the activations ---------------------------------------------------------------
// kFromOutput: whether `s` is the output y (true) or the input x (false).

// The defaults: the backward reads the input, any parameter is valid, compute-bound.
struct ActivationBase {
  static constexpr int kParams = 1;
  static constexpr bool kParamValueError = false;
  static bool saves_output(double) { return false; }
  static bool inplace_saves_output(double) { return false; }
  static const char* param_error(double) { return nullptr; }
  static constexpr bool streaming_backward(bool) { return false; }
};
// The same defaults for the activations with two scalar parameters (p, q).
struct ActivationBase2 : ActivationBase {
  static constexpr int kParams = 2;
  static bool saves_output(double, double) { return false; }
  static bool inplace_saves_output(double, double) { return false; }
  static const char* param_error(double, double) { return nullptr; }
};
// Piecewise-linear activations: the backward is a compare and a select.
struct PiecewiseLinear : ActivationBase {
  static constexpr bool streaming_backward(bool) { return true; }
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T, T, T) { return T(0); }
};

// relu: y = max(x, 0); dx = y > 0 ? dy : 0.  Saves y (as torch).
struct Relu : PiecewiseLinear {
  static bool saves_output(double) { return true; }
  static bool inplace_saves_output(double) { return true; }
  template <class T> FA_HD static T forward(T x, T) { return fa_select(x <= T(0), T(0), x); }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T s, T) {
    return fa_select(s <= T(0), T(0), g);  // sign(y) == sign(x): same test either way
  }
};

// relu6: y = min(max(x, 0), 6); dx = 0 < y < 6 ? dy : 0 (so 0 for NaN, as in torch).
// Saves y out of place; in place a copy of x, as torch's relu6_ (so that
// `x = relu6(x, inplace=True); x.mul_(2)` still has a gradient).
struct Relu6 : PiecewiseLinear {
  static bool saves_output(double) { return true; }
  template <class T> FA_HD static T forward(T x, T) {
    return fa_select(x <= T(0), T(0), fa_select(x >= T(6), T(6), x));
  }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T s, T) {
    return fa_select(s > T(0), fa_select(s < T(6), g, T(0)), T(0));
  }
};

// leaky_relu / prelu: y = x > 0 ? x : p*x; dx = x > 0 ? dy : p*dy; dp = x > 0 ? 0 : dy*x
// With p >= 0, y > 0 exactly when x > 0, so the output serves as well as the input
// (torch keeps x out of place); with p < 0 y no longer tells the sign of x.
struct LeakyRelu : PiecewiseLinear {
  static bool saves_output(double slope) { return slope >= 0; }
  static bool inplace_saves_output(double slope) { return slope >= 0; }
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
// Saves x out of place: y + alpha cancels for large negative inputs (float16 gives 4.8e-4
// for every x <= -8 where the answer is <= 4.4e-4 and falling; float32 gives 0 below
// about -17).  In place y when alpha >= 0, as torch's elu_ (torch's accuracy).
struct Elu : ActivationBase {
  static constexpr bool streaming_backward(bool from_output) { return from_output; }
  static bool inplace_saves_output(double alpha) { return alpha >= 0; }
  template <class T> FA_HD static T forward(T x, T alpha) {
    return fa_select(x <= T(0), fa_expm1(x) * alpha, x);
  }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T s, T alpha) {
    // A NaN takes the negative branch: its gradient is NaN.
    if (kFromOutput) return fa_select(s > T(0), g, g * (s + alpha));
    return fa_select(s > T(0), g, g * alpha * fa_exp(s));
  }
  // 0 at +-0, as torch's double backward.
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T g, T s, T alpha) {
    if (kFromOutput) return g * fa_select(s < T(0), T(1), T(0));
    return g * fa_select(s < T(0), fa_exp(s) * alpha, T(0));
  }
};

// sigmoid: y = 1/(1+exp(-x)); dx = dy*(1-y)*y.  Saves y.
// From the input (the gated glu, which keeps its input): s*(1-s) with s and 1 - s both
// from e = exp(-|x|), so that 1 - s does not cancel where s is near 1 (1 - y does).
struct Sigmoid : ActivationBase {
  static constexpr bool streaming_backward(bool from_output) { return from_output; }
  static bool saves_output(double) { return true; }
  static bool inplace_saves_output(double) { return true; }
  template <class T> FA_HD static T forward(T x, T) { return fa_sigmoid(x); }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T s, T) {
    if (kFromOutput) return g * (T(1) - s) * s;
    T e = fa_exp(-fa_select(s < T(0), -s, s));
    T r = T(1) / (T(1) + e);
    return g * (fa_select(s < T(0), e, T(1)) * r) * (fa_select(s < T(0), T(1), e) * r);
  }
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T g, T s, T) {
    if (kFromOutput) return g * (T(1) - T(2) * s);
    T y = fa_sigmoid(s);
    return g * (y * (T(1) - y) * (T(1) - T(2) * y));
  }
  // y = forward(x) and backward<false>(g, x) from one exp (the gated ops' backward).
  template <class T> FA_HD static T forward_backward(T g, T x, T, T& y) {
    T e = fa_exp(-fa_select(x < T(0), -x, x));
    T r = T(1) / (T(1) + e);
    y = fa_select(x < T(0), e, T(1)) * r;
    return g * y * (fa_select(x < T(0), T(1), e) * r);
  }
};

// tanh: y = tanh(x); dx = dy*(1-y*y).  Saves y.
struct Tanh : ActivationBase {
  static constexpr bool streaming_backward(bool from_output) { return from_output; }
  static bool saves_output(double) { return true; }
  static bool inplace_saves_output(double) { return true; }
  template <class T> FA_HD static T forward(T x, T) { return fa_tanh(x); }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T y, T) {
    return g * (T(1) - y * y);
  }
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T g, T y, T) {
    return g * (T(-2) * y);
  }
};

// swish / silu (beta = 1): y = x*sigmoid(beta*x).  Saves x.
//   dx    = dy*(s + beta*s*x*(1-s)),  s = sigmoid(beta*x) recomputed from the saved input
//   dbeta = dy*x*s*(1-s)*x
// Products are grouped so that a huge |x| meets s*(1-s) = 0 before it can overflow.
struct Swish : ActivationBase {
  template <class T> FA_HD static T forward(T x, T beta) { return x * fa_sigmoid(beta * x); }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T x, T beta) {
    T s = fa_sigmoid(beta * x);
    return g * (s + (beta * s) * (x * (T(1) - s)));
  }
  template <class T> FA_HD static T weight_grad(T g, T x, T beta) {
    T s = fa_sigmoid(beta * x);
    return ((g * x) * (s * (T(1) - s))) * x;
  }
  // y = forward(x) and backward<false>(g, x) from one sigmoid (the gated ops' backward).
  template <class T> FA_HD static T forward_backward(T g, T x, T beta, T& y) {
    T s = fa_sigmoid(beta * x);
    y = x * s;
    return g * (s + (beta * s) * (x * (T(1) - s)));
  }
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T g, T x, T beta) {
    T s = fa_sigmoid(x * beta);
    return g * (beta * s * (T(1) - s) * (T(2) + beta * x * (T(1) - T(2) * s)));
  }
};

// gelu (approximate='none'): y = x*Phi(x), Phi the standard normal CDF.  Saves x.
//   dx = dy*(Phi(x) + x*phi(x)),  phi(x) = exp(-x^2/2)/sqrt(2 pi)
struct Gelu : ActivationBase {
  template <class T> FA_HD static T phi(T x) { return fa_gauss(x) * T(kInvSqrt2Pi); }
  template <class T> FA_HD static T forward(T x, T) { return fa_gelu(x); }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T x, T) {
    T c = x;  // set by fa_gelu_slope
    return g * fa_gelu_slope(x, c);
  }
  // y = forward(x) and backward<false>(g, x) from one Phi (the gated ops' backward).
  template <class T> FA_HD static T forward_backward(T g, T x, T, T& y) {
    T c = x;  // set by fa_gelu_slope
    T slope = fa_gelu_slope(x, c);
    y = x * c;
    return g * slope;
  }
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T g, T x, T) {
    return g * (phi(x) * (T(2) - x * x));
  }
};

// gelu (approximate='tanh'): y = x*(1 + tanh(u))/2 = x*sigmoid(2u),
// u = sqrt(2/pi)*(x + 0.044715 x^3).  Saves x.  With s = sigmoid(2u), v' = d(2u)/dx:
//   dx = dy*(s + x*v'*s*(1-s))
// The sigmoid form keeps the relative precision of y for negative x, where 1 + tanh(u)
// cancels.
struct GeluTanh : ActivationBase {
  template <class T> FA_HD static T twice_u(T x) {
    return x * (T(2 * kSqrt2OverPi) + (x * x) * T(2 * kSqrt2OverPi * kGeluTanhCubic));
  }
  template <class T> FA_HD static T twice_du(T x) {
    return T(2 * kSqrt2OverPi) + (x * x) * T(6 * kSqrt2OverPi * kGeluTanhCubic);
  }
  // The general sigmoid (fa_sigmoid above, from exp(-|v|)), named so that the CPU's SIMD
  // form is not picked: v < -87 (x < -5.3) is common here, and there that form takes its
  // slow general path.
  template <class T> FA_HD static T sigmoid(T v) { return ::fused_act::fa_sigmoid<T>(v); }
  template <class T> FA_HD static T forward(T x, T) { return x * sigmoid(twice_u(x)); }
  // s and 1 - s both from e = exp(-|v|), so s*(1-s) does not cancel where s is near 1.
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T x, T) {
    T v = twice_u(x);
    T e = fa_exp(-fa_select(v < T(0), -v, v));
    T r = T(1) / (T(1) + e);
    T s = fa_select(v < T(0), e, T(1)) * r, c = fa_select(v < T(0), T(1), e) * r;
    return g * (s + (x * twice_du(x)) * (s * c));
  }
  // y = forward(x) and backward<false>(g, x) from one exp (the gated ops' backward).
  template <class T> FA_HD static T forward_backward(T g, T x, T, T& y) {
    T v = twice_u(x);
    T e = fa_exp(-fa_select(v < T(0), -v, v));
    T r = T(1) / (T(1) + e);
    T s = fa_select(v < T(0), e, T(1)) * r, c = fa_select(v < T(0), T(1), e) * r;
    y = x * s;
    return g * (s + (x * twice_du(x)) * (s * c));
  }
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T g, T x, T) {
    T s = sigmoid(twice_u(x)), dv = twice_du(x);
    T ddv = x * T(12 * kSqrt2OverPi * kGeluTanhCubic);
    return g * (s * (T(1) - s) * (T(2) * dv + x * ddv + x * dv * dv * (T(1) - T(2) * s)));
  }
};

// mish: y = x*tanh(softplus(x)).  Saves x.  With w = exp(-|x|) (never overflows),
//   tanh(log(1 + e^x)) = (e^2x + 2e^x)/(e^2x + 2e^x + 2)
//                      = x >= 0 ? (1 + 2w)/(1 + 2w + 2w^2) : (w^2 + 2w)/(w^2 + 2w + 2),
// one exp and one division, accurate for every x (no log, no cancellation);
//   dx = dy*(t + x*(1 - t^2)*sigmoid(x)),  sigmoid(x) = (x >= 0 ? 1 : w)/(1 + w).
struct Mish : ActivationBase {
  template <class T> FA_HD static T tanh_softplus(T x, T w) {
    T num = fa_select(x < T(0), w * (w + T(2)), w * T(2) + T(1));
    return num / (num + fa_select(x < T(0), T(2), T(2) * w * w));
  }
  template <class T> FA_HD static T forward(T x, T) {
    return x * tanh_softplus(x, fa_exp(-fa_select(x < T(0), -x, x)));
  }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T x, T) {
    T w = fa_exp(-fa_select(x < T(0), -x, x));
    T t = tanh_softplus(x, w);
    T sig = fa_select(x < T(0), w, T(1)) / (T(1) + w);
    return g * (t + x * ((T(1) - t * t) * sig));
  }
  // With A = (1 - t^2)*sigmoid(x) = dt/dx: d/dx (t + x*A) = A*(2 + x*(1 - sigmoid - 2 t sigmoid)).
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T g, T x, T) {
    T w = fa_exp(-fa_select(x < T(0), -x, x));
    T t = tanh_softplus(x, w);
    T sig = fa_select(x < T(0), w, T(1)) / (T(1) + w);
    T a = (T(1) - t * t) * sig;
    return g * (a * (T(2) + x * (T(1) - sig - T(2) * t * sig)));
  }
};

// hardswish: y = x * min(max(x + 3, 0), 6) / 6 (torch's formula and order, so -inf gives
// NaN as in torch); dx = x <= -3 ? 0 : x >= 3 ? dy : dy * (x/3 + 1/2) (a +0 below -3, as
// torch's), so a NaN input gives a NaN gradient (torch's is NaN or dy, by its code path).
// Saves x.
struct Hardswish : ActivationBase {
  static constexpr bool streaming_backward(bool) { return true; }
  template <class T> FA_HD static T forward(T x, T) {
    T s = x + T(3);
    return x * fa_select(s <= T(0), T(0), fa_select(s >= T(6), T(6), s)) / T(6);
  }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T x, T) {
    return fa_select(x <= T(-3), T(0), fa_select(x >= T(3), g, g * (fa_div_const(x, 3.0f) + T(0.5))));
  }
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T g, T x, T) {
    return fa_select(x > T(-3), fa_select(x < T(3), g / T(3), T(0)), T(0));
  }
};

// hardsigmoid: y = min(max(x + 3, 0), 6)/6; dx = -3 < x < 3 ? dy/6 : 0.  Saves x.
struct Hardsigmoid : PiecewiseLinear {
  template <class T> FA_HD static T forward(T x, T) {
    // (x + 3 is in (0, 6) where the quotient is used: a normal quotient)
    return fa_select(x <= T(-3), T(0), fa_select(x >= T(3), T(1), fa_div_const(x + T(3), 6.0f)));
  }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T x, T) {
    return fa_select(x > T(-3), fa_select(x < T(3), g * T(1.0 / 6.0), T(0)), T(0));
  }
};

// selu: y = scale*(x > 0 ? x : alpha*(exp(x)-1)) with torch's alpha and scale: ELU's
// rules (x out of place, y in place).
//   from the input:  dx = x > 0 ? dy*scale : dy*scale*alpha*exp(x)
//   from the output: dx = y > 0 ? dy*scale : dy*(y + scale*alpha)
struct Selu : ActivationBase {
  static bool inplace_saves_output(double) { return true; }
  template <class T> FA_HD static T forward(T x, T) {
    return fa_select(x <= T(0), fa_expm1(x) * T(kSeluAlpha * kSeluScale), x * T(kSeluScale));
  }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T s, T) {
    if (kFromOutput)
      return fa_select(s > T(0), g * T(kSeluScale), g * (s + T(kSeluAlpha * kSeluScale)));
    return fa_select(s > T(0), g * T(kSeluScale), g * T(kSeluAlpha * kSeluScale) * fa_exp(s));
  }
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T g, T s, T) {
    if (kFromOutput) return g * fa_select(s < T(0), T(1), T(0));
    return g * fa_select(s < T(0), fa_exp(s) * T(kSeluAlpha * kSeluScale), T(0));
  }
};

// celu: y = x > 0 ? x : alpha*(exp(x/alpha)-1), alpha != 0.  ELU's rules: x out of
// place; in place y when alpha > 0 (y > 0 exactly when x > 0 for every alpha != 0).
//   from the input:  dx = x > 0 ? dy : dy*exp(x/alpha)
//   from the output: dx = y > 0 ? dy : dy*(y/alpha + 1)
struct Celu : ActivationBase {
  static bool inplace_saves_output(double alpha) { return alpha > 0; }
  static const char* param_error(double alpha) {
    return alpha == 0 ? "ZeroDivisionError: alpha cannot be 0 for CELU" : nullptr;
  }
  template <class T> FA_HD static T forward(T x, T alpha) {
    return fa_select(x <= T(0), fa_expm1(x * (T(1) / alpha)) * alpha, x);
  }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T s, T alpha) {
    if (kFromOutput) return fa_select(s > T(0), g, g * ((s + alpha) * (T(1) / alpha)));
    return fa_select(s > T(0), g, g * fa_exp(s * (T(1) / alpha)));
  }
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T g, T s, T alpha) {
    if (kFromOutput) return g * fa_select(s < T(0), T(1) / alpha, T(0));
    return g * fa_select(s < T(0), fa_exp(s / alpha) / alpha, T(0));
  }
};

// relu_squared: y = relu(x)^2; dx = x > 0 ? 2x*dy : 0.  Saves x (2 sqrt(y) would round).
struct ReluSquared : ActivationBase {
  static constexpr bool streaming_backward(bool) { return true; }
  template <class T> FA_HD static T forward(T x, T) { return fa_select(x <= T(0), T(0), x * x); }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T x, T) {
    return fa_select(x <= T(0), T(0), g * (x + x));
  }
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T g, T x, T) {
    return fa_select(x <= T(0), T(0), g + g);
  }
};

// softplus: y = z > threshold ? x : softplus(z)/beta, z = x*beta (torch's rule and
// comparison; p = beta, q = threshold).  Saves x.
//   dx = z > threshold ? dy : dy*sigmoid(z)
// softplus(z) and the sigmoid are computed without overflow for every z, where torch's
// float log1p(exp(z)) and exp(z)/(exp(z) + 1) give inf and NaN once a threshold above 88
// lets z reach exp's overflow.  NaN stays NaN, in the gradient too.
struct Softplus : ActivationBase2 {
  template <class T> FA_HD static T forward(T x, T beta, T threshold) {
    T z = x * beta;
    // times 1/beta, which the loops compute once: a division per element costs more
    // than the half ULP it saves
    return fa_select(z > threshold, x, fa_softplus(z) * (T(1) / beta));
  }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T x, T beta, T threshold) {
    T z = x * beta;
    return fa_select(z > threshold, g, g * fa_sigmoid(z));
  }
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T g, T x, T beta, T threshold) {
    T z = x * beta;
    T s = fa_sigmoid(z);
    return fa_select(z > threshold, T(0), g * (beta * (s * (T(1) - s))));
  }
};

// hardtanh: y = min(max(x, min_val), max_val) (NaN stays NaN; p = min_val, q = max_val);
// dx = min_val < y < max_val ? dy : 0 (0 for NaN, as torch).  y tells the same as x
// (y <= min_val exactly when x <= min_val), so out of place it saves y; in place a copy
// of x, as torch's hardtanh_ (so that `x = hardtanh(x, inplace=True); x.mul_(2)` still
// has a gradient).  min_val > max_val is refused with torch's message.
struct Hardtanh : ActivationBase2 {
  static constexpr bool kParamValueError = true;
  static constexpr bool streaming_backward(bool) { return true; }
  static bool saves_output(double, double) { return true; }
  static const char* param_error(double min_val, double max_val) {
    return min_val > max_val ? "min_val cannot be greater than max_val" : nullptr;
  }
  template <class T> FA_HD static T forward(T x, T lo, T hi) {
    return fa_select(x <= lo, lo, fa_select(x >= hi, hi, x));
  }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T s, T lo, T hi) {
    return fa_select(s > lo, fa_select(s < hi, g, T(0)), T(0));
  }
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T, T, T, T) { return T(0); }
};

// Every functor called with both parameters: the kernels, the autograd layer and the
// operator layer call Params<F>, which passes q only to the functors that take it.
template <class F> struct Params {
  template <class T> FA_HD static T forward(T x, T p, T q) {
    if constexpr (F::kParams == 2) return F::forward(x, p, q);
    else return F::forward(x, p);
  }
  template <bool kFromOutput, class T> FA_HD static T backward(T g, T s, T p, T q) {
    if constexpr (F::kParams == 2) return F::template backward<kFromOutput>(g, s, p, q);
    else return F::template backward<kFromOutput>(g, s, p);
  }
  template <bool kFromOutput, class T> FA_HD static T grad_saved(T g, T s, T p, T q) {
    if constexpr (F::kParams == 2) return F::template grad_saved<kFromOutput>(g, s, p, q);
    else return F::template grad_saved<kFromOutput>(g, s, p);
  }
  static bool saves_output(double p, double q) {
    if constexpr (F::kParams == 2) return F::saves_output(p, q);
    else return F::saves_output(p);
  }
  static bool inplace_saves_output(double p, double q) {
    if constexpr (F::kParams == 2) return F::inplace_saves_output(p, q);
    else return F::inplace_saves_output(p);
  }
  static const char* param_error(double p, double q) {
    if constexpr (F::kParams == 2) return F::param_error(p, q);
    else return F::param_error(p);
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
  X(swish, Swish)                 \
  X(gelu, Gelu)                   \
  X(gelu_tanh, GeluTanh)          \
  X(mish, Mish)                   \
  X(hardswish, Hardswish)         \
  X(hardsigmoid, Hardsigmoid)     \
  X(selu, Selu)                   \
  X(celu, Celu)                   \
  X(relu_squared, ReluSquared)    \
  X(softplus, Softplus)           \
  X(hardtanh, Hardtanh)

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
