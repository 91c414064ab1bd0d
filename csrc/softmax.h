// fused_act — the math of softmax and log-softmax over one row, written once.
//
// Forward, for a row x (n values), with m = max x and s = sum exp(x - m):
//   softmax:     y = exp(x - m) / s
//   log_softmax: y = (x - m) - log(s)
// Backward saves only the output y:
//   softmax:     dx = y * (dy - sum(dy * y))
//   log_softmax: dx = dy - exp(y) * sum(dy)
//
// (m, s) is computed online: a running state (m, s) absorbs a value or a block of values
// with max m' = max(m, block max) and s' = s * exp(m - m') + sum exp(x - m'), so one pass
// over the row gives both.  The state starts at m = lowest finite value (not -inf), so
// that -inf entries contribute exp(-inf) = 0 without ever computing -inf - (-inf).
// Consequences, as in torch: a row that is all -inf ends with s = 0 and gives NaN
// (0 * inf) everywhere; a NaN anywhere makes s NaN and the whole row NaN; +inf entries
// give NaN.  Values near the float limits (+-3e38) do not overflow: x - m <= 0 always.
//
// T is float or double (host and CUDA device) or a CPU SIMD vector of floats (see
// cpu/simd.h); half and bfloat16 are computed in float.  The horizontal steps (the
// normalization constants of softmax_norm) take scalars.
#pragma once

#include <cfloat>
#include <cmath>

#include "activations.h"

namespace fused_act {

FA_HD float fa_log(float x) { return ::logf(x); }
FA_HD double fa_log(double x) { return ::log(x); }

// exp(t) for t <= 0 (or NaN): the CPU SIMD kernels use a cheaper exp for this range
// (cpu/simd.h: fa_exp_nonpositive, results below 2^-126 flushed to 0); scalars use exp.
FA_HD float fa_exp_nonpositive(float t) { return fa_exp(t); }
FA_HD double fa_exp_nonpositive(double t) { return fa_exp(t); }

// The starting max of the online state: the lowest finite value of the type.
template <class T> FA_HD T softmax_lowest();
template <> FA_HD float softmax_lowest<float>() { return -FLT_MAX; }
template <> FA_HD double softmax_lowest<double>() { return -DBL_MAX; }

// max(a, b) that keeps a when b is NaN; the NaN still reaches the sum through exp.
template <class T> FA_HD T softmax_max(T a, T b) { return fa_select(b > a, b, a); }

// Moves the running state (m, s) to a new max m_new >= m.
template <class T> FA_HD void softmax_rescale(T& m, T& s, T m_new) {
  s = s * fa_exp_nonpositive(m - m_new);
  m = m_new;
}

// One term of the sum of exponentials, relative to the state's max.
template <class T> FA_HD T softmax_exp_term(T x, T m) { return fa_exp_nonpositive(x - m); }

// The online update with one value.
template <class T> FA_HD void softmax_online_update(T& m, T& s, T x) {
  softmax_rescale(m, s, softmax_max(m, x));
  s = s + softmax_exp_term(x, m);
}

// Merges the state (m2, s2) into (m, s) (reductions across lanes, threads, warps).
template <class T> FA_HD void softmax_online_merge(T& m, T& s, T m2, T s2) {
  const T m_new = softmax_max(m, m2);
  s = s * fa_exp_nonpositive(m - m_new) + s2 * fa_exp_nonpositive(m2 - m_new);
  m = m_new;
}

// The per-row constants of the output formula: shift = m, and scale = 1/s (softmax)
// or log(s) (log_softmax).
template <class T> struct SoftmaxNorm {
  T shift, scale;
};

template <bool kLog, class T> FA_HD SoftmaxNorm<T> softmax_norm(T m, T s) {
  return {m, kLog ? fa_log(s) : T(1) / s};
}

// y from x and the row's constants (n.shift and n.scale may be SIMD splats of them).
template <bool kLog, class T> FA_HD T softmax_output(T x, T shift, T scale) {
  const T t = x - shift;
  return kLog ? t - scale : fa_exp_nonpositive(t) * scale;
}

// Backward: the term summed over the row, then dx from it.
template <bool kLog, class T> FA_HD T softmax_backward_term(T dy, T y) {
  return kLog ? dy : dy * y;
}

template <bool kLog, class T> FA_HD T softmax_backward_output(T dy, T y, T sum) {
  // y <= 0 for log_softmax's output.
  return kLog ? dy - fa_exp_nonpositive(y) * sum : y * (dy - sum);
}

}  // namespace fused_act
