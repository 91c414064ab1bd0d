// fused_act — the math of maxout, written once (host, CUDA device; the CPU SIMD kernels
// use the same rules on vectors, cpu/maxout_impl.h).
//
// maxout(x, pieces, dim): the max over groups of `pieces` consecutive entries along dim.
// A contiguous x is viewed as [outer, groups, pieces, inner] (C = groups * pieces along
// dim, inner = the product of the sizes after dim); y is [outer, groups, inner].
//
// Forward:  y = max_k x_k, NaN propagating: a group holding a NaN gives NaN (as amax).
// What the backward keeps: not x, but one bit per piece, set where x_k == y (the tied
// maxima; none in a NaN group, since NaN == NaN is false): a word per output, of the
// smallest integer type that holds `pieces` bits (uint8 up to 8 pieces, 16 bits up to
// 16, 32 up to 32, 64 up to 64); beyond 64 pieces, ceil(pieces / 64) 64-bit words.
// Backward (torch's amax gradient, grad / count on each maximum):
//   dx_k = (g / count) * bit_k,   count = popcount(mask)
// so a NaN group (count 0) gets (g / 0) * 0 = NaN everywhere, as torch's.  The backward
// is linear in g given the mask; its adjoint, the "gather"
//   out = (sum over set bits of t_k) / count
// is both the tangent of y for an input tangent t (forward AD, as torch's amax jvp) and
// the derivative of the backward with respect to g (double backward).  Both are computed
// in float for half / bfloat16 (opmath).
//
// Mask layout: [outer, groups, words, inner] words of W bits (bit j of word w is piece
// w * W + j); with one word per output (pieces <= 64) it has y's layout.
#pragma once

#include <stdint.h>

#include "activations.h"  // FA_HD

namespace fused_act {

// Bytes of one mask word, and words per output, for `pieces` pieces.
inline int maxout_word_bytes(int64_t pieces) {
  return pieces <= 8 ? 1 : pieces <= 16 ? 2 : pieces <= 32 ? 4 : 8;
}
inline int64_t maxout_words(int64_t pieces) { return pieces <= 64 ? 1 : (pieces + 63) / 64; }

// The max that keeps a NaN from either side (amax's rule).
template <class T> FA_HD T maxout_max(T m, T a) { return (a > m || a != a) ? a : m; }

FA_HD int maxout_popcount(uint64_t v) {
#if defined(__CUDA_ARCH__)
  return __popcll(v);
#else
  return __builtin_popcountll(v);
#endif
}

// The unsigned type of a mask word of B bytes.
template <int B> struct MaxoutWord;
template <> struct MaxoutWord<1> { using type = uint8_t; };
template <> struct MaxoutWord<2> { using type = uint16_t; };
template <> struct MaxoutWord<4> { using type = uint32_t; };
template <> struct MaxoutWord<8> { using type = uint64_t; };

// Calls fn(MaxoutWord<B>{}) with the word size of `pieces` (host code of both devices).
template <class Fn> void visit_word(int64_t pieces, Fn&& fn) {
  switch (maxout_word_bytes(pieces)) {
    case 1: fn(MaxoutWord<1>{}); return;
    case 2: fn(MaxoutWord<2>{}); return;
    case 4: fn(MaxoutWord<4>{}); return;
    default: fn(MaxoutWord<8>{}); return;
  }
}

// One output: x points at its piece 0 (pieces at stride `inner`), mask (null: not
// wanted) at its word 0 (words at stride `inner`).  T: the math type, S: storage, M: word.
template <class T, class S, class M>
FA_HD T maxout_forward_one(const S* x, int64_t inner, int64_t pieces, M* mask) {
  T m = T(x[0]);
  for (int64_t k = 1; k < pieces; ++k) m = maxout_max(m, T(x[k * inner]));
  if (mask) {
    constexpr int kBits = int(sizeof(M)) * 8;
    for (int64_t w = 0; w * kBits < pieces; ++w) {
      M bits = 0;
      for (int j = 0; j < kBits && w * kBits + j < pieces; ++j)
        bits |= M(T(x[(w * kBits + j) * inner]) == m) << j;
      mask[w * inner] = bits;
    }
  }
  return m;
}

template <class M>
FA_HD int maxout_count(const M* mask, int64_t inner, int64_t words) {
  int count = 0;
  for (int64_t w = 0; w < words; ++w) count += maxout_popcount(uint64_t(mask[w * inner]));
  return count;
}

template <class M> FA_HD bool maxout_bit(const M* mask, int64_t inner, int64_t k) {
  constexpr int kBits = int(sizeof(M)) * 8;
  return (mask[(k / kBits) * inner] >> (k % kBits)) & 1;
}

// dx of one output's pieces (dx at stride inner).
template <class T, class S, class M>
FA_HD void maxout_backward_one(T g, const M* mask, S* dx, int64_t inner, int64_t pieces,
                               int64_t words) {
  const T q = g / T(maxout_count(mask, inner, words));
  for (int64_t k = 0; k < pieces; ++k)
    dx[k * inner] = S(q * T(maxout_bit(mask, inner, k) ? 1 : 0));
}

// The gather of one output from the tangent t (at stride inner).
template <class T, class S, class M>
FA_HD T maxout_gather_one(const S* t, const M* mask, int64_t inner, int64_t pieces,
                          int64_t words) {
  T sum = T(0);
  for (int64_t k = 0; k < pieces; ++k)
    if (maxout_bit(mask, inner, k)) sum = sum + T(t[k * inner]);
  return sum / T(maxout_count(mask, inner, words));
}

}  // namespace fused_act
