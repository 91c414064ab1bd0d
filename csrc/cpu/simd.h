// A small SIMD vector of floats for the CPU kernels, written with GCC/Clang vector
// extensions so the same source compiles to AVX-512, AVX2 or SSE code depending on the
// translation unit that includes it (see capability_*.cpp).  Everything lives in the
// namespace FA_CPU_CAP so the instantiations of different units never meet at link time.
//
// fa_exp / fa_expm1 / fa_tanh are accurate to a few ULP over the whole float range,
// subnormal results included, and propagate NaN.
#pragma once
#include <stdint.h>
#include <string.h>

#include <cmath>
#include <utility>

#include "../activations.h"
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if !defined(FA_CPU_CAP) || !defined(FA_VEC_BYTES)
#error "define FA_CPU_CAP and FA_VEC_BYTES before including simd.h"
#endif

// Every helper here is inlined: a call would spill the vector registers around it.
#ifndef FA_VINLINE
#define FA_VINLINE static inline __attribute__((always_inline))
#endif

namespace fused_act {
namespace cpu {
namespace FA_CPU_CAP {

constexpr int kLanes = FA_VEC_BYTES / 4;
typedef float vf __attribute__((vector_size(FA_VEC_BYTES)));
typedef int32_t vi __attribute__((vector_size(FA_VEC_BYTES)));
typedef uint32_t vu __attribute__((vector_size(FA_VEC_BYTES)));
typedef uint16_t vh __attribute__((vector_size(FA_VEC_BYTES / 2)));

FA_VINLINE vf splat(float s) { return vf{} + s; }
FA_VINLINE vi splati(int32_t s) { return vi{} + s; }
FA_VINLINE vu splatu(uint32_t s) { return vu{} + s; }

struct Mask { vi m; };

struct Vec {
  vf v;
  Vec() = default;
  Vec(vf a) : v(a) {}
  Vec(float s) : v(splat(s)) {}
  Vec(int s) : v(splat(float(s))) {}
  Vec(double s) : v(splat(float(s))) {}  // a constant of activations.h
};

FA_VINLINE Vec operator+(Vec a, Vec b) { return a.v + b.v; }
FA_VINLINE Vec operator-(Vec a, Vec b) { return a.v - b.v; }
FA_VINLINE Vec operator*(Vec a, Vec b) { return a.v * b.v; }
FA_VINLINE Vec operator/(Vec a, Vec b) { return a.v / b.v; }
FA_VINLINE Vec operator-(Vec a) { return -a.v; }
// IEEE ordered comparisons: false when either side is NaN, as in scalar C++.
FA_VINLINE Mask operator<=(Vec a, Vec b) { return {a.v <= b.v}; }
FA_VINLINE Mask operator>=(Vec a, Vec b) { return {a.v >= b.v}; }
FA_VINLINE Mask operator<(Vec a, Vec b) { return {a.v < b.v}; }
FA_VINLINE Mask operator>(Vec a, Vec b) { return {a.v > b.v}; }
FA_VINLINE Vec fa_select(Mask c, Vec a, Vec b) { return c.m ? a.v : b.v; }

// min(v, hi) and max(v, lo) that keep NaN (a NaN compares false and is kept).  x86's
// min/max instructions return their second operand when either is NaN (or both are
// zeros), so min(hi, v) and max(lo, v) are exactly the selects below in one instruction
// each (GCC emits a compare and a blend for them).
FA_VINLINE vf min_keep_nan(vf v, float hi) {
#if FA_VEC_BYTES == 64 && defined(FA_HAVE_AVX512)
  return (vf)_mm512_min_ps((__m512)splat(hi), (__m512)v);
#elif FA_VEC_BYTES == 32 && defined(FA_HAVE_AVX2)
  return (vf)_mm256_min_ps((__m256)splat(hi), (__m256)v);
#elif FA_VEC_BYTES == 16 && defined(__SSE__)
  return (vf)_mm_min_ps((__m128)splat(hi), (__m128)v);
#else
  return v > splat(hi) ? splat(hi) : v;
#endif
}
FA_VINLINE vf max_keep_nan(vf v, float lo) {
#if FA_VEC_BYTES == 64 && defined(FA_HAVE_AVX512)
  return (vf)_mm512_max_ps((__m512)splat(lo), (__m512)v);
#elif FA_VEC_BYTES == 32 && defined(FA_HAVE_AVX2)
  return (vf)_mm256_max_ps((__m256)splat(lo), (__m256)v);
#elif FA_VEC_BYTES == 16 && defined(__SSE__)
  return (vf)_mm_max_ps((__m128)splat(lo), (__m128)v);
#else
  return v < splat(lo) ? splat(lo) : v;
#endif
}
FA_VINLINE vf clamp_keep_nan(vf v, float lo, float hi) {
  return max_keep_nan(min_keep_nan(v, hi), lo);
}

// 2^n for integer n in [-126, 127], built from the exponent bits.
FA_VINLINE vf pow2i(vi n) { return (vf)((n + 127) << 23); }

// x = n*ln2 + r with |r| <= ln2/2; returns r and n, n both as float and as int.
// n is rounded with the 1.5*2^23 trick, which reads the integer off the float's bits.
FA_VINLINE vf reduce_ln2(vf v, vf* n, vi* ni) {
  const float magic = 12582912.0f;
  vf t = v * 1.44269504088896341f + magic;
  *ni = (vi)t - (vi)splat(magic);
  *n = t - magic;
  vf r = v - *n * 0.693359375f;  // ln2 split in two so n*ln2_hi is exact
  return r - *n * -2.12194440e-4f;
}

// exp(r) - 1 on |r| <= ln2/2 (Cephes' minimax polynomial, about 1 ULP).
FA_VINLINE vf expm1_reduced(vf r) {
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * (r * r) + r;
}

FA_VINLINE Vec fa_exp(Vec x) {
  // Above 88.8 the result is inf, below -104 it rounds to 0.
  vf v = clamp_keep_nan(x.v, -104.0f, 88.8f);
  vf n;
  vi ni;
  vf r = reduce_ln2(v, &n, &ni);
  vf e = expm1_reduced(r) + 1.0f;
  // n is in [-150, 128]: scale in two halves so subnormal results round only once.
  vi n1 = ni >> 1;
  return e * pow2i(n1) * pow2i(ni - n1);
}

// exp(x) for x <= 0 (softmax's exp(x - max)), about half the work of fa_exp.  x = n*ln2 + t
// with |t| <= ln2/2 (round-to-nearest by adding 1.5*2^23 + 127, whose low bits then hold
// n + 127, the exponent of 2^n; ln2 split in two so n*ln2_hi is exact), and
// exp(t) = 1 + t*p(t) with p of degree 4 fitted here for the least maximum relative error
// on [-ln2/2, ln2/2] (Lawson's iteration; 9.1e-8 before rounding the coefficients to
// float).  The scaling by 2^n is folded into the last FMA.  Results below 2^-126
// (x < -87.34) are flushed to 0, an absolute error under 1.2e-38; -inf gives 0, NaN
// stays NaN.  Also correct for 0 < x < 88.
FA_VINLINE Vec fa_exp_nonpositive(Vec x) {
  const vf v = x.v;
  vf n = v * 1.44269504088896341f + 0x1.8000FEp23f;  // 1.5*2^23 + 127: rounds, adds the bias
  const vf scale = (vf)((vi)n << 23);               // 2^round(x/ln2)
  n = n - 0x1.8000FEp23f;
  vf t = v - n * 0x1.62E400p-1f;               // ln2 in two parts
  t = t - n * 0x1.7F7D1Cp-20f;
  vf p = splat(0x1.0FA834p-7f);
  p = p * t + 0x1.573A54p-5f;
  p = p * t + 0x1.555A6Ap-3f;
  p = p * t + 0x1.FFFDC6p-2f;
  p = p * t + 0x1.FFFFF6p-1f;
  const vf e = (t * scale) * p + scale;
  return v < splat(-0x1.5D589Ep6f) ? splat(0.0f) : e;
}

// Whether every lane of the mask is set.
FA_VINLINE bool all_lanes(Mask m) {
#if defined(FA_HAVE_AVX512)
  return _mm512_test_epi32_mask((__m512i)m.m, (__m512i)m.m) == 0xFFFF;
#elif defined(FA_HAVE_AVX2)
  return _mm256_movemask_ps((__m256)m.m) == 0xFF;
#elif defined(__SSE__) && FA_VEC_BYTES == 16
  return _mm_movemask_ps((__m128)m.m) == 0xF;
#else
  int32_t lanes[kLanes];
  memcpy(lanes, &m.m, sizeof(lanes));
  int32_t all = -1;
  for (int k = 0; k < kLanes; ++k) all &= lanes[k];
  return all == -1;
#endif
}

// Whether any lane of the mask is set.
FA_VINLINE bool any_lane(Mask m) {
#if defined(FA_HAVE_AVX512)  // set by capability_avx512.cpp (the target pragma sets no macro)
  return _mm512_test_epi32_mask((__m512i)m.m, (__m512i)m.m) != 0;
#elif defined(FA_HAVE_AVX2)
  return _mm256_movemask_ps((__m256)m.m) != 0;
#elif defined(__SSE__) && FA_VEC_BYTES == 16
  return _mm_movemask_ps((__m128)m.m) != 0;
#else
  int32_t lanes[kLanes];
  memcpy(lanes, &m.m, sizeof(lanes));
  int32_t any = 0;
  for (int k = 0; k < kLanes; ++k) any |= lanes[k];
  return any != 0;
#endif
}

// Whether every lane of v is below c / at most c, and whether any lane is below c (false
// for a NaN lane, as the vector comparisons).  For the rare-lane checks of the formulas:
// with AVX-512 one compare into a mask register, where a vector mask costs a compare, a
// masked move, a test and a move out of the mask register.
#if FA_VEC_BYTES == 64 && defined(FA_HAVE_AVX512)
template <int kPredicate> FA_VINLINE __mmask16 lanes_cmp(vf v, float c) {
  return _mm512_cmp_ps_mask((__m512)v, (__m512)splat(c), kPredicate);
}
FA_VINLINE bool all_lt(vf v, float c) { return lanes_cmp<_CMP_LT_OQ>(v, c) == 0xFFFF; }
FA_VINLINE bool all_le(vf v, float c) { return lanes_cmp<_CMP_LE_OQ>(v, c) == 0xFFFF; }
FA_VINLINE bool any_lt(vf v, float c) { return lanes_cmp<_CMP_LT_OQ>(v, c) != 0; }
#else
FA_VINLINE bool all_lt(vf v, float c) { return all_lanes(Mask{v < c}); }
FA_VINLINE bool all_le(vf v, float c) { return all_lanes(Mask{v <= c}); }
FA_VINLINE bool any_lt(vf v, float c) { return any_lane(Mask{v < c}); }
#endif

// sigmoid(z) = 1 / (1 + exp(-z)), the SIMD form of activations.h's fa_sigmoid (found by
// argument-dependent lookup for Vec, so sigmoid, silu and swish use it).  exp(-z) is
// computed as in fa_exp_nonpositive, without the negation (z + n*ln2 is reduced and the
// polynomial's odd terms change sign), on z clamped to at most 87 (there the result is 1
// in float anyway).  Lanes below -87 (a subnormal result, -inf) take activations.h's
// general fa_sigmoid instead: rare, and exact to the last subnormal bit.
// NaN stays NaN.
static __attribute__((noinline, cold)) Vec fa_sigmoid_general(Vec z) {
  return ::fused_act::fa_sigmoid<Vec>(z);
}

FA_VINLINE Vec fa_sigmoid(Vec z) {
  vf v = z.v > splat(87.0f) ? splat(87.0f) : z.v;
  vf n = v * -1.44269504088896341f + 0x1.8000FEp23f;  // round(-z / ln2) + bias
  const vf scale = (vf)((vi)n << 23);                 // 2^n
  n = n - 0x1.8000FEp23f;
  vf u = v + n * 0x1.62E400p-1f;  // u = -t, t = -z - n*ln2
  u = u + n * 0x1.7F7D1Cp-20f;
  vf q = splat(0x1.0FA834p-7f);   // q(u) = p(-u)
  q = q * u - 0x1.573A54p-5f;
  q = q * u + 0x1.555A6Ap-3f;
  q = q * u - 0x1.FFFDC6p-2f;
  q = q * u + 0x1.FFFFF6p-1f;
  const vf e = scale - (u * scale) * q;  // 2^n * (1 + t*p(t))
  const Vec fast = 1.0f / (1.0f + e);
  // Lanes below -87 take the general form; the others keep theirs, so that a lane's
  // result never depends on its neighbours (the same bits at any alignment).
  if (__builtin_expect(any_lt(z.v, -87.0f), 0))
    return fa_select(z < Vec(-87.0f), fa_sigmoid_general(z), fast);
  return fast;
}

FA_VINLINE Vec fa_expm1(Vec x) {
  // Below -25 the result is -1 in float; above 88.8 it is inf.
  vf v = clamp_keep_nan(x.v, -25.0f, 88.8f);
  vf n;
  vi ni;
  vf r = reduce_ln2(v, &n, &ni);
  vf em1 = expm1_reduced(r);
  // expm1(x) = 2^n*expm1(r) + (2^n - 1), computed with t = 2^(n-1) so that n = 128 does
  // not overflow the scale; for n = 0 it reduces exactly to expm1(r).
  vf t = pow2i(ni - 1);
  return (t * em1 + (t - 0.5f)) * 2.0f;
}

// tanh(x) = x P(x^2) / Q(x^2): a rational approximation with P and Q of degree 4 in x^2,
// P(0) = Q(0) = 1, fitted for the least maximum relative error on [0, 9.02]
// (tools/fit_tanh.py, which also measures the rounded formula on every float in
// [2^-12, 10]: at most 2.8 x 2^-23 relative error with fused multiply-adds, 3.4 x 2^-23
// without).  One division and ten multiply-adds, the same work on every instruction set.
// Evaluated on u = |x| with x's sign put back (an odd function: the same bits as on x),
// so that one min caps x^2 at 100 and one caps the result at 1, where clamping x to
// [-10, 10] and the result to [-1, 1] took four (min and max run on the multiply-add
// ports on Intel; the sign's logic does not).  Beyond |x| = 10, x P/Q at x^2 = 100
// already exceeds 1 by 15 x 2^-23 and grows with |x|: the cap gives exactly 1, and +-inf
// give exactly +-1.  A tiny |x| (below 2^-12, subnormals included) gives exactly x, as P
// and Q round to 1.  NaN stays NaN (the mins keep it).
FA_VINLINE Vec fa_tanh(Vec x) {
  const vi sign = (vi)x.v & (int32_t)0x80000000u;
  const vf u = (vf)((vi)x.v ^ sign);
  const vf t = min_keep_nan(u * u, 100.0f);
  vf p = splat(0x1.cbe034p-27f);
  p = p * t + 0x1.5a35bcp-16f;
  p = p * t + 0x1.ca6afep-9f;
  p = p * t + 0x1.1213ccp-3f;
  p = p * t + 1.0f;
  vf q = splat(0x1.a23b8ep-21f);
  q = q * t + 0x1.58d330p-12f;
  q = q * t + 0x1.a816c8p-6f;
  q = q * t + 0x1.de5f34p-2f;
  q = q * t + 1.0f;
  return (vf)((vi)min_keep_nan(u * p / q, 1.0f) | sign);
}

// x*x - fl(x*x): the rounding error of a square, exact with a fused multiply-subtract;
// 0 on the baseline build (no FMA), which then keeps the square's rounding.
FA_VINLINE vf square_error(vf x, vf sq) {
#if FA_VEC_BYTES == 64 && defined(FA_HAVE_AVX512)
  return (vf)_mm512_fmsub_ps((__m512)x, (__m512)x, (__m512)sq);
#elif FA_VEC_BYTES == 32 && defined(FA_HAVE_AVX2)
  return (vf)_mm256_fmsub_ps((__m256)x, (__m256)x, (__m256)sq);
#else
  (void)x;
  return sq - sq;
#endif
}

// a / d for a constant d, without a division (vdivps is one of the slowest vector
// instructions: about 10 cycles per 512-bit vector on Intel server cores, where an FMA
// issues twice a cycle): q = a * (1/d), e = q*d - a (exact with an FMA), a/d = q - e/d.
// The result is the correctly rounded quotient, bit for bit the division's, whenever it
// is a normal float or zero (signed zeros kept), and with d = 3 for every finite a:
// checked on every float32 a for d = 3 and d = 6 (tools/check_div_const.c).  A NaN gives
// a NaN, an infinite a gives NaN (not +-inf), and with d = 6 a subnormal quotient may be
// one unit off, so callers pass only finite a whose quotient cannot be subnormal, or
// select another result for the rest.  The baseline build (no FMA) divides.
FA_VINLINE Vec fa_div_const(Vec a, float d) {
#if FA_VEC_BYTES == 64 && defined(FA_HAVE_AVX512)
  const __m512 inv = _mm512_set1_ps(1.0f / d);
  const __m512 q = _mm512_mul_ps((__m512)a.v, inv);
  const __m512 e = _mm512_fmsub_ps(q, _mm512_set1_ps(d), (__m512)a.v);
  return (vf)_mm512_fnmadd_ps(e, inv, q);
#elif FA_VEC_BYTES == 32 && defined(FA_HAVE_AVX2)
  const __m256 inv = _mm256_set1_ps(1.0f / d);
  const __m256 q = _mm256_mul_ps((__m256)a.v, inv);
  const __m256 e = _mm256_fmsub_ps(q, _mm256_set1_ps(d), (__m256)a.v);
  return (vf)_mm256_fnmadd_ps(e, inv, q);
#else
  return a / Vec(d);
#endif
}

// exp(h + l) for h <= 0 and |l| <= 2, with h carried exactly through the argument
// reduction: n = round((h + l)/ln2), r = ((h - n*ln2_hi) + l) - n*ln2_lo, where
// h - n*ln2_hi is exact (the two are within a few units of each other and n*ln2_hi has 9
// significant bits).  So a large h costs no accuracy: exp(-x^2/2) from x*x = h + l keeps
// the relative precision a rounded x*x would lose (2^-24 x^2/2).  h is clamped to -104
// (the result is 0 anyway); NaN stays NaN.
FA_VINLINE vf exp_split(vf h, vf l) {
  h = clamp_keep_nan(h, -104.0f, 0.0f);
  const float magic = 12582912.0f;
  vf t = (h + l) * 1.44269504088896341f + magic;
  const vi ni = (vi)t - (vi)splat(magic);
  const vf n = t - magic;
  vf r = h - n * 0.693359375f;
  r = (r + l) - n * -2.12194440e-4f;
  const vf e = expm1_reduced(r) + 1.0f;
  const vi n1 = ni >> 1;  // n in [-153, 1]: scaled in two halves, as in fa_exp
  return e * pow2i(n1) * pow2i(ni - n1);
}

// exp(-x^2/2) (the normal density without its constant: GELU's backward).  |x| is clamped
// to 20 (the result is 0 beyond), so that x*x - fl(x*x) stays finite; NaN stays NaN.
FA_VINLINE Vec fa_gauss(Vec xv) {
  const vf x = clamp_keep_nan(xv.v, -20.0f, 20.0f);
  const vf sq = x * x;
  return exp_split(sq * -0.5f, square_error(x, sq) * -0.5f);
}

// Phi(x) = erfc(-x/sqrt(2))/2, the standard normal CDF, for every x (the slow path of
// fa_normcdf below: the lanes it leaves, |x| > 12.5, inf and NaN).  With a = |x|/sqrt(2),
// erfc(a) = t * exp(-a^2 + Q(2t - 1)), t = 1/(1 + a/2), Q a polynomial of degree 9 fitted
// for the least maximum relative error of erfc (tools/fit_erfc.py: 4.1e-8 before rounding;
// the rounded formula, evaluated as here, gives GELU within 3.7 x 2^-23 of float64 on
// [-13, 6] with an exact exp).  One formula
// for every x (one division, one exp, no blend of intervals): Phi = erfc(a)/2 below 0 and
// 1 - erfc(a)/2 above, which keeps the relative precision of small results where
// torch's 1 + erf(x/sqrt(2)) cancels.  x is clamped to +-20 (Phi is 0 or 1 in float
// beyond): +-inf give 0 and 1; NaN stays NaN.
static __attribute__((noinline, cold)) Vec fa_normcdf_general(Vec xv) {
  const vf x = clamp_keep_nan(xv.v, -20.0f, 20.0f);
  const vf a = (x < 0.0f ? -x : x) * 0.707106781186547524f;
  const vf t = 1.0f / (1.0f + 0.5f * a);
  const vf s = 2.0f * t - 1.0f;
  // Estrin's scheme (the pairs, then powers of s): a dependency chain of 5 multiply-adds
  // instead of Horner's 9.
  const vf s2 = s * s, s4 = s2 * s2;
  const vf p01 = 0x1.5864a4p-1f * s - 0x1.57f564p-1f;
  const vf p23 = -0x1.801542p-5f * s + 0x1.83d148p-5f;
  const vf p45 = 0x1.1e562ap-7f * s - 0x1.42a364p-7f;
  const vf p67 = -0x1.0cf934p-9f * s + 0x1.b54a1ep-10f;
  const vf p89 = 0x1.17227cp-12f * s - 0x1.4b63bap-14f;
  const vf q = (p01 + s2 * p23) + s4 * ((p45 + s2 * p67) + s4 * p89);
  const vf sq = x * x;  // -a^2 = -x^2/2, from x itself (a is rounded)
  const vf h = (0.5f * t) * exp_split(sq * -0.5f, q + square_error(x, sq) * -0.5f);
  return x < 0.0f ? h : 1.0f - h;
}

// exp(h + l) for h in [-79, 0] and a small correction l: exp_split without its clamp and
// with one scaling step (2^n stays a normal number for n >= -114).
FA_VINLINE vf exp_normal_range(vf h, vf l) {
  constexpr float magic = 12582912.0f;  // 1.5 * 2^23: rounds to an integer
  vf t = h * 1.44269504088896341f + magic;
  const vi ni = (vi)t - (vi)splat(magic);
  const vf n = t - magic;
  vf r = h - n * 0.693359375f;
  r = (r + l) - n * -2.12194440e-4f;
  const vf s = pow2i(ni);
  return expm1_reduced(r) * s + s;
}

// Phi(x), the fast path (GELU's forward and backward): with u = |x| <= 12.5,
//   Phi(-u) = exp(-u^2/2) * R(u),   R(u) = erfcx(u/sqrt(2))/2 ~= P4(u) / Q5(u),
// R smooth from 1/2 down to about 1/(u sqrt(2 pi)), fitted by tools/fit_normcdf.py (5.9e-9
// relative before rounding; every coefficient is positive, so float32 evaluation adds no
// cancellation).  Phi = Phi(-u) below 0 and 1 - Phi(-u) above, keeping the relative precision
// of small results as the slow path does.  The square carries its rounding error into the exp
// (square_error).  About twice as fast as the slow path's exp + degree-9 polynomial, and as
// accurate (within 3.6 x 2^-23 of float64 GELU, every float in [-12.5, 12.5]).  A vector with
// any lane outside |x| <= 12.5 (where Phi(-u) becomes subnormal; inf, NaN) takes the slow path
// for those lanes: a per-lane select, so a lane's result depends on its own x only.
// Phi(-|x|) on the fast path's range, and e = exp(-x^2/2), which it is built from.
FA_VINLINE vf normcdf_tail_fast(vf x, vf u, vf& e) {
  const vf u2 = u * u, u4 = u2 * u2;
  const vf p = (0x1.000000p-1f + 0x1.c0cff2p-2f * u) + u2 * (0x1.774348p-3f + 0x1.4cdd0cp-5f * u) +
               u4 * 0x1.0dc2e6p-8f;
  const vf q = (0x1.000000p+0f + 0x1.acaa2ap+0f * u) + u2 * (0x1.33d6e4p+0f + 0x1.e0bbf8p-2f * u) +
               u4 * (0x1.a1357ap-4f + 0x1.52177ep-7f * u);
  const vf sq = x * x;
  e = exp_normal_range(sq * -0.5f, square_error(x, sq) * -0.5f);
  return (e * p) / q;
}

// Phi(x) where the table below does not reach: the rational fast path, and the slow path
// for the lanes it leaves.
FA_VINLINE Vec normcdf_rational(Vec xv) {
  const vf x = xv.v;
  const vf u = (vf)((vi)x & 0x7fffffff);
  vf e;
  const vf h = normcdf_tail_fast(x, u, e);
  const Vec fast = x < 0.0f ? h : 1.0f - h;
  if (__builtin_expect(!all_le(u, 12.5f), 0))  // NaN compares false: slow
    return fa_select(Mask{~(u <= 12.5f)}, fa_normcdf_general(xv), fast);
  return fast;
}

#if (FA_VEC_BYTES == 32 && defined(FA_HAVE_AVX2)) || (FA_VEC_BYTES == 64 && defined(FA_HAVE_AVX512))
// Phi(-u) for u = |x| < 3.75 from one polynomial per interval, its coefficients picked for
// each lane by one permute per coefficient (the entry index in the low bits): a 512-bit
// permute picks from 16 entries, a 256-bit one from 8, so AVX-512 has sixteen polynomials of
// degree 5 on intervals of width 1/4 (K = 4) and AVX2 eight of degree 6 on intervals of
// width 1/2 (K = 2; the last 8 entries unused).  Entry i = round(K u), evaluated at
// s = u - i/K in [-1/(2K), 1/(2K)] (exact: u and i/K are within a factor of two).  Row k
// holds the coefficient of s^k of every entry: the fitted coefficient of t^k, t = K s, times
// K^k (the same bits as evaluating at t, one operation fewer).  Fitted by
// tools/fit_normcdf_table.py (5 97 16 and 6 97 8).  GELU (fa_gelu) against float64, on
// every float with |x| in [2^-12, 3.75): within 1.80 x 2^-23 below 0 and 0.83 x 2^-23 above
// with AVX-512, 2.38 and 0.75 x 2^-23 with AVX2.  No exp, no division: 6 permutes and 5
// multiply-adds (AVX2: 7 and 6) against the rational's 30-odd operations; the sixteen
// degree-5 polynomials made the AVX-512 forward 3-8% faster than eight of degree 6.
#if FA_VEC_BYTES == 64
constexpr int kTableDegree = 5;
constexpr float kTableScale = 4.0f;
alignas(64) static const float kNormcdfTable[6][16] = {
    {0x1.000000p-1f, 0x1.9aecbap-2f, 0x1.3bf144p-2f, 0x1.d02200p-3f,
     0x1.44ed0cp-3f, 0x1.b0bdd2p-4f, 0x1.11a46ep-4f, 0x1.482a24p-5f,
     0x1.74bcf8p-6f, 0x1.90924ep-7f, 0x1.96f4e6p-8f, 0x1.869044p-9f,
     0x1.61de20p-10f, 0x1.2e86fep-11f, 0x1.e7dbccp-13f, 0x1.72d956p-14f},
    {-0x1.988454p-2f, -0x1.8bf2bap-2f, -0x1.6883d0p-2f, -0x1.345d5ep-2f,
     -0x1.ef8e5ap-3f, -0x1.7610bap-3f, -0x1.094086p-3f, -0x1.616454p-4f,
     -0x1.ba4b44p-5f, -0x1.0402e0p-5f, -0x1.1f2f06p-6f, -0x1.29fa56p-7f,
     -0x1.227214p-8f, -0x1.09f38ap-9f, -0x1.c98972p-11f, -0x1.71b942p-12f},
    {0x1.cab3eap-21f, 0x1.8bfc08p-5f, 0x1.68813ep-4f, 0x1.ce8d02p-4f,
     0x1.ef8cfap-4f, 0x1.d3932cp-4f, 0x1.8ddff0p-4f, 0x1.3537f8p-4f,
     0x1.ba4ba4p-5f, 0x1.248408p-5f, 0x1.66fad2p-6f, 0x1.99b7f8p-7f,
     0x1.b3aabep-8f, 0x1.b02b00p-9f, 0x1.9056b4p-10f, 0x1.5a9af2p-11f},
    {0x1.104344p-4f, 0x1.eee8d2p-5f, 0x1.6885f0p-5f, 0x1.67b2bap-6f,
     0x1.77f91cp-19f, -0x1.188092p-6f, -0x1.ba0dfcp-6f, -0x1.e5e798p-6f,
     -0x1.ba49dep-6f, -0x1.601acep-6f, -0x1.f6908ep-7f, -0x1.45e86ap-7f,
     -0x1.834266p-8f, -0x1.a7e040p-9f, -0x1.acf69ep-10f, -0x1.92c44cp-11f},
    {0x1.7dea9ep-13f, -0x1.8bff9cp-7f, -0x1.471f48p-6f, -0x1.77feacp-6f,
     -0x1.487ca0p-6f, -0x1.bc5956p-7f, -0x1.8b2d20p-8f, 0x1.7c7a76p-12f,
     0x1.24d192p-8f, 0x1.8f989ep-8f, 0x1.8453fcp-8f, 0x1.378e06p-8f,
     0x1.b413bep-9f, 0x1.10ebd6p-9f, 0x1.35b0a2p-10f, 0x1.3b3616p-11f},
    {-0x1.58e6e8p-7f, -0x1.0d7434p-7f, -0x1.321ce4p-8f, 0x1.5d0700p-12f,
     0x1.fa2a18p-9f, 0x1.7ba47cp-8f, 0x1.781238p-8f, 0x1.1877f8p-8f,
     0x1.24a9bcp-9f, 0x1.049866p-11f, -0x1.61a4e4p-11f, -0x1.28079ap-10f,
     -0x1.22a280p-10f, -0x1.c27180p-11f, -0x1.2d2f5cp-11f, -0x1.9fbf72p-12f},
};
#else
constexpr int kTableDegree = 6;
constexpr float kTableScale = 2.0f;
alignas(64) static const float kNormcdfTable[7][16] = {
    {0x1.000000p-1f, 0x1.3bf144p-2f, 0x1.44ed0cp-3f, 0x1.11a46ep-4f,
     0x1.74bcf8p-6f, 0x1.96f4e4p-8f, 0x1.61de1ep-10f, 0x1.e7dbccp-13f},
    {-0x1.988454p-2f, -0x1.6883d0p-2f, -0x1.ef8e5ap-3f, -0x1.094086p-3f,
     -0x1.ba4b44p-5f, -0x1.1f2f04p-6f, -0x1.227210p-8f, -0x1.c98988p-11f},
    {0x1.763c72p-21f, 0x1.6882bap-4f, 0x1.ef8dbep-4f, 0x1.8de046p-4f,
     0x1.ba4b56p-5f, 0x1.66fb0ep-6f, 0x1.b3ab6ep-8f, 0x1.9057dep-10f},
    {0x1.104940p-4f, 0x1.6883bap-5f, 0x1.b7157ep-20f, -0x1.ba1170p-6f,
     -0x1.ba4becp-6f, -0x1.f69726p-7f, -0x1.834664p-8f, -0x1.aced2cp-10f},
    {0x1.17e0fcp-13f, -0x1.49d3fcp-6f, -0x1.49fcc6p-6f, -0x1.8c94fap-8f,
     0x1.26bf20p-8f, 0x1.84b830p-8f, 0x1.b39466p-9f, 0x1.34ae14p-10f},
    {-0x1.5b32cap-7f, -0x1.2b5a8ep-8f, 0x1.03bed4p-8f, 0x1.7d554cp-8f,
     0x1.28241ap-9f, -0x1.505d74p-11f, -0x1.203f5ap-10f, -0x1.307378p-11f},
    {0x1.6daec4p-10f, 0x1.5e6776p-9f, 0x1.d01a08p-10f, -0x1.bddbc2p-11f,
     -0x1.5a8758p-10f, -0x1.fe9d9cp-12f, 0x1.e1d868p-14f, 0x1.721ab4p-13f},
};
#endif

FA_VINLINE vf table_row(int k, vi idx) {
#if FA_VEC_BYTES == 64
  return (vf)_mm512_permutexvar_ps((__m512i)idx, _mm512_load_ps(kNormcdfTable[k]));
#else
  return (vf)_mm256_permutevar8x32_ps(_mm256_load_ps(kNormcdfTable[k]), (__m256i)idx);
#endif
}

// Phi(-u) from the table for 0 <= u < 3.75 (other lanes: any value; the callers check).
FA_VINLINE vf normcdf_table(vf u) {
  constexpr float magic = 12582912.0f;  // 1.5 * 2^23: rounds to an integer
  const vf f = u * kTableScale + magic;  // one multiply-add: round(K u) in the low mantissa bits
  const vi idx = (vi)f;
  const vf s = u - (f - magic) * (1.0f / kTableScale);  // u - i/K, exact
  vf h = table_row(kTableDegree, idx);
  for (int k = kTableDegree - 1; k >= 0; --k) h = h * s + table_row(k, idx);
  return h;
}

// GELU(x) = x Phi(x) = max(x, 0) - |x| Phi(-|x|), with h = Phi(-|x|) from the table: x h
// below 0, x - x h above, one multiply-add either way (where x * Phi(x) needed 1 - h and a
// blend first, and rounded 1 - h).  -0 keeps its sign (max picks its second operand on a
// tie).  Lanes with |x| >= 3.75, inf or NaN take the rational path, out of line (rare for
// inputs of unit scale: 0.02% of elements beyond 3.75).
static __attribute__((noinline)) Vec gelu_beyond_table(Vec xv) {
  return xv * normcdf_rational(xv);
}
FA_VINLINE Vec fa_gelu(Vec xv) {
  const vf x = xv.v;
  const vf u = (vf)((vi)x & 0x7fffffff);
  const vf h = normcdf_table(u);
  const Vec fast = max_keep_nan(x, 0.0f) - u * h;
  if (__builtin_expect(!all_lt(u, 3.75f), 0))  // NaN compares false: beyond the table
    return fa_select(Mask{u < 3.75f}, fast, gelu_beyond_table(xv));
  return fast;
}
#else
FA_VINLINE Vec fa_gelu(Vec xv) { return xv * normcdf_rational(xv); }
#endif

// Phi(x) + x * phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi): GELU's derivative, and Phi(x) in
// `cdf`, with one exp for both on the fast path (the scalar form is in activations.h).
static __attribute__((noinline, cold)) Vec gelu_slope_general(Vec xv, Vec& cdf) {
  cdf = fa_normcdf_general(xv);
  return cdf + xv * (fa_gauss(xv) * Vec(kInvSqrt2Pi));
}
FA_VINLINE Vec fa_gelu_slope(Vec xv, Vec& cdf) {
  const vf x = xv.v;
  const vf u = (vf)((vi)x & 0x7fffffff);
  vf e;
  const vf h = normcdf_tail_fast(x, u, e);
  const vf c = x < 0.0f ? h : 1.0f - h;
  const Vec fast = c + x * (e * float(kInvSqrt2Pi));
  if (__builtin_expect(!all_le(u, 12.5f), 0)) {
    const Mask slow = {~(u <= 12.5f)};
    Vec general_cdf;
    const Vec general = gelu_slope_general(xv, general_cdf);
    cdf = fa_select(slow, general_cdf, Vec{c});
    return fa_select(slow, general, fast);
  }
  cdf = Vec{c};
  return fast;
}

// ---- horizontal reductions (halving the vector, not a loop over the lanes) ----------
template <int B> struct FloatVecOf { typedef float type __attribute__((vector_size(B))); };

template <class H, class V, size_t... I>
FA_VINLINE H low_half(V v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, I...);
}
template <class H, class V, size_t... I>
FA_VINLINE H high_half(V v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, (I + sizeof...(I))...);
}

// Register shuffles only: going through memory would stall on store forwarding.
template <int B, class Op>
FA_VINLINE float reduce_lanes(typename FloatVecOf<B>::type v, Op op) {
  if constexpr (B == 4) {
    return v[0];
  } else {
    typedef typename FloatVecOf<B / 2>::type H;
    constexpr auto half = std::make_index_sequence<B / 8>{};
    return reduce_lanes<B / 2>(op(low_half<H>(v, half), high_half<H>(v, half)), op);
  }
}

FA_VINLINE float hsum(Vec v) {
  return reduce_lanes<FA_VEC_BYTES>(v.v, [](auto a, auto b) { return a + b; });
}
// Lanes are never NaN where this is used (see softmax.h); NaN in b would be dropped.
FA_VINLINE float hmax(Vec v) {
  return reduce_lanes<FA_VEC_BYTES>(v.v, [](auto a, auto b) { return b > a ? b : a; });
}

// The kLanes row sums (or maxima) of v[0..kLanes) in one vector (lane r: the sum of v[r]'s
// lanes), by a transposing tree: each step combines the low and high halves of two rows'
// blocks at once, kLanes - 1 steps of two shuffles and an add instead of kLanes hsum's of
// log2(kLanes) shuffles each, plus a broadcast each.  Each row is reduced in hsum's
// (hmax's) order, to the same bits.
namespace transpose_detail {
// Lane j of the "low" operand of a step whose blocks are 2h lanes: the first half of the
// result from a (shufflevector index < kLanes), the second from b (index >= kLanes).
constexpr int low_lane(int j, int h) {
  return (j >= kLanes / 2 ? kLanes : 0) + (j % (kLanes / 2)) / h * 2 * h + (j % (kLanes / 2)) % h;
}
template <int H, class Op, size_t... J>
FA_VINLINE vf fold(vf a, vf b, Op op, std::index_sequence<J...>) {
  return op(__builtin_shufflevector(a, b, low_lane(int(J), H)...),
            __builtin_shufflevector(a, b, (low_lane(int(J), H) + H)...));
}
template <int H, class Op>
FA_VINLINE void fold_rows(Vec* v, int count, Op op) {
  for (int i = 0; i < count / 2; ++i)
    v[i] = fold<H>(v[2 * i].v, v[2 * i + 1].v, op, std::make_index_sequence<kLanes>{});
  if constexpr (H > 1) fold_rows<H / 2>(v, count / 2, op);
}
}  // namespace transpose_detail

// Overwrites v.
FA_VINLINE Vec transpose_sum(Vec (&v)[kLanes]) {
  transpose_detail::fold_rows<kLanes / 2>(v, kLanes, [](vf a, vf b) { return a + b; });
  return v[0];
}
// Lanes are never NaN where this is used (as hmax).  Overwrites v.
FA_VINLINE Vec transpose_max(Vec (&v)[kLanes]) {
  transpose_detail::fold_rows<kLanes / 2>(v, kLanes, [](vf a, vf b) { return b > a ? b : a; });
  return v[0];
}

// Lane k holds float(k).
FA_VINLINE Vec lane_index() {
  vf v;
  for (int k = 0; k < kLanes; ++k) v[k] = float(k);
  return v;
}

// Natural log (Cephes' logf polynomial, about 1 ULP); 0 -> -inf, inf -> inf, NaN and
// negative inputs -> NaN.
FA_VINLINE Vec fa_log(Vec x) {
  const vf v = x.v;
  const vi bits = (vi)v;
  vi e = ((bits >> 23) & 0xff) - 126;
  vf m = (vf)((bits & 0x007fffff) | 0x3f000000);  // v = m * 2^e, m in [0.5, 1)
  const vi small = m < splat(0.707106781186547524f);
  e = small ? e - 1 : e;
  m = small ? m + m - 1.0f : m - 1.0f;  // now v = (1 + m) * 2^e, 1 + m in [0.707, 1.414)
  const vf z = m * m;
  vf p = splat(7.0376836292e-2f);
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  const vf ef = __builtin_convertvector(e, vf);
  vf r = p * m * z + ef * -2.12194440e-4f - 0.5f * z;
  r = m + r + ef * 0.693359375f;
  // Zero, subnormal, infinite, negative and NaN inputs: subnormals never occur here.
  r = (v == splat(0.0f)) ? splat(-INFINITY) : r;
  r = (v == splat(INFINITY)) ? v : r;
  return (v > splat(0.0f)) | (v == splat(0.0f)) ? r : splat(NAN);
}

// ---- softplus: log(1 + exp(z)) -----------------------------------------------------
// max(z, 0) + log1p(e), e = exp(-|z|) in (0, 1] (no overflow for any z), with
// log1p(e) = 2 atanh(s) = 2s (1 + t Q(t)), s = e/(2 + e) in [0, 1/3], t = s^2: s keeps the
// relative precision of e (no 1 + e is rounded first, which is what costs a log(1 + e)
// its accuracy for small e), and 1 + t Q(t), Q of degree 3 fitted for the least maximum
// relative error of atanh(sqrt t)/sqrt t on [0, 1/9], is within 4.5e-9 of it.  One exp,
// one division and six multiply-adds in all (Sleef's log1p(exp(z)), torch's, is two
// library calls and a division inside log1p).  e comes from fa_exp_nonpositive, which
// flushes results below 2^-126 to 0: harmless for z > 87 (z + e = z), so only lanes with
// z < -87 (where softplus(z) = e is subnormal) take fa_exp, which keeps it; rare, and
// only those lanes, so that a lane's result never depends on its neighbours.  NaN stays
// NaN; +inf gives inf, -inf 0.
FA_VINLINE Vec fa_softplus(Vec z) {
  const vf a = z.v < 0.0f ? -z.v : z.v;
  const Vec minus_a(-a);
  vf e = fa_exp_nonpositive(minus_a).v;
  if (__builtin_expect(any_lt(z.v, -87.0f), 0))
    e = fa_select(z < Vec(-87.0f), fa_exp(minus_a), Vec(e)).v;
  const vf s = e / (2.0f + e);
  const vf t = s * s;
  vf q = splat(0x1.1ed7c0p-3f);
  q = q * t + 0x1.1ebd0ep-3f;
  q = q * t + 0x1.99d208p-3f;
  q = q * t + 0x1.555502p-2f;
  const vf s2 = s + s;
  return (z.v > 0.0f ? z.v : splat(0.0f)) + (s2 + s2 * (t * q));
}

// ---- loads and stores with conversion to/from float --------------------------------
struct half_t { uint16_t bits; };
struct bf16_t { uint16_t bits; };

FA_VINLINE Vec load(const float* p) {
  vf v;
  memcpy(&v, p, sizeof(v));
  return v;
}
FA_VINLINE void store(float* p, Vec v) { memcpy(p, &v.v, sizeof(v.v)); }

// A non-temporal store (p aligned to the vector size), for outputs too large to stay in
// cache: the line goes to memory without being read first.  Callers order a run of them
// with nontemporal_fence() (kernel_table.h) before other threads may read the output.
FA_VINLINE void store_nt(float* p, Vec v) {
#if FA_VEC_BYTES == 64 && defined(FA_HAVE_AVX512)
  _mm512_stream_ps(p, (__m512)v.v);
#elif FA_VEC_BYTES == 32 && defined(FA_HAVE_AVX2)
  _mm256_stream_ps(p, (__m256)v.v);
#elif FA_VEC_BYTES == 16 && defined(__SSE__)
  _mm_stream_ps(p, (__m128)v.v);
#else
  store(p, v);
#endif
}

FA_VINLINE Vec load(const bf16_t* p) {
  vh h;
  memcpy(&h, p, sizeof(h));
  return (vf)(__builtin_convertvector(h, vu) << 16);
}
// The bfloat16 bits of v: round to nearest even; NaN stays a (quiet) NaN.
FA_VINLINE vh bf16_bits(Vec v) {
  vu u = (vu)v.v;
  vu r = (u + (0x7FFFu + ((u >> 16) & 1u))) >> 16;
  r = (v.v != v.v) ? splatu(0x7FC0u) : r;
  return __builtin_convertvector(r, vh);
}
FA_VINLINE void store(bf16_t* p, Vec v) {
  const vh h = bf16_bits(v);
  memcpy(p, &h, sizeof(h));
}

#if defined(FA_HAVE_F16C)
// One conversion instruction per vector, in registers.
FA_VINLINE Vec load(const half_t* p) {
#if FA_VEC_BYTES == 64
  // The zero-masked forms: the plain ones start from an undefined register, which GCC
  // reports as maybe uninitialized.
  return (vf)_mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#else
  static_assert(FA_VEC_BYTES == 32, "F16C vectors are 256 or 512 bits");
  return (vf)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
}
// The IEEE half bits of v (round to nearest even).
FA_VINLINE vh half_bits(Vec v) {
#if FA_VEC_BYTES == 64
  return (vh)_mm512_maskz_cvtps_ph(0xFFFF, (__m512)v.v, _MM_FROUND_TO_NEAREST_INT);
#else
  return (vh)_mm256_cvtps_ph((__m256)v.v, _MM_FROUND_TO_NEAREST_INT);
#endif
}
#else
// IEEE half <-> float with integer operations only (the classic branch-free method).
FA_VINLINE Vec load(const half_t* p) {
  vh h;
  memcpy(&h, p, sizeof(h));
  vu w = __builtin_convertvector(h, vu) << 16;
  vu sign = w & 0x80000000u;
  vu two_w = w + w;
  vf normalized = (vf)((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  vf denormalized = (vf)((two_w >> 17) | (126u << 23)) - 0.5f;
  vu bits = (two_w < splatu(1u << 27)) ? (vu)denormalized : (vu)normalized;
  return (vf)(sign | bits);
}
FA_VINLINE vh half_bits(Vec v) {
  vu w = (vu)v.v;
  vu shl1_w = w + w;
  vu sign = w & 0x80000000u;
  vf base = (vf)(w & 0x7FFFFFFFu) * 0x1.0p+112f * 0x1.0p-110f;
  vu bias = shl1_w & 0xFF000000u;
  bias = (bias < splatu(0x71000000u)) ? splatu(0x71000000u) : bias;
  base = (vf)((bias >> 1) + 0x07800000u) + base;
  vu bits = (vu)base;
  vu nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  vu r = (sign >> 16) | ((shl1_w > splatu(0xFF000000u)) ? splatu(0x7E00u) : nonsign);
  return __builtin_convertvector(r, vh);
}
#endif
FA_VINLINE void store(half_t* p, Vec v) {
  const vh h = half_bits(v);
  memcpy(p, &h, sizeof(h));
}

// Non-temporal stores of the 16-bit forms (p aligned to their size, FA_VEC_BYTES / 2).
FA_VINLINE void stream_bits(void* p, vh h) {
#if FA_VEC_BYTES == 64 && defined(FA_HAVE_AVX512)
  _mm256_stream_si256(static_cast<__m256i*>(p), (__m256i)h);
#elif FA_VEC_BYTES == 32 && defined(FA_HAVE_AVX2)
  _mm_stream_si128(static_cast<__m128i*>(p), (__m128i)h);
#elif FA_VEC_BYTES == 16 && defined(__SSE2__) && defined(__x86_64__)
  long long bits;
  memcpy(&bits, &h, sizeof(bits));
  _mm_stream_si64(static_cast<long long*>(p), bits);
#else
  memcpy(p, &h, sizeof(h));
#endif
}
FA_VINLINE void store_nt(bf16_t* p, Vec v) { stream_bits(p, bf16_bits(v)); }
FA_VINLINE void store_nt(half_t* p, Vec v) { stream_bits(p, half_bits(v)); }

// Loads the n < kLanes elements at p; the other lanes get `fill`.  Where the instruction
// set has masked loads and stores, they are used: a copy through a stack buffer would be a
// call to memcpy and, for the load, a vector load that cannot be forwarded from the
// buffer's narrower stores (a stall of about 20 cycles, once per row of a short-row softmax).
template <class S>
FA_VINLINE Vec load_partial(const S* p, int64_t n, float fill) {
#if FA_VEC_BYTES == 64 && defined(FA_HAVE_AVX512)
  const __mmask16 m = __mmask16((1u << n) - 1u);
  if constexpr (sizeof(S) == 4) {
    return (vf)_mm512_mask_loadu_ps(_mm512_set1_ps(fill), m, p);
  } else {
    S buf[kLanes];  // stored and loaded whole: forwarded
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(buf), _mm256_maskz_loadu_epi16(m, p));
    return fa_select(lane_index() < Vec(float(n)), load(buf), Vec(fill));
  }
#else
#if FA_VEC_BYTES == 32 && defined(FA_HAVE_AVX2)
  if constexpr (sizeof(S) == 4) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 v = _mm256_maskload_ps(reinterpret_cast<const float*>(p), m);
    return (vf)_mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(m));
  }
#endif
  S buf[kLanes];
  memset(buf, 0, sizeof(buf));
  memcpy(buf, p, n * sizeof(S));
  return fa_select(lane_index() < Vec(float(n)), load(buf), Vec(fill));
#endif
}

// Stores the first n < kLanes lanes of v at p.
template <class S>
FA_VINLINE void store_partial(S* p, int64_t n, Vec v) {
#if FA_VEC_BYTES == 64 && defined(FA_HAVE_AVX512)
  const __mmask16 m = __mmask16((1u << n) - 1u);
  if constexpr (sizeof(S) == 4) {
    _mm512_mask_storeu_ps(p, m, (__m512)v.v);
  } else {
    S buf[kLanes];
    store(buf, v);
    _mm256_mask_storeu_epi16(p, m, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(buf)));
  }
#else
  // (AVX2's masked store, vmaskmovps, is microcoded and slow on AMD CPUs: the buffer.)
  S buf[kLanes];
  store(buf, v);
  memcpy(p, buf, n * sizeof(S));
#endif
}

}  // namespace FA_CPU_CAP
}  // namespace cpu
}  // namespace fused_act
