// The CPU SIMD kernels: one loop per kind of kernel, applied to every activation of
// activations.h.  Included once per instruction set by capability_*.cpp, which define
// FA_CPU_CAP, FA_VEC_BYTES and the matching compiler target.  Float, half and bfloat16
// are computed in float vectors; a tail shorter than one vector is loaded zero-padded
// (load_partial), so every element takes the same code path and gives the same bits.
#pragma once
#include "kernel_table.h"
#include "simd.h"

namespace fused_act {
namespace cpu {
namespace FA_CPU_CAP {

// The per-vector lambdas of the loops below are forced inline: GCC keeps a long formula's
// lambda out of line (measured: GELU's forward with AVX2), a call per vector, with the
// constants reloaded each time; the gated loops' lambdas return two vectors through
// references, a round trip through memory per vector when not inlined.
#if defined(__GNUC__)
#define FA_LAMBDA_INLINE __attribute__((always_inline))
#else
#define FA_LAMBDA_INLINE
#endif

// Writes out[0, n) a vector at a time: full(i) is the vector of elements [i, i + kLanes),
// part(i, len) that of the len < kLanes elements from i (inputs read with load_partial).
// With nt, the stores from the first element aligned to a whole vector of S on are
// non-temporal (the caller fences: nontemporal_fence in kernel_table.h).
template <class S, class Full, class Part>
FA_VINLINE void write_out(S* out, int64_t n, bool nt, const Full& full, const Part& part) {
  constexpr uintptr_t kVecBytes = kLanes * sizeof(S);
  const uintptr_t addr = reinterpret_cast<uintptr_t>(out);
  int64_t i = 0;
  if (nt && addr % sizeof(S) == 0) {
    const int64_t to_aligned = int64_t((kVecBytes - addr % kVecBytes) % kVecBytes / sizeof(S));
    const int64_t head = to_aligned < n ? to_aligned : n;
    if (head > 0) store_partial(out, head, part(0, head));
    for (i = head; i + 2 * kLanes <= n; i += 2 * kLanes) {
      const Vec a = full(i), b = full(i + kLanes);
      store_nt(out + i, a);
      store_nt(out + i + kLanes, b);
    }
    for (; i + kLanes <= n; i += kLanes) store_nt(out + i, full(i));
  }
  // Two vectors per iteration: their dependency chains (a polynomial, an exp, a
  // division) interleave in one block, which a long formula needs to fill the pipelines.
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    const Vec a = full(i), b = full(i + kLanes);
    store(out + i, a);
    store(out + i + kLanes, b);
  }
  for (; i + kLanes <= n; i += kLanes) store(out + i, full(i));
  if (i < n) store_partial(out + i, n - i, part(i, n - i));
}

// The elementwise loops call every functor through Params<F> (activations.h): (p, q).
template <class F, class S>
static void forward_loop(const S* x, S* y, int64_t n, float p, float q, bool nt) {
  using P = Params<F>;
  const Vec vp(p), vq(q);
  write_out(
      y, n, nt, [&](int64_t i) FA_LAMBDA_INLINE { return P::forward(load(x + i), vp, vq); },
      [&](int64_t i, int64_t len) { return P::forward(load_partial(x + i, len, 0.0f), vp, vq); });
}

template <class F, bool kFromOutput, class S>
static void backward_loop(const S* g, const S* s, S* dx, int64_t n, float p, float q, bool nt) {
  using P = Params<F>;
  const Vec vp(p), vq(q);
  write_out(
      dx, n, nt,
      [&](int64_t i) FA_LAMBDA_INLINE {
        return P::template backward<kFromOutput>(load(g + i), load(s + i), vp, vq);
      },
      [&](int64_t i, int64_t len) {
        return P::template backward<kFromOutput>(load_partial(g + i, len, 0.0f),
                                                 load_partial(s + i, len, 0.0f), vp, vq);
      });
}

static inline double lane_sum(Vec v) {
  float f[kLanes];
  store(f, v);
  double total = 0;
  for (int k = 0; k < kLanes; ++k) total += f[k];
  return total;
}

// dx from the saved input and, when asked, the sum of the weight-gradient terms.  The
// caller keeps n small (a few thousand), so float lanes accumulate without much loss.
// A partial vector is zero-padded: a zero gradient gives a zero weight-gradient term.
template <class F, class S>
static double backward_weighted_loop(const S* g, const S* x, S* dx, int64_t n, float p,
                                     bool need_weight_grad, bool nt) {
  // Non-temporal stores only from an aligned start: a peeled head would move every
  // element to another lane of acc and change the rounding of the weight gradient.
  nt = nt && reinterpret_cast<uintptr_t>(dx) % (kLanes * sizeof(S)) == 0;
  const Vec vp(p);
  Vec acc(0.0f);
  auto term = [&](Vec vg, Vec vx) FA_LAMBDA_INLINE {
    if (need_weight_grad) acc = acc + F::weight_grad(vg, vx, vp);
    return F::template backward<false>(vg, vx, vp);
  };
  write_out(
      dx, n, nt, [&](int64_t i) FA_LAMBDA_INLINE { return term(load(g + i), load(x + i)); },
      [&](int64_t i, int64_t len) {
        return term(load_partial(g + i, len, 0.0f), load_partial(x + i, len, 0.0f));
      });
  return need_weight_grad ? lane_sum(acc) : 0.0;
}

// The weighted activations with one weight per element (w[i], float).
template <class F, class S>
static void forward_weights_loop(const S* x, S* y, const float* w, int64_t n, bool nt) {
  write_out(
      y, n, nt, [&](int64_t i) FA_LAMBDA_INLINE { return F::forward(load(x + i), load(w + i)); },
      [&](int64_t i, int64_t len) {
        return F::forward(load_partial(x + i, len, 0.0f), load_partial(w + i, len, 0.0f));
      });
}

template <class F, class S>
static void backward_weights_loop(const S* g, const S* x, S* dx, const float* w, float* acc,
                                  int64_t n, bool nt) {
  write_out(
      dx, n, nt,
      [&](int64_t i) FA_LAMBDA_INLINE {
        const Vec vg = load(g + i), vx = load(x + i), vw = load(w + i);
        if (acc) store(acc + i, load(acc + i) + F::weight_grad(vg, vx, vw));
        return F::template backward<false>(vg, vx, vw);
      },
      [&](int64_t i, int64_t len) {
        const Vec vg = load_partial(g + i, len, 0.0f), vx = load_partial(x + i, len, 0.0f);
        const Vec vw = load_partial(w + i, len, 0.0f);
        if (acc)
          store_partial(acc + i, len,
                      load_partial(acc + i, len, 0.0f) + F::weight_grad(vg, vx, vw));
        return F::template backward<false>(vg, vx, vw);
      });
}

template <class Fn> static void visit_weighted_act(Act act, Fn&& fn) {
  switch (act) {
#define FA_WEIGHTED_CASE(name, F, op) \
  case Act::name: fn(ActTag<F>{}); break;
    FA_FOR_EACH_WEIGHTED(FA_WEIGHTED_CASE)
#undef FA_WEIGHTED_CASE
    default: break;  // the operator layer only sends weighted activations here
  }
}

// Calls fn(tag) with tag carrying the storage type of `st`.
template <class S> struct StorageTag { using type = S; };
template <class Fn> static void visit_storage(Storage st, Fn&& fn) {
  switch (st) {
    case Storage::f32: fn(StorageTag<float>{}); return;
    case Storage::f16: fn(StorageTag<half_t>{}); return;
    case Storage::bf16: fn(StorageTag<bf16_t>{}); return;
  }
}

static void forward(Act act, Storage st, const void* x, void* y, int64_t n, float p, float q,
                    bool nt) {
  visit_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    visit_storage(st, [&](auto t) {
      using S = typename decltype(t)::type;
      forward_loop<F>(static_cast<const S*>(x), static_cast<S*>(y), n, p, q, nt);
    });
  });
}

static void backward(Act act, Storage st, const void* g, const void* s, void* dx, int64_t n,
                     float p, float q, bool saved_is_output, bool nt) {
  visit_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    visit_storage(st, [&](auto t) {
      using S = typename decltype(t)::type;
      auto gp = static_cast<const S*>(g);
      auto sp = static_cast<const S*>(s);
      auto dp = static_cast<S*>(dx);
      if (saved_is_output)
        backward_loop<F, true>(gp, sp, dp, n, p, q, nt);
      else
        backward_loop<F, false>(gp, sp, dp, n, p, q, nt);
    });
  });
}

static double backward_weighted(Act act, Storage st, const void* g, const void* x, void* dx,
                                int64_t n, float p, bool need_weight_grad, bool nt) {
  double result = 0.0;
  visit_weighted_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    visit_storage(st, [&](auto t) {
      using S = typename decltype(t)::type;
      result = backward_weighted_loop<F>(static_cast<const S*>(g), static_cast<const S*>(x),
                                         static_cast<S*>(dx), n, p, need_weight_grad, nt);
    });
  });
  return result;
}

static void forward_weights(Act act, Storage st, const void* x, void* y, const float* w,
                            int64_t period, int64_t phase, int64_t n, bool nt) {
  visit_weighted_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    visit_storage(st, [&](auto t) {
      using S = typename decltype(t)::type;
      const S* xs = static_cast<const S*>(x);
      S* ys = static_cast<S*>(y);
      for (int64_t i = 0, ph = phase % period; i < n;) {
        const int64_t len = n - i < kWeightPiece ? n - i : kWeightPiece;
        forward_weights_loop<F>(xs + i, ys + i, w + ph, len, nt);
        i += len;
        ph = (ph + len) % period;
      }
    });
  });
}

static void backward_weights(Act act, Storage st, const void* g, const void* x, void* dx,
                             const float* w, float* acc, int64_t period, int64_t phase,
                             int64_t n, bool nt) {
  visit_weighted_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    visit_storage(st, [&](auto t) {
      using S = typename decltype(t)::type;
      const S* gs = static_cast<const S*>(g);
      const S* xs = static_cast<const S*>(x);
      S* ds = static_cast<S*>(dx);
      for (int64_t i = 0, ph = phase % period; i < n;) {
        const int64_t len = n - i < kWeightPiece ? n - i : kWeightPiece;
        backward_weights_loop<F>(gs + i, xs + i, ds + i, w + ph, acc ? acc + ph : nullptr, len,
                                 nt);
        i += len;
        ph = (ph + len) % period;
      }
    });
  });
}

// ---- gated ops (../gated.h) ---------------------------------------------------------

// y = act(u) * v over the n elements of one row's halves a and b.
template <class GM, bool kSecond, class S>
static void gated_forward_loop(const S* a, const S* b, S* y, int64_t n, float p, bool nt) {
  const Vec vp(p);
  auto f = [&](Vec va, Vec vb) FA_LAMBDA_INLINE { return kSecond ? GM::forward(vb, va, vp) : GM::forward(va, vb, vp); };
  write_out(
      y, n, nt, [&](int64_t i) FA_LAMBDA_INLINE { return f(load(a + i), load(b + i)); },
      [&](int64_t i, int64_t len) {
        return f(load_partial(a + i, len, 0.0f), load_partial(b + i, len, 0.0f));
      });
}

// da, db from g and the halves a, b; two vectors per iteration as write_out does.
template <class GM, bool kSecond, class S>
static void gated_backward_loop(const S* g, const S* a, const S* b, S* da, S* db, int64_t n,
                                float p, bool nt) {
  const Vec vp(p);
  // (da, db) of the elements [i, i + kLanes), or of the first len of them.
  auto grads = [&](Vec vg, Vec va, Vec vb, Vec& ra, Vec& rb) FA_LAMBDA_INLINE {
    if (kSecond)
      GM::backward(vg, vb, va, vp, rb, ra);
    else
      GM::backward(vg, va, vb, vp, ra, rb);
  };
  auto full = [&](int64_t i, Vec& ra, Vec& rb) FA_LAMBDA_INLINE {
    grads(load(g + i), load(a + i), load(b + i), ra, rb);
  };
  auto part = [&](int64_t i, int64_t len) {
    Vec ra, rb;
    grads(load_partial(g + i, len, 0.0f), load_partial(a + i, len, 0.0f),
          load_partial(b + i, len, 0.0f), ra, rb);
    store_partial(da + i, len, ra);
    store_partial(db + i, len, rb);
  };
  constexpr uintptr_t kVecBytes = kLanes * sizeof(S);
  const uintptr_t addr = reinterpret_cast<uintptr_t>(da);
  int64_t i = 0;
  if (nt && addr % sizeof(S) == 0 &&
      (reinterpret_cast<uintptr_t>(db) - addr) % kVecBytes == 0) {
    const int64_t to_aligned = int64_t((kVecBytes - addr % kVecBytes) % kVecBytes / sizeof(S));
    const int64_t head = to_aligned < n ? to_aligned : n;
    if (head > 0) part(0, head);
    for (i = head; i + 2 * kLanes <= n; i += 2 * kLanes) {
      Vec a0, b0, a1, b1;
      full(i, a0, b0);
      full(i + kLanes, a1, b1);
      store_nt(da + i, a0);
      store_nt(db + i, b0);
      store_nt(da + i + kLanes, a1);
      store_nt(db + i + kLanes, b1);
    }
    for (; i + kLanes <= n; i += kLanes) {
      Vec a0, b0;
      full(i, a0, b0);
      store_nt(da + i, a0);
      store_nt(db + i, b0);
    }
  }
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    Vec a0, b0, a1, b1;
    full(i, a0, b0);
    full(i + kLanes, a1, b1);
    store(da + i, a0);
    store(db + i, b0);
    store(da + i + kLanes, a1);
    store(db + i + kLanes, b1);
  }
  for (; i + kLanes <= n; i += kLanes) {
    Vec a0, b0;
    full(i, a0, b0);
    store(da + i, a0);
    store(db + i, b0);
  }
  if (i < n) part(i, n - i);
}

static void gated_forward(Gate gate, Storage st, const void* a, const void* b, void* y,
                          int64_t n, bool nt) {
  const float p = float(gate_param(gate));
  visit_gate(gate, [&](auto tag) {
    using Tag = decltype(tag);
    using GM = GatedMath<typename Tag::type>;
    visit_storage(st, [&](auto t) {
      using S = typename decltype(t)::type;
      gated_forward_loop<GM, Tag::gate_is_second_half>(
          static_cast<const S*>(a), static_cast<const S*>(b), static_cast<S*>(y), n, p, nt);
    });
  });
}

static void gated_backward(Gate gate, Storage st, const void* g, const void* a, const void* b,
                           void* da, void* db, int64_t n, bool nt) {
  const float p = float(gate_param(gate));
  visit_gate(gate, [&](auto tag) {
    using Tag = decltype(tag);
    using GM = GatedMath<typename Tag::type>;
    visit_storage(st, [&](auto t) {
      using S = typename decltype(t)::type;
      gated_backward_loop<GM, Tag::gate_is_second_half>(
          static_cast<const S*>(g), static_cast<const S*>(a), static_cast<const S*>(b),
          static_cast<S*>(da), static_cast<S*>(db), n, p, nt);
    });
  });
}

}  // namespace FA_CPU_CAP
}  // namespace cpu
}  // namespace fused_act

#include "softmax_impl.h"
#include "maxout_impl.h"

#define FA_STRINGIFY2(x) #x
#define FA_STRINGIFY(x) FA_STRINGIFY2(x)
#define FA_TABLE_NAME2(cap) kernels_##cap
#define FA_TABLE_NAME(cap) FA_TABLE_NAME2(cap)

namespace fused_act {
namespace cpu {
const KernelTable FA_TABLE_NAME(FA_CPU_CAP) = {
    FA_STRINGIFY(FA_CPU_CAP),
    &FA_CPU_CAP::forward,
    &FA_CPU_CAP::backward,
    &FA_CPU_CAP::backward_weighted,
    &FA_CPU_CAP::forward_weights,
    &FA_CPU_CAP::backward_weights,
    &FA_CPU_CAP::softmax_forward,
    &FA_CPU_CAP::softmax_backward,
    &FA_CPU_CAP::softmax_forward_inner,
    &FA_CPU_CAP::softmax_backward_inner,
    &FA_CPU_CAP::gated_forward,
    &FA_CPU_CAP::gated_backward,
};
}  // namespace cpu
}  // namespace fused_act
