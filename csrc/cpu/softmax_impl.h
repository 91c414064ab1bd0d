// CPU SIMD row kernels of softmax and log-softmax (formulas in ../softmax.h).  Included
// by kernels_impl.h once per instruction set.
//
// Forward, two passes over each row:
//   1. the online (max, sum of exp) state, one per lane, updated a block of kBlock
//      vectors at a time (one rescaling exp per block, not per element), then merged
//      across lanes;
//   2. y = softmax_output(x, m, 1/s or log s).
// Backward (saves y only), two passes: the row sum of dy*y (or dy), then dx.
// A tail shorter than one vector is loaded through a padded buffer; in the forward its
// unused lanes are set to -inf, which adds exp(-inf) = 0 to the sum.
#pragma once
#include <float.h>

#include "../softmax.h"
#include "kernel_table.h"
#include "simd.h"

namespace fused_act {
namespace cpu {
namespace FA_CPU_CAP {

// Loads the n < kLanes elements at p; the other lanes get `fill`.
template <class S>
static inline Vec load_partial(const S* p, int64_t n, float fill) {
  S buf[kLanes];
  memset(buf, 0, sizeof(buf));
  memcpy(buf, p, n * sizeof(S));
  return fa_select(lane_index() < Vec(float(n)), load(buf), Vec(fill));
}

template <class S>
static inline void store_partial(S* p, int64_t n, Vec v) {
  S buf[kLanes];
  store(buf, v);
  memcpy(p, buf, n * sizeof(S));
}

template <bool kLog, class S>
static void softmax_forward_row(const S* x, S* y, int64_t n) {
  constexpr int kBlock = 4;
  Vec m(softmax_lowest<float>()), s(0.0f);
  int64_t i = 0;
  for (; i + kBlock * kLanes <= n; i += kBlock * kLanes) {
    Vec v[kBlock];
    for (int k = 0; k < kBlock; ++k) v[k] = load(x + i + k * kLanes);
    Vec bm = softmax_max(v[0], v[1]);
    for (int k = 2; k < kBlock; ++k) bm = softmax_max(bm, v[k]);
    softmax_rescale(m, s, softmax_max(m, bm));
    for (int k = 0; k < kBlock; ++k) s = s + softmax_exp_term(v[k], m);
  }
  for (; i + kLanes <= n; i += kLanes) softmax_online_update(m, s, load(x + i));
  if (i < n) softmax_online_update(m, s, load_partial(x + i, n - i, -INFINITY));

  // Merge the lanes: max over lanes, then each lane's sum rescaled to it.
  const float row_max = hmax(m);
  const float row_sum = hsum(s * fa_exp(m - Vec(row_max)));
  const SoftmaxNorm<float> c = softmax_norm<kLog>(row_max, row_sum);
  const Vec shift(c.shift), scale(c.scale);
  i = 0;
  for (; i + kLanes <= n; i += kLanes)
    store(y + i, softmax_output<kLog>(load(x + i), shift, scale));
  if (i < n)
    store_partial(y + i, n - i, softmax_output<kLog>(load_partial(x + i, n - i, 0.0f), shift, scale));
}

template <bool kLog, class S>
static void softmax_backward_row(const S* g, const S* y, S* dx, int64_t n) {
  Vec acc0(0.0f), acc1(0.0f);
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    acc0 = acc0 + softmax_backward_term<kLog>(load(g + i), load(y + i));
    acc1 = acc1 + softmax_backward_term<kLog>(load(g + i + kLanes), load(y + i + kLanes));
  }
  for (; i + kLanes <= n; i += kLanes)
    acc0 = acc0 + softmax_backward_term<kLog>(load(g + i), load(y + i));
  if (i < n)  // zero padding: a zero gradient adds nothing
    acc0 = acc0 + softmax_backward_term<kLog>(load_partial(g + i, n - i, 0.0f),
                                              load_partial(y + i, n - i, 0.0f));
  const Vec sum(hsum(acc0 + acc1));
  i = 0;
  for (; i + kLanes <= n; i += kLanes)
    store(dx + i, softmax_backward_output<kLog>(load(g + i), load(y + i), sum));
  if (i < n)
    store_partial(dx + i, n - i,
                  softmax_backward_output<kLog>(load_partial(g + i, n - i, 0.0f),
                                                load_partial(y + i, n - i, 0.0f), sum));
}

static void softmax_forward(Storage st, bool log, const void* x, void* y, int64_t rows,
                            int64_t n) {
  visit_storage(st, [&](auto t) {
    using S = typename decltype(t)::type;
    const S* xp = static_cast<const S*>(x);
    S* yp = static_cast<S*>(y);
    for (int64_t r = 0; r < rows; ++r) {
      if (log)
        softmax_forward_row<true>(xp + r * n, yp + r * n, n);
      else
        softmax_forward_row<false>(xp + r * n, yp + r * n, n);
    }
  });
}

static void softmax_backward(Storage st, bool log, const void* g, const void* y, void* dx,
                             int64_t rows, int64_t n) {
  visit_storage(st, [&](auto t) {
    using S = typename decltype(t)::type;
    const S* gp = static_cast<const S*>(g);
    const S* yp = static_cast<const S*>(y);
    S* dp = static_cast<S*>(dx);
    for (int64_t r = 0; r < rows; ++r) {
      if (log)
        softmax_backward_row<true>(gp + r * n, yp + r * n, dp + r * n, n);
      else
        softmax_backward_row<false>(gp + r * n, yp + r * n, dp + r * n, n);
    }
  });
}

}  // namespace FA_CPU_CAP
}  // namespace cpu
}  // namespace fused_act
