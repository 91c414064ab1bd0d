// CPU SIMD kernels of maxout (rules in ../maxout.h).  Included by kernels_impl.h once per
// instruction set.  Two layouts:
//   * inner > 1 (a middle dim, e.g. channels of NCHW): the vector lanes run along the
//     inner columns, the pieces are kLanes-wide loads `inner` apart (a partial vector at
//     the end of a row);
//   * inner == 1 (the last dim), pieces 2, 4 or 8: kLanes groups are loaded as `pieces`
//     contiguous vectors and deinterleaved in registers (log2(pieces) rounds of even/odd
//     lane shuffles), so lane j of vector k is piece k of group j; the backward
//     interleaves its results back the same way.  A last partial block runs through a
//     zero-padded buffer.
// Mask words (one per output, pieces <= 32) are widened to 32-bit lanes; count is their
// popcount.  Half / bfloat16 are computed in float.
#pragma once
#include <string.h>

#include <utility>

#include "../maxout.h"
#include "maxout_table.h"
#include "simd.h"

namespace fused_act {
namespace cpu {
namespace FA_CPU_CAP {
namespace maxout {

// amax's max, NaN propagating: the running max with the ordered comparison (one max
// instruction; it drops a NaN) and a flag of the NaN lanes, applied at the end.
// Lanes where a or b is NaN.
FA_VINLINE vi unordered(vf a, vf b) {
#if FA_VEC_BYTES == 32 && defined(FA_HAVE_AVX2)
  return (vi)_mm256_cmp_ps((__m256)a, (__m256)b, _CMP_UNORD_Q);
#elif FA_VEC_BYTES == 16 && defined(__SSE__)
  return (vi)_mm_cmpunord_ps((__m128)a, (__m128)b);
#else
  return (a != a) | (b != b);
#endif
}

struct MaxNan {
  vf m;
  vi nan;
  __attribute__((always_inline)) explicit MaxNan(vf a) : m(a), nan(a != a) {}
  __attribute__((always_inline)) void add(vf a) {
    m = (a > m) ? a : m;
    nan |= (a != a);
  }
  __attribute__((always_inline)) vf result() const { return nan ? splat(NAN) : m; }
};

// ---- mask words <-> 32-bit lanes -----------------------------------------------------
template <class M> struct WordVec { typedef M type __attribute__((vector_size(kLanes * sizeof(M)))); };

template <class M> FA_VINLINE vu load_words(const M* p) {
  typename WordVec<M>::type w;
  memcpy(&w, p, sizeof(w));
  return __builtin_convertvector(w, vu);
}
template <class M> FA_VINLINE vu load_words_partial(const M* p, int64_t n) {
  M buf[kLanes] = {};
  memcpy(buf, p, n * sizeof(M));
  return load_words(buf);
}
// The low byte (or 16 bits) of each 32-bit lane, by one shuffle of the lanes' bytes (a
// narrowing conversion would be scalarized without AVX-512's vpmovdb / vpmovdw).
template <class M, size_t... I>
FA_VINLINE typename WordVec<M>::type narrow_words(vu v, std::index_sequence<I...>) {
  typedef M parts __attribute__((vector_size(kLanes * 4)));
  const parts w = (parts)v;
  return __builtin_shufflevector(w, w, (I * (4 / sizeof(M)))...);
}
template <class M> FA_VINLINE void store_words(M* p, vu v, int64_t n = kLanes) {
  const typename WordVec<M>::type w = narrow_words<M>(v, std::make_index_sequence<kLanes>{});
  memcpy(p, &w, n * sizeof(M));
}

FA_VINLINE vu popcount(vu v) {
  v = v - ((v >> 1) & 0x55555555u);
  v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
  v = (v + (v >> 4)) & 0x0F0F0F0Fu;
  return (v * 0x01010101u) >> 24;
}
FA_VINLINE vf to_float(vu v) { return __builtin_convertvector((vi)v, vf); }
// 1.0f where bit k is set, else 0.0f.
FA_VINLINE vf bit_float(vu bits, int k) { return to_float((bits >> k) & 1u); }
// The bits of the pieces equal to the max m.
FA_VINLINE vu bit_of(vf piece, vf m, int k) { return (vu)(piece == m) & (1u << k); }

// ---- deinterleave / interleave of kLanes groups of P pieces --------------------------
template <size_t... I> FA_VINLINE vf even_lanes(vf a, vf b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, (2 * I)...);
}
template <size_t... I> FA_VINLINE vf odd_lanes(vf a, vf b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, (2 * I + 1)...);
}
template <size_t... I> FA_VINLINE vf zip_low(vf a, vf b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, ((I % 2) ? kLanes + I / 2 : I / 2)...);
}
template <size_t... I> FA_VINLINE vf zip_high(vf a, vf b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, ((I % 2) ? kLanes + kLanes / 2 + I / 2 : kLanes / 2 + I / 2)...);
}
constexpr auto kLaneSeq = std::make_index_sequence<kLanes>{};

// v: P vectors of consecutive elements (kLanes groups of P); c[k]: piece k of each group.
template <int P> FA_VINLINE void deinterleave(const vf* v, vf* c) {
  if constexpr (P == 1) {
    c[0] = v[0];
  } else {
    vf e[P / 2], o[P / 2], ce[P / 2], co[P / 2];
    for (int j = 0; j < P / 2; ++j) {
      e[j] = even_lanes(v[2 * j], v[2 * j + 1], kLaneSeq);
      o[j] = odd_lanes(v[2 * j], v[2 * j + 1], kLaneSeq);
    }
    deinterleave<P / 2>(e, ce);
    deinterleave<P / 2>(o, co);
    for (int k = 0; k < P / 2; ++k) {
      c[2 * k] = ce[k];
      c[2 * k + 1] = co[k];
    }
  }
}
// The inverse.
template <int P> FA_VINLINE void interleave(const vf* c, vf* v) {
  if constexpr (P == 1) {
    v[0] = c[0];
  } else {
    vf ce[P / 2], co[P / 2], e[P / 2], o[P / 2];
    for (int k = 0; k < P / 2; ++k) {
      ce[k] = c[2 * k];
      co[k] = c[2 * k + 1];
    }
    interleave<P / 2>(ce, e);
    interleave<P / 2>(co, o);
    for (int j = 0; j < P / 2; ++j) {
      v[2 * j] = zip_low(e[j], o[j], kLaneSeq);
      v[2 * j + 1] = zip_high(e[j], o[j], kLaneSeq);
    }
  }
}

// A store of y: non-temporal when nt (p then aligned to a whole vector).
template <class S> FA_VINLINE void store_y(S* p, vf v, bool nt) {
  if (nt)
    store_nt(p, Vec(v));
  else
    store(p, Vec(v));
}
template <class S> FA_VINLINE bool vector_aligned(const S* p) {
  return reinterpret_cast<uintptr_t>(p) % (kLanes * sizeof(S)) == 0;
}

// ---- inner == 1: groups of P contiguous pieces ----------------------------------------
// Runs block(x, y, mask, count) on every kLanes groups; the last partial block through
// zero-padded buffers, whose results are copied out.
template <int P, class S, class M>
static void forward_last(const S* x, S* y, M* mask, int64_t groups, bool nt) {
  nt = nt && vector_aligned(y);
  auto block = [&](const S* xs, S* ys, M* ms, bool nt_block) {
    vf v[P], c[P];
    for (int k = 0; k < P; ++k) v[k] = load(xs + k * kLanes).v;
    deinterleave<P>(v, c);
    MaxNan acc(c[0]);
    for (int k = 1; k < P; ++k) acc.add(c[k]);
    const vf m = acc.result();
    store_y(ys, m, nt_block);
    if (ms) {
      vu bits = bit_of(c[0], m, 0);
      for (int k = 1; k < P; ++k) bits |= bit_of(c[k], m, k);
      store_words(ms, bits);
    }
  };
  int64_t j = 0;
  for (; j + kLanes <= groups; j += kLanes) block(x + j * P, y + j, mask ? mask + j : nullptr, nt);
  if (j < groups) {
    const int64_t n = groups - j;
    S xb[P * kLanes], yb[kLanes];
    M mb[kLanes];
    memset(xb, 0, sizeof(xb));
    memcpy(xb, x + j * P, n * P * sizeof(S));
    block(xb, yb, mask ? mb : nullptr, false);
    memcpy(y + j, yb, n * sizeof(S));
    if (mask) memcpy(mask + j, mb, n * sizeof(M));
  }
}

template <int P, class S, class M>
static void backward_last(const S* g, const M* mask, S* dx, int64_t groups) {
  auto block = [&](const S* gs, const M* ms, S* ds) {
    const vu bits = load_words(ms);
    const vf q = load(gs).v / to_float(popcount(bits));
    vf c[P], v[P];
    for (int k = 0; k < P; ++k) c[k] = q * bit_float(bits, k);
    interleave<P>(c, v);
    for (int k = 0; k < P; ++k) store(ds + k * kLanes, Vec(v[k]));
  };
  int64_t j = 0;
  for (; j + kLanes <= groups; j += kLanes) block(g + j, mask + j, dx + j * P);
  if (j < groups) {
    const int64_t n = groups - j;
    S gb[kLanes], db[P * kLanes];
    M mb[kLanes];
    memset(gb, 0, sizeof(gb));
    memset(mb, 0, sizeof(mb));
    memcpy(gb, g + j, n * sizeof(S));
    memcpy(mb, mask + j, n * sizeof(M));
    block(gb, mb, db);
    memcpy(dx + j * P, db, n * P * sizeof(S));
  }
}

template <int P, class S, class M>
static void gather_last(const S* t, const M* mask, S* out, int64_t groups) {
  auto block = [&](const S* ts, const M* ms, S* os) {
    const vu bits = load_words(ms);
    vf v[P], c[P];
    for (int k = 0; k < P; ++k) v[k] = load(ts + k * kLanes).v;
    deinterleave<P>(v, c);
    vf sum = ((bits & 1u) != 0u) ? c[0] : splat(0.0f);
    for (int k = 1; k < P; ++k) sum = sum + (((bits >> k) & 1u) != 0u ? c[k] : splat(0.0f));
    store(os, Vec(sum / to_float(popcount(bits))));
  };
  int64_t j = 0;
  for (; j + kLanes <= groups; j += kLanes) block(t + j * P, mask + j, out + j);
  if (j < groups) {
    const int64_t n = groups - j;
    S tb[P * kLanes], ob[kLanes];
    M mb[kLanes];
    memset(tb, 0, sizeof(tb));
    memset(mb, 0, sizeof(mb));
    memcpy(tb, t + j * P, n * P * sizeof(S));
    memcpy(mb, mask + j, n * sizeof(M));
    block(tb, mb, ob);
    memcpy(out + j, ob, n * sizeof(S));
  }
}

// ---- inner > 1: lanes along the columns ----------------------------------------------
// Calls fn(c, len) for the columns [c0, c1) a vector at a time (len < kLanes at the end).
template <class Fn> FA_VINLINE void for_columns(int64_t c0, int64_t c1, Fn&& fn) {
  int64_t c = c0;
  for (; c + kLanes <= c1; c += kLanes) fn(c, int64_t(kLanes));
  if (c < c1) fn(c, c1 - c);
}

template <class S> FA_VINLINE vf load_n(const S* p, int64_t len) {
  return len == kLanes ? load(p).v : load_partial(p, len, 0.0f).v;
}
template <class S> FA_VINLINE void store_n(S* p, vf v, int64_t len) {
  if (len == kLanes)
    store(p, Vec(v));
  else
    store_partial(p, len, Vec(v));
}

// kU vectors of columns at a time, all loaded before any store: the pieces and the output
// rows are often a multiple of 4 KiB apart, and a load right after a store to the same
// address bits (4K aliasing) would wait for it.
constexpr int kU = 4;

template <class S, class M>
static void forward_inner(const S* x, S* y, M* mask, int64_t rows, int64_t pieces,
                          int64_t inner, int64_t c0, int64_t c1, bool nt) {
  for (int64_t r = 0; r < rows; ++r) {
    const S* xr = x + r * pieces * inner;
    S* yr = y + r * inner;
    M* mr = mask ? mask + r * inner : nullptr;
    const bool nt_row = nt && vector_aligned(yr + c0);
    int64_t c = c0;
    for (; c + kU * kLanes <= c1; c += kU * kLanes) {
      // Pieces two at a time: two max instructions and one unordered compare.
      vf m[kU];
      vi nan[kU];
      for (int u = 0; u < kU; ++u) {
        m[u] = load(xr + c + u * kLanes).v;
        nan[u] = unordered(m[u], m[u]);
      }
      int64_t k = 1;
      for (; k + 1 < pieces; k += 2)
        for (int u = 0; u < kU; ++u) {
          const vf a = load(xr + k * inner + c + u * kLanes).v;
          const vf b = load(xr + (k + 1) * inner + c + u * kLanes).v;
          m[u] = (a > m[u]) ? a : m[u];
          m[u] = (b > m[u]) ? b : m[u];
          nan[u] |= unordered(a, b);
        }
      if (k < pieces)
        for (int u = 0; u < kU; ++u) {
          const vf a = load(xr + k * inner + c + u * kLanes).v;
          m[u] = (a > m[u]) ? a : m[u];
          nan[u] |= unordered(a, a);
        }
      for (int u = 0; u < kU; ++u) m[u] = nan[u] ? splat(NAN) : m[u];
      if (mr) {
        vu bits[kU] = {};
        for (int64_t k = 0; k < pieces; ++k)
          for (int u = 0; u < kU; ++u)
            bits[u] |= bit_of(load(xr + k * inner + c + u * kLanes).v, m[u], int(k));
        for (int u = 0; u < kU; ++u) store_words(mr + c + u * kLanes, bits[u]);
      }
      for (int u = 0; u < kU; ++u) store_y(yr + c + u * kLanes, m[u], nt_row);
    }
    for_columns(c, c1, [&](int64_t c, int64_t len) {
      MaxNan acc(load_n(xr + c, len));
      for (int64_t k = 1; k < pieces; ++k) acc.add(load_n(xr + k * inner + c, len));
      const vf m = acc.result();
      store_n(yr + c, m, len);
      if (mr) {
        vu bits = bit_of(load_n(xr + c, len), m, 0);
        for (int64_t k = 1; k < pieces; ++k) bits |= bit_of(load_n(xr + k * inner + c, len), m, int(k));
        store_words(mr + c, bits, len);
      }
    });
  }
}

template <class S, class M>
static void backward_inner(const S* g, const M* mask, S* dx, int64_t rows, int64_t pieces,
                           int64_t inner, int64_t c0, int64_t c1) {
  for (int64_t r = 0; r < rows; ++r) {
    const S* gr = g + r * inner;
    const M* mr = mask + r * inner;
    S* dr = dx + r * pieces * inner;
    int64_t c = c0;
    for (; c + kU * kLanes <= c1; c += kU * kLanes) {
      vu bits[kU];
      vf q[kU];
      for (int u = 0; u < kU; ++u) {
        bits[u] = load_words(mr + c + u * kLanes);
        q[u] = load(gr + c + u * kLanes).v / to_float(popcount(bits[u]));
      }
      for (int64_t k = 0; k < pieces; ++k)
        for (int u = 0; u < kU; ++u)
          store(dr + k * inner + c + u * kLanes, Vec(q[u] * bit_float(bits[u], int(k))));
    }
    for_columns(c, c1, [&](int64_t c, int64_t len) {
      const vu bits = len == kLanes ? load_words(mr + c) : load_words_partial(mr + c, len);
      const vf q = load_n(gr + c, len) / to_float(popcount(bits));
      for (int64_t k = 0; k < pieces; ++k) store_n(dr + k * inner + c, q * bit_float(bits, int(k)), len);
    });
  }
}

template <class S, class M>
static void gather_inner(const S* t, const M* mask, S* out, int64_t rows, int64_t pieces,
                         int64_t inner, int64_t c0, int64_t c1) {
  for (int64_t r = 0; r < rows; ++r) {
    const S* tr = t + r * pieces * inner;
    const M* mr = mask + r * inner;
    S* outr = out + r * inner;
    for_columns(c0, c1, [&](int64_t c, int64_t len) {
      const vu bits = len == kLanes ? load_words(mr + c) : load_words_partial(mr + c, len);
      vf sum = splat(0.0f);
      for (int64_t k = 0; k < pieces; ++k)
        sum = sum + (((bits >> int(k)) & 1u) != 0u ? load_n(tr + k * inner + c, len) : splat(0.0f));
      store_n(outr + c, sum / to_float(popcount(bits)), len);
    });
  }
}

// ---- dispatch --------------------------------------------------------------------------
template <class Fn> static void visit_word(int bytes, Fn&& fn) {
  switch (bytes) {
    case 1: fn(MaxoutWord<1>{}); return;
    case 2: fn(MaxoutWord<2>{}); return;
    default: fn(MaxoutWord<4>{}); return;
  }
}
template <class Fn> static void visit_storage_of(Storage st, Fn&& fn) {
  switch (st) {
    case Storage::f32: fn(static_cast<float*>(nullptr)); return;
    case Storage::f16: fn(static_cast<half_t*>(nullptr)); return;
    case Storage::bf16: fn(static_cast<bf16_t*>(nullptr)); return;
  }
}
// fn(std::integral_constant<int, P>) for P = 2, 4, 8.
template <class Fn> static void visit_pieces(int64_t pieces, Fn&& fn) {
  switch (pieces) {
    case 2: fn(std::integral_constant<int, 2>{}); return;
    case 4: fn(std::integral_constant<int, 4>{}); return;
    default: fn(std::integral_constant<int, 8>{}); return;
  }
}

static void forward(Storage st, int mask_bytes, const void* x, void* y, void* mask, int64_t rows,
                    int64_t pieces, int64_t inner, int64_t c0, int64_t c1, bool nt) {
  visit_storage_of(st, [&](auto* s) {
    using S = std::remove_pointer_t<decltype(s)>;
    visit_word(mask_bytes, [&](auto w) {
      using M = typename decltype(w)::type;
      const S* xs = static_cast<const S*>(x);
      S* ys = static_cast<S*>(y);
      M* ms = static_cast<M*>(mask);
      if (inner == 1) {
        visit_pieces(pieces, [&](auto p) { forward_last<decltype(p)::value>(xs, ys, ms, rows, nt); });
      } else {
        forward_inner(xs, ys, ms, rows, pieces, inner, c0, c1, nt);
      }
    });
  });
}

static void backward(Storage st, int mask_bytes, const void* g, const void* mask, void* dx,
                     int64_t rows, int64_t pieces, int64_t inner, int64_t c0, int64_t c1) {
  visit_storage_of(st, [&](auto* s) {
    using S = std::remove_pointer_t<decltype(s)>;
    visit_word(mask_bytes, [&](auto w) {
      using M = typename decltype(w)::type;
      const S* gs = static_cast<const S*>(g);
      const M* ms = static_cast<const M*>(mask);
      S* ds = static_cast<S*>(dx);
      if (inner == 1) {
        visit_pieces(pieces, [&](auto p) { backward_last<decltype(p)::value>(gs, ms, ds, rows); });
      } else {
        backward_inner(gs, ms, ds, rows, pieces, inner, c0, c1);
      }
    });
  });
}

static void gather(Storage st, int mask_bytes, const void* t, const void* mask, void* out,
                   int64_t rows, int64_t pieces, int64_t inner, int64_t c0, int64_t c1) {
  visit_storage_of(st, [&](auto* s) {
    using S = std::remove_pointer_t<decltype(s)>;
    visit_word(mask_bytes, [&](auto w) {
      using M = typename decltype(w)::type;
      const S* ts = static_cast<const S*>(t);
      const M* ms = static_cast<const M*>(mask);
      S* os = static_cast<S*>(out);
      if (inner == 1) {
        visit_pieces(pieces, [&](auto p) { gather_last<decltype(p)::value>(ts, ms, os, rows); });
      } else {
        gather_inner(ts, ms, os, rows, pieces, inner, c0, c1);
      }
    });
  });
}

}  // namespace maxout
}  // namespace FA_CPU_CAP
}  // namespace cpu
}  // namespace fused_act

#define FA_MAXOUT_TABLE_NAME2(cap) maxout_kernels_##cap
#define FA_MAXOUT_TABLE_NAME(cap) FA_MAXOUT_TABLE_NAME2(cap)

namespace fused_act {
namespace cpu {
const MaxoutKernelTable FA_MAXOUT_TABLE_NAME(FA_CPU_CAP) = {
    &FA_CPU_CAP::maxout::forward,
    &FA_CPU_CAP::maxout::backward,
    &FA_CPU_CAP::maxout::gather,
};
}  // namespace cpu
}  // namespace fused_act
