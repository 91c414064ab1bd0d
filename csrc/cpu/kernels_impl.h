// The CPU SIMD kernels: one loop per kind of kernel, applied to every activation of
// activations.h.  Included once per instruction set by capability_*.cpp, which define
// FA_CPU_CAP, FA_VEC_BYTES and the matching compiler target.  Float, half and bfloat16
// are computed in float vectors; a tail shorter than one vector goes through a padded
// buffer, so every element takes the same code path and gives the same bits.
#pragma once
#include "kernel_table.h"
#include "simd.h"

namespace fused_act {
namespace cpu {
namespace FA_CPU_CAP {

template <class S>
struct Padded {
  S buf[kLanes];
  Padded(const S* src, int64_t n) {
    memset(buf, 0, sizeof(buf));
    memcpy(buf, src, n * sizeof(S));
  }
};

template <class F, class S>
static void forward_loop(const S* x, S* y, int64_t n, float p) {
  const Vec vp(p);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) store(y + i, F::forward(load(x + i), vp));
  if (i < n) {
    Padded<S> px(x + i, n - i);
    S out[kLanes];
    store(out, F::forward(load(px.buf), vp));
    memcpy(y + i, out, (n - i) * sizeof(S));
  }
}

template <class F, bool kFromOutput, class S>
static void backward_loop(const S* g, const S* s, S* dx, int64_t n, float p) {
  const Vec vp(p);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    store(dx + i, F::template backward<kFromOutput>(load(g + i), load(s + i), vp));
  if (i < n) {
    Padded<S> pg(g + i, n - i), ps(s + i, n - i);
    S out[kLanes];
    store(out, F::template backward<kFromOutput>(load(pg.buf), load(ps.buf), vp));
    memcpy(dx + i, out, (n - i) * sizeof(S));
  }
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
template <class F, class S>
static double backward_weighted_loop(const S* g, const S* x, S* dx, int64_t n, float p,
                                     bool need_weight_grad) {
  const Vec vp(p);
  Vec acc(0.0f);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    Vec vg = load(g + i), vx = load(x + i);
    store(dx + i, F::template backward<false>(vg, vx, vp));
    if (need_weight_grad) acc = acc + F::weight_grad(vg, vx, vp);
  }
  if (i < n) {
    // Zero padding: a zero gradient contributes a zero weight-gradient term.
    Padded<S> pg(g + i, n - i), px(x + i, n - i);
    Vec vg = load(pg.buf), vx = load(px.buf);
    S out[kLanes];
    store(out, F::template backward<false>(vg, vx, vp));
    memcpy(dx + i, out, (n - i) * sizeof(S));
    if (need_weight_grad) acc = acc + F::weight_grad(vg, vx, vp);
  }
  return need_weight_grad ? lane_sum(acc) : 0.0;
}

// The weighted activations with one weight per element (w[i], float).
template <class F, class S>
static void forward_weights_loop(const S* x, S* y, const float* w, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) store(y + i, F::forward(load(x + i), load(w + i)));
  if (i < n) {
    Padded<S> px(x + i, n - i);
    Padded<float> pw(w + i, n - i);
    S out[kLanes];
    store(out, F::forward(load(px.buf), load(pw.buf)));
    memcpy(y + i, out, (n - i) * sizeof(S));
  }
}

template <class F, class S>
static void backward_weights_loop(const S* g, const S* x, S* dx, const float* w, float* acc,
                                  int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const Vec vg = load(g + i), vx = load(x + i), vw = load(w + i);
    store(dx + i, F::template backward<false>(vg, vx, vw));
    if (acc) store(acc + i, load(acc + i) + F::weight_grad(vg, vx, vw));
  }
  if (i < n) {
    Padded<S> pg(g + i, n - i), px(x + i, n - i);
    Padded<float> pw(w + i, n - i), pa(acc ? acc + i : w + i, n - i);
    const Vec vg = load(pg.buf), vx = load(px.buf), vw = load(pw.buf);
    S out[kLanes];
    store(out, F::template backward<false>(vg, vx, vw));
    memcpy(dx + i, out, (n - i) * sizeof(S));
    if (acc) {
      float sum[kLanes];
      store(sum, load(pa.buf) + F::weight_grad(vg, vx, vw));
      memcpy(acc + i, sum, (n - i) * sizeof(float));
    }
  }
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

static void forward(Act act, Storage st, const void* x, void* y, int64_t n, float p) {
  visit_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    visit_storage(st, [&](auto t) {
      using S = typename decltype(t)::type;
      forward_loop<F>(static_cast<const S*>(x), static_cast<S*>(y), n, p);
    });
  });
}

static void backward(Act act, Storage st, const void* g, const void* s, void* dx, int64_t n,
                     float p, bool saved_is_output) {
  visit_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    visit_storage(st, [&](auto t) {
      using S = typename decltype(t)::type;
      auto gp = static_cast<const S*>(g);
      auto sp = static_cast<const S*>(s);
      auto dp = static_cast<S*>(dx);
      if (saved_is_output)
        backward_loop<F, true>(gp, sp, dp, n, p);
      else
        backward_loop<F, false>(gp, sp, dp, n, p);
    });
  });
}

static double backward_weighted(Act act, Storage st, const void* g, const void* x, void* dx,
                                int64_t n, float p, bool need_weight_grad) {
  double result = 0.0;
  auto run = [&](auto a) {
    using F = typename decltype(a)::type;
    visit_storage(st, [&](auto t) {
      using S = typename decltype(t)::type;
      result = backward_weighted_loop<F>(static_cast<const S*>(g), static_cast<const S*>(x),
                                         static_cast<S*>(dx), n, p, need_weight_grad);
    });
  };
  switch (act) {
#define FA_WEIGHTED_CASE(name, F, op) \
  case Act::name: run(ActTag<F>{}); break;
    FA_FOR_EACH_WEIGHTED(FA_WEIGHTED_CASE)
#undef FA_WEIGHTED_CASE
    default: break;  // the operator layer only sends weighted activations here
  }
  return result;
}

static void forward_weights(Act act, Storage st, const void* x, void* y, const float* w,
                            int64_t period, int64_t phase, int64_t n) {
  visit_weighted_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    visit_storage(st, [&](auto t) {
      using S = typename decltype(t)::type;
      const S* xs = static_cast<const S*>(x);
      S* ys = static_cast<S*>(y);
      for (int64_t i = 0, ph = phase % period; i < n;) {
        const int64_t len = n - i < kWeightPiece ? n - i : kWeightPiece;
        forward_weights_loop<F>(xs + i, ys + i, w + ph, len);
        i += len;
        ph = (ph + len) % period;
      }
    });
  });
}

static void backward_weights(Act act, Storage st, const void* g, const void* x, void* dx,
                             const float* w, float* acc, int64_t period, int64_t phase,
                             int64_t n) {
  visit_weighted_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    visit_storage(st, [&](auto t) {
      using S = typename decltype(t)::type;
      const S* gs = static_cast<const S*>(g);
      const S* xs = static_cast<const S*>(x);
      S* ds = static_cast<S*>(dx);
      for (int64_t i = 0, ph = phase % period; i < n;) {
        const int64_t len = n - i < kWeightPiece ? n - i : kWeightPiece;
        backward_weights_loop<F>(gs + i, xs + i, ds + i, w + ph, acc ? acc + ph : nullptr, len);
        i += len;
        ph = (ph + len) % period;
      }
    });
  });
}

}  // namespace FA_CPU_CAP
}  // namespace cpu
}  // namespace fused_act

#include "softmax_impl.h"

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
};
}  // namespace cpu
}  // namespace fused_act
