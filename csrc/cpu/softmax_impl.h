// CPU SIMD row kernels of softmax and log-softmax (formulas in ../softmax.h).  Included
// by kernels_impl.h once per instruction set.
//
// Exp is what a CPU softmax pays for, so each path computes it about once per element.
// Forward, by row length n (kLanes floats per vector):
//   * n <= 4 vectors: softmax rows in registers, several at a time; max, exp, sum,
//     output; log_softmax a vector's worth of rows at a time, their maxima and sums
//     reduced together, one vector log for all of them.
//   * float softmax, longer rows: "blocked" -- per L1-sized block, its max, then
//     y = exp(x - block max) and the block sum; the blocks' (max, sum) merged online;
//     a last pass rescales y in cache.  x is read from memory once, prefetched a block
//     ahead while the exps are computed.
//   * with nt (calls too large for the cache, see kernel_table.h), rows of whole vectors
//     that all start vector-aligned are written with non-temporal stores (y here, dx in the
//     backward); "blocked" then keeps its exps in a scratch row and writes y from it in
//     the last pass.
//   * log_softmax and half / bfloat16 (no float y to keep exps in):
//     n <= kCachedRow: "cached" -- max, sum of exp, output over a row in L1/L2;
//     longer rows: "online" -- two passes over memory, the online (max, sum of exp)
//     state per lane, updated a block of vectors at a time (one rescaling exp per
//     block), merged across lanes; then y = softmax_output(x, m, 1/s or log s).
// Backward (saves y only), two passes: the row sum of dy*y (or dy), then dx; short rows
// a vector's worth at a time, their sums reduced together.
// A tail shorter than one vector is loaded through a padded buffer; in the forward its
// unused lanes are set to -inf, which adds exp(-inf) = 0 to the sum.
#pragma once
#include <float.h>
#include <stdlib.h>

#include "../softmax.h"
#include "kernel_table.h"
#include "simd.h"

namespace fused_act {
namespace cpu {
namespace FA_CPU_CAP {

// An output store: non-temporal when nt (p then aligned to a whole vector of S).
template <class S>
FA_VINLINE void store_out(S* p, Vec v, bool nt) {
  if (nt) return store_nt(p, v);
  store(p, v);
}

// Whether the non-temporal stores asked for can be used on rows of n elements at y: rows
// of whole vectors that all start aligned to one.
template <class S>
static bool nt_rows(bool nt, const S* y, int64_t n) {
  return nt && reinterpret_cast<uintptr_t>(y) % (kLanes * sizeof(S)) == 0 && n % kLanes == 0;
}

constexpr int kRegVecs = 4;               // rows of up to this many vectors stay in registers
constexpr int64_t kCachedRow = 4096;      // longer rows take the online two-pass path
constexpr int kOnlineBlock = 8;            // vectors per rescaling step of the online pass
constexpr int64_t kScratchRow = 1 << 20;  // longest row whose exps get a scratch row (below)

// softmax of kRows short rows of kVecs vectors each (n <= kVecs * kLanes, the last
// vector maybe partial), loaded once into registers: one exp per element.  Several rows
// at a time so that their chains of dependent steps (max, exp, sum, divide) overlap.
template <int kVecs, int kRows, class S>
static void softmax_forward_short(const S* x, S* y, int64_t n, bool nt) {
  const int64_t last = n - (kVecs - 1) * kLanes;  // elements in the last vector
  Vec v[kRows][kVecs], e[kRows][kVecs];
  float row_max[kRows];
  Vec shift[kRows], scale[kRows];
  for (int r = 0; r < kRows; ++r) {
    const S* xr = x + r * n;
    for (int k = 0; k < kVecs - 1; ++k) v[r][k] = load(xr + k * kLanes);
    v[r][kVecs - 1] = last == kLanes ? load(xr + (kVecs - 1) * kLanes)
                                     : load_partial(xr + (kVecs - 1) * kLanes, last, -INFINITY);
  }
  for (int r = 0; r < kRows; ++r) {
    Vec m(softmax_lowest<float>());
    for (int k = 0; k < kVecs; ++k) m = softmax_max(m, v[r][k]);
    row_max[r] = hmax(m);
    shift[r] = Vec(row_max[r]);
  }
  // The rows' maxima and sums in the lanes of two vectors, normalized together.
  float lane_max[kLanes] = {}, lane_sum[kLanes];
  for (int k = 0; k < kLanes; ++k) lane_sum[k] = 1.0f;
  for (int r = 0; r < kRows; ++r) {
    Vec s(0.0f);
    for (int k = 0; k < kVecs; ++k) s = s + (e[r][k] = softmax_exp_term(v[r][k], shift[r]));
    lane_max[r] = row_max[r];
    lane_sum[r] = hsum(s);
  }
  float lane_scale[kLanes];
  store(lane_scale, softmax_norm<false>(load(lane_max), load(lane_sum)).scale);
  for (int r = 0; r < kRows; ++r) scale[r] = Vec(lane_scale[r]);
  for (int r = 0; r < kRows; ++r) {
    S* yr = y + r * n;
    for (int k = 0; k < kVecs; ++k) {
      // exp(x - m) * scale is softmax_output's formula, with the exp already at hand.
      const Vec out = e[r][k] * scale[r];
      if (k < kVecs - 1 || last == kLanes)
        store_out(yr + k * kLanes, out, nt);
      else
        store_partial(yr + k * kLanes, last, out);
    }
  }
}

// log_softmax of `count` <= kLanes short rows of kVecs vectors: the rows' maxima and sums
// of exps reduced together (transpose_max, transpose_sum: hmax's and hsum's bits, a third
// of the shuffles; the lanes of missing rows hold a neutral row), one vector log for all
// the sums, then the output, x - max - log(sum), from the rows read again (in L1).
template <int kVecs, class S>
static void log_softmax_short_block(const S* x, S* y, int64_t count, int64_t n, bool nt) {
  const int64_t last = n - (kVecs - 1) * kLanes;  // elements in the last vector
  auto row_vec = [&](const S* xr, int k) FA_LAMBDA_INLINE -> Vec {
    return k < kVecs - 1 || last == kLanes ? load(xr + k * kLanes)
                                           : load_partial(xr + k * kLanes, last, -INFINITY);
  };
  Vec acc[kLanes];
  for (int r = 0; r < kLanes; ++r) {
    Vec m(softmax_lowest<float>());
    if (r < count)
      for (int k = 0; k < kVecs; ++k) m = softmax_max(m, row_vec(x + r * n, k));
    acc[r] = m;
  }
  float lane_max[kLanes];
  store(lane_max, transpose_max(acc));
  for (int r = 0; r < kLanes; ++r) {
    const Vec shift(lane_max[r]);
    Vec s(1.0f);
    if (r < count) {
      s = Vec(0.0f);
      for (int k = 0; k < kVecs; ++k) s = s + softmax_exp_term(row_vec(x + r * n, k), shift);
    }
    acc[r] = s;
  }
  float lane_scale[kLanes];
  store(lane_scale, softmax_norm<true>(load(lane_max), transpose_sum(acc)).scale);
  for (int64_t r = 0; r < count; ++r) {
    const S* xr = x + r * n;
    S* yr = y + r * n;
    const Vec shift(lane_max[r]), scale(lane_scale[r]);
    for (int k = 0; k < kVecs - 1; ++k)
      store_out(yr + k * kLanes, softmax_output<true>(load(xr + k * kLanes), shift, scale), nt);
    const S* xl = xr + (kVecs - 1) * kLanes;
    if (last == kLanes)
      store_out(yr + (kVecs - 1) * kLanes, softmax_output<true>(load(xl), shift, scale), nt);
    else
      store_partial(yr + (kVecs - 1) * kLanes, last,
                    softmax_output<true>(load_partial(xl, last, 0.0f), shift, scale));
  }
}

// Rows of kVecs vectors, four vectors' worth of rows at a time (their exps stay in
// registers); log_softmax kLanes rows at a time (one log for all of them, the rows'
// maxima and sums reduced together).
template <int kVecs, bool kLog, class S>
static void softmax_forward_short_rows(const S* x, S* y, int64_t rows, int64_t n, bool nt) {
  if constexpr (kLog) {
    for (int64_t r = 0; r < rows; r += kLanes)
      log_softmax_short_block<kVecs>(x + r * n, y + r * n,
                                     rows - r < kLanes ? rows - r : int64_t(kLanes), n, nt);
  } else {
    constexpr int kRows = 4 / kVecs;
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows)
      softmax_forward_short<kVecs, kRows>(x + r * n, y + r * n, n, nt);
    for (; r < rows; ++r) softmax_forward_short<kVecs, 1>(x + r * n, y + r * n, n, nt);
  }
}

// The output pass of a row whose normalization c is known: y = softmax_output(x).
template <bool kLog, class S>
static void softmax_output_row(const S* x, S* y, int64_t n, const SoftmaxNorm<float>& c,
                               bool nt) {
  const Vec shift(c.shift), scale(c.scale);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    store_out(y + i, softmax_output<kLog>(load(x + i), shift, scale), nt);
  if (i < n)
    store_partial(y + i, n - i, softmax_output<kLog>(load_partial(x + i, n - i, 0.0f), shift, scale));
}

// The maximum of n elements (two accumulators; a partial last vector padded with -inf).
template <class S>
static float max_of_row(const S* x, int64_t n) {
  Vec m0(softmax_lowest<float>()), m1 = m0;
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    m0 = softmax_max(m0, load(x + i));
    m1 = softmax_max(m1, load(x + i + kLanes));
  }
  for (; i + kLanes <= n; i += kLanes) m0 = softmax_max(m0, load(x + i));
  if (i < n) m0 = softmax_max(m0, load_partial(x + i, n - i, -INFINITY));
  return hmax(softmax_max(m0, m1));
}

// A row that stays in cache between passes (log_softmax, or half / bfloat16 storage):
// max, then the sum of exp, then the output.  One exp per element for log_softmax.
template <bool kLog, class S>
static void softmax_forward_cached(const S* x, S* y, int64_t n, bool nt) {
  const float max = max_of_row(x, n);
  const Vec vmax(max);
  Vec s0(0.0f), s1(0.0f);
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    s0 = s0 + softmax_exp_term(load(x + i), vmax);
    s1 = s1 + softmax_exp_term(load(x + i + kLanes), vmax);
  }
  for (; i + kLanes <= n; i += kLanes) s0 = s0 + softmax_exp_term(load(x + i), vmax);
  if (i < n) s0 = s0 + softmax_exp_term(load_partial(x + i, n - i, -INFINITY), vmax);
  const SoftmaxNorm<float> c = softmax_norm<kLog>(max, hsum(s0 + s1));
  softmax_output_row<kLog>(x, y, n, c, nt);
}

// Float softmax of a row longer than the register path, in blocks of up to kBlockElems
// (at least n / kMaxBlocks) elements that stay in L1: per block, its max b_j, then
// e = exp(x - b_j) and the block sum s_j.  Merging the blocks' (b_j, s_j) online gives
// (m, s); a last pass over e (in cache) writes y = e * exp(b_j - m) / s for block j.
// One exp per element and one read of x from memory.  e is y itself, or with nt a
// scratch row that stays in cache while y is written non-temporally.
constexpr int64_t kBlockElems = 2048;
constexpr int kMaxBlocks = 64;

static void softmax_forward_blocked(const float* x, float* y, int64_t n, float* e, bool nt) {
  int64_t block = (n + kMaxBlocks - 1) / kMaxBlocks;
  block = block < kBlockElems ? kBlockElems : (block + kLanes - 1) / kLanes * kLanes;
  float block_max[kMaxBlocks];
  float m = softmax_lowest<float>(), s = 0.0f;
  int nb = 0;
  for (int64_t b = 0; b < n; b += block, ++nb) {
    const int64_t len = n - b < block ? n - b : block;
    const float* xb = x + b;
    float* eb = e + b;
    const float bm = max_of_row(xb, len);
    const Vec vbm(bm);
    Vec s0(0.0f), s1(0.0f);
    int64_t i = 0;
    for (; i + 2 * kLanes <= len; i += 2 * kLanes) {
      // The next block (of this row or the next: rows are contiguous) is fetched while
      // this one computes its exps, so its max pass reads from cache; so is the y it
      // will write, unless y is written non-temporally.
      for (int64_t k = 0; k < 2 * kLanes; k += 16) {  // one prefetch per 64-byte line
        __builtin_prefetch(xb + len + i + k, 0, 3);
        if (!nt) __builtin_prefetch(y + b + len + i + k, 1, 3);
      }
      const Vec e0 = softmax_exp_term(load(xb + i), vbm);
      const Vec e1 = softmax_exp_term(load(xb + i + kLanes), vbm);
      store(eb + i, e0);
      store(eb + i + kLanes, e1);
      s0 = s0 + e0;
      s1 = s1 + e1;
    }
    for (; i + kLanes <= len; i += kLanes) {
      const Vec e0 = softmax_exp_term(load(xb + i), vbm);
      store(eb + i, e0);
      s0 = s0 + e0;
    }
    if (i < len) {
      const Vec e0 = softmax_exp_term(load_partial(xb + i, len - i, -INFINITY), vbm);
      store_partial(eb + i, len - i, e0);
      s0 = s0 + e0;
    }
    block_max[nb] = bm;
    softmax_online_merge(m, s, bm, hsum(s0 + s1));
  }
  const SoftmaxNorm<float> c = softmax_norm<false>(m, s);
  for (int j = 0; j < nb; ++j) {
    // softmax_output(x) = exp(x - b_j) * exp(b_j - m) * scale.
    const Vec factor(softmax_exp_term(block_max[j], c.shift) * c.scale);
    const float* eb = e + j * block;
    float* yb = y + j * block;
    const int64_t len = n - j * block < block ? n - j * block : block;
    int64_t i = 0;
    for (; i + kLanes <= len; i += kLanes) store_out(yb + i, load(eb + i) * factor, nt);
    if (i < len) store_partial(yb + i, len - i, load_partial(eb + i, len - i, 0.0f) * factor);
  }
}

// A long row: the online (max, sum) state per lane, updated a block of kOnlineBlock vectors
// at a time (one rescaling exp per block), merged across lanes; then the output pass.  Two
// passes over memory instead of three.
template <bool kLog, class S>
static void softmax_forward_online(const S* x, S* y, int64_t n, bool nt) {
  Vec m(softmax_lowest<float>()), s(0.0f);
  int64_t i = 0;
  for (; i + kOnlineBlock * kLanes <= n; i += kOnlineBlock * kLanes) {
    Vec v[kOnlineBlock];
    for (int k = 0; k < kOnlineBlock; ++k) v[k] = load(x + i + k * kLanes);
    Vec bm = softmax_max(v[0], v[1]);
    for (int k = 2; k < kOnlineBlock; ++k) bm = softmax_max(bm, v[k]);
    softmax_rescale(m, s, softmax_max(m, bm));
    // The block's terms summed pairwise first: fewer roundings of the large running sum.
    Vec e[kOnlineBlock];
    for (int k = 0; k < kOnlineBlock; ++k) e[k] = softmax_exp_term(v[k], m);
    for (int w = kOnlineBlock / 2; w > 0; w /= 2)
      for (int k = 0; k < w; ++k) e[k] = e[k] + e[k + w];
    s = s + e[0];
  }
  for (; i + kLanes <= n; i += kLanes) softmax_online_update(m, s, load(x + i));
  if (i < n) softmax_online_update(m, s, load_partial(x + i, n - i, -INFINITY));

  // Merge the lanes: max over lanes, then each lane's sum rescaled to it.
  const float row_max = hmax(m);
  const float row_sum = hsum(s * fa_exp_nonpositive(m - Vec(row_max)));
  const SoftmaxNorm<float> c = softmax_norm<kLog>(row_max, row_sum);
  softmax_output_row<kLog>(x, y, n, c, nt);
}

// Forward of `rows` rows of n elements, by row length; nt asks for non-temporal stores of
// y (used where nt_rows allows).
template <bool kLog, class S>
static void softmax_forward_rows(const S* x, S* y, int64_t rows, int64_t n, bool nt) {
  static_assert(kRegVecs == 4, "one case per number of vectors");
  nt = nt_rows(nt, y, n);
  float* scratch = nullptr;
  switch ((n + kLanes - 1) / kLanes) {
    case 1: softmax_forward_short_rows<1, kLog>(x, y, rows, n, nt); break;
    case 2: softmax_forward_short_rows<2, kLog>(x, y, rows, n, nt); break;
    case 3: softmax_forward_short_rows<3, kLog>(x, y, rows, n, nt); break;
    case 4: softmax_forward_short_rows<4, kLog>(x, y, rows, n, nt); break;
    default:
      if constexpr (!kLog && sizeof(S) == sizeof(float)) {
        if (nt && n <= kScratchRow) scratch = static_cast<float*>(malloc(n * sizeof(float)));
        const bool nt_blocked = scratch != nullptr;
        for (int64_t r = 0; r < rows; ++r)
          softmax_forward_blocked(x + r * n, y + r * n, n, nt_blocked ? scratch : y + r * n,
                                  nt_blocked);
        free(scratch);
      } else {
        for (int64_t r = 0; r < rows; ++r) {
          if (n <= kCachedRow)
            softmax_forward_cached<kLog>(x + r * n, y + r * n, n, nt);
          else
            softmax_forward_online<kLog>(x + r * n, y + r * n, n, nt);
        }
      }
  }
}

// Backward of `count` <= kLanes short rows of kVecs vectors: each row's vector of partial
// sums, the kLanes sums reduced together (transpose_sum: the same bits as one hsum per
// row, a third of the shuffles; missing rows' lanes hold zeros), then dx from g and y read
// again (still in L1).
template <int kVecs, bool kLog, class S>
static void softmax_backward_short_block(const S* g, const S* y, S* dx, int64_t count,
                                         int64_t n, bool nt) {
  const int64_t last = n - (kVecs - 1) * kLanes;  // elements in the last vector
  // Zero padding of a partial last vector: a zero gradient adds nothing.
  auto row_vec = [&](const S* p, int k) FA_LAMBDA_INLINE -> Vec {
    return k < kVecs - 1 || last == kLanes ? load(p + k * kLanes)
                                           : load_partial(p + k * kLanes, last, 0.0f);
  };
  Vec acc[kLanes];
  for (int r = 0; r < kLanes; ++r) {
    Vec a(0.0f);
    if (r < count)
      for (int k = 0; k < kVecs; ++k)
        a = a + softmax_backward_term<kLog>(row_vec(g + r * n, k), row_vec(y + r * n, k));
    acc[r] = a;
  }
  float sums[kLanes];
  store(sums, transpose_sum(acc));
  for (int64_t r = 0; r < count; ++r) {
    const S* gr = g + r * n;
    const S* yr = y + r * n;
    S* dr = dx + r * n;
    const Vec sum(sums[r]);
    for (int k = 0; k < kVecs; ++k) {
      const Vec out = softmax_backward_output<kLog>(row_vec(gr, k), row_vec(yr, k), sum);
      if (k < kVecs - 1 || last == kLanes)
        store_out(dr + k * kLanes, out, nt);
      else
        store_partial(dr + k * kLanes, last, out);
    }
  }
}

template <int kVecs, bool kLog, class S>
static void softmax_backward_short_rows(const S* g, const S* y, S* dx, int64_t rows, int64_t n,
                                        bool nt) {
  for (int64_t r = 0; r < rows; r += kLanes)
    softmax_backward_short_block<kVecs, kLog>(g + r * n, y + r * n, dx + r * n,
                                              rows - r < kLanes ? rows - r : int64_t(kLanes), n,
                                              nt);
}

template <bool kLog, class S>
static void softmax_backward_row(const S* g, const S* y, S* dx, int64_t n, bool nt) {
  Vec acc[4] = {Vec(0.0f), Vec(0.0f), Vec(0.0f), Vec(0.0f)};
  int64_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes)
    for (int k = 0; k < 4; ++k)
      acc[k] = acc[k] + softmax_backward_term<kLog>(load(g + i + k * kLanes), load(y + i + k * kLanes));
  for (; i + kLanes <= n; i += kLanes)
    acc[0] = acc[0] + softmax_backward_term<kLog>(load(g + i), load(y + i));
  if (i < n)  // zero padding: a zero gradient adds nothing
    acc[1] = acc[1] + softmax_backward_term<kLog>(load_partial(g + i, n - i, 0.0f),
                                                  load_partial(y + i, n - i, 0.0f));
  const Vec sum(hsum((acc[0] + acc[1]) + (acc[2] + acc[3])));
  i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    store_out(dx + i, softmax_backward_output<kLog>(load(g + i), load(y + i), sum), nt);
    store_out(dx + i + kLanes,
              softmax_backward_output<kLog>(load(g + i + kLanes), load(y + i + kLanes), sum), nt);
  }
  for (; i + kLanes <= n; i += kLanes)
    store_out(dx + i, softmax_backward_output<kLog>(load(g + i), load(y + i), sum), nt);
  if (i < n)
    store_partial(dx + i, n - i,
                  softmax_backward_output<kLog>(load_partial(g + i, n - i, 0.0f),
                                                load_partial(y + i, n - i, 0.0f), sum));
}

// Backward of `rows` rows of n elements, by row length; nt as in softmax_forward_rows.
template <bool kLog, class S>
static void softmax_backward_rows(const S* g, const S* y, S* dx, int64_t rows, int64_t n,
                                  bool nt) {
  nt = nt_rows(nt, dx, n);
  switch ((n + kLanes - 1) / kLanes) {
    case 1: softmax_backward_short_rows<1, kLog>(g, y, dx, rows, n, nt); break;
    case 2: softmax_backward_short_rows<2, kLog>(g, y, dx, rows, n, nt); break;
    case 3: softmax_backward_short_rows<3, kLog>(g, y, dx, rows, n, nt); break;
    case 4: softmax_backward_short_rows<4, kLog>(g, y, dx, rows, n, nt); break;
    default:
      for (int64_t r = 0; r < rows; ++r)
        softmax_backward_row<kLog>(g + r * n, y + r * n, dx + r * n, n, nt);
  }
}

// Softmax along a dim that is not the last: n values at stride `inner`, for columns
// [c0, c1) of one outer slice.  Lanes hold neighbouring columns, so max and sum need no
// horizontal step; three passes down the columns (max, sum of exp, output).
template <bool kLog, class S>
static void softmax_forward_columns(const S* x, S* y, int64_t n, int64_t inner, int64_t c0,
                                    int64_t c1) {
  for (int64_t c = c0; c < c1; c += kLanes) {
    const int64_t w = c1 - c < kLanes ? c1 - c : kLanes;
    auto ld = [&](int64_t k) {
      return w == kLanes ? load(x + k * inner + c) : load_partial(x + k * inner + c, w, 0.0f);
    };
    Vec m(softmax_lowest<float>()), s(0.0f);
    for (int64_t k = 0; k < n; ++k) m = softmax_max(m, ld(k));
    for (int64_t k = 0; k < n; ++k) s = s + softmax_exp_term(ld(k), m);
    const SoftmaxNorm<Vec> nm = softmax_norm<kLog>(m, s);
    for (int64_t k = 0; k < n; ++k) {
      const Vec out = softmax_output<kLog>(ld(k), nm.shift, nm.scale);
      if (w == kLanes)
        store(y + k * inner + c, out);
      else
        store_partial(y + k * inner + c, w, out);
    }
  }
}

template <bool kLog, class S>
static void softmax_backward_columns(const S* g, const S* y, S* dx, int64_t n, int64_t inner,
                                     int64_t c0, int64_t c1) {
  for (int64_t c = c0; c < c1; c += kLanes) {
    const int64_t w = c1 - c < kLanes ? c1 - c : kLanes;
    auto ld = [&](const S* p, int64_t k) {
      return w == kLanes ? load(p + k * inner + c) : load_partial(p + k * inner + c, w, 0.0f);
    };
    Vec sum(0.0f);
    for (int64_t k = 0; k < n; ++k) sum = sum + softmax_backward_term<kLog>(ld(g, k), ld(y, k));
    for (int64_t k = 0; k < n; ++k) {
      const Vec out = softmax_backward_output<kLog>(ld(g, k), ld(y, k), sum);
      if (w == kLanes)
        store(dx + k * inner + c, out);
      else
        store_partial(dx + k * inner + c, w, out);
    }
  }
}

static void softmax_forward_inner(Storage st, bool log, const void* x, void* y, int64_t n,
                                  int64_t inner, int64_t c0, int64_t c1) {
  visit_storage(st, [&](auto t) {
    using S = typename decltype(t)::type;
    if (log)
      softmax_forward_columns<true>(static_cast<const S*>(x), static_cast<S*>(y), n, inner, c0, c1);
    else
      softmax_forward_columns<false>(static_cast<const S*>(x), static_cast<S*>(y), n, inner, c0, c1);
  });
}

static void softmax_backward_inner(Storage st, bool log, const void* g, const void* y, void* dx,
                                   int64_t n, int64_t inner, int64_t c0, int64_t c1) {
  visit_storage(st, [&](auto t) {
    using S = typename decltype(t)::type;
    auto gp = static_cast<const S*>(g);
    auto yp = static_cast<const S*>(y);
    auto dp = static_cast<S*>(dx);
    if (log)
      softmax_backward_columns<true>(gp, yp, dp, n, inner, c0, c1);
    else
      softmax_backward_columns<false>(gp, yp, dp, n, inner, c0, c1);
  });
}

static void softmax_forward(Storage st, bool log, const void* x, void* y, int64_t rows,
                            int64_t n, bool nt) {
  visit_storage(st, [&](auto t) {
    using S = typename decltype(t)::type;
    const S* xp = static_cast<const S*>(x);
    S* yp = static_cast<S*>(y);
    if (log)
      softmax_forward_rows<true>(xp, yp, rows, n, nt);
    else
      softmax_forward_rows<false>(xp, yp, rows, n, nt);
  });
}

static void softmax_backward(Storage st, bool log, const void* g, const void* y, void* dx,
                             int64_t rows, int64_t n, bool nt) {
  visit_storage(st, [&](auto t) {
    using S = typename decltype(t)::type;
    const S* gp = static_cast<const S*>(g);
    const S* yp = static_cast<const S*>(y);
    S* dp = static_cast<S*>(dx);
    if (log)
      softmax_backward_rows<true>(gp, yp, dp, rows, n, nt);
    else
      softmax_backward_rows<false>(gp, yp, dp, rows, n, nt);
  });
}

}  // namespace FA_CPU_CAP
}  // namespace cpu
}  // namespace fused_act
