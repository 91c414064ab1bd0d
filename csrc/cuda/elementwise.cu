// CUDA elementwise kernels: one launcher for every activation of activations.h.
//
// elementwise_kernel applies an op to kIn inputs and writes kOut outputs per element.
// The ops below only pick the functor's forward or backward formula; none is restated
// here.  Math in at::opmath_type (float for half/bfloat16), 64-bit offsets, the current
// stream, launch checked.
//
// Memory, which bounds these kernels: an H100/H200 needs about 3.35-4.8 TB/s x ~0.7 us
// of latency, i.e. 2-3 MB in flight over 132 SMs (16-25 KB per SM), to stay near peak.
// Each thread issues kUnroll = 4 independent 128-bit loads per input before it computes
// or stores anything (64 bytes per input per thread; 8 blocks of 256 threads per SM give
// 128 KB per input in flight), so the exp/tanh chains of sigmoid, swish and elu hide
// behind loads instead of serializing them.  Addresses: when every pointer has the same
// offset from a 16-byte boundary (aligned tensors, in-place ops, equal storage offsets)
// the first few elements are peeled (the "head") and the rest runs on 128-bit accesses,
// with a scalar tail after the last whole vector; pointers at different offsets (say an
// input with a storage offset of one element and a fresh output) run scalar, unrolled
// 8-wide to keep as many loads in flight.
//
// The weighted kernels (prelu, trainable swish: weight w[(o / inner) % channels] for the
// element at flat offset o) divide once per 128-bit vector, by multiply-high (FastDivmod,
// no hardware divide) while offsets fit 32 bits, then step the channel across the
// vector.  Each block walks one contiguous range, so a thread's channel changes only at
// channel boundaries: the weight gradient is summed in registers per run of one channel,
// flushed to a per-block shared-memory total per channel, and each block adds its totals
// to the result with one atomic per channel: no temporary the size of the input (the
// previous version wrote every element's term to memory and summed it afterwards).  The
// order of those float additions depends on scheduling, so the weight gradient can differ
// in its last bits from run to run (as torch's atomics-based reductions do).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

#include "../kernels.h"
#include "launch.h"

namespace fused_act {
namespace {

using cuda_detail::FastDivmod;

constexpr int kThreads = 256;

template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <class T, int N>
struct Ptrs {
  T p[N];
};

// Elements before the first 16-byte boundary at or after p (0 when p is aligned).
template <class scalar_t>
__host__ __device__ inline int head_of(const void* p) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  const int mis = int((reinterpret_cast<uintptr_t>(p) % 16) / sizeof(scalar_t));
  return (kVec - mis) % kVec;
}

// kVec elements per access (1: scalar), kUnroll accesses in flight per input.  The body
// starts `head` elements in (every pointer is 16-byte aligned there when kVec > 1); the
// head and the tail (< kVec elements after the last whole vector) are done by the first
// threads of block 0 and of the last block.  In-place calls alias an input and an output
// (same index, same thread, read before written), so no __restrict__ here; the loads of
// an iteration are issued before its stores in program order, which is all the
// compiler needs to keep them in flight together.
template <int kVec, int kUnroll, int kIn, int kOut, class scalar_t, class Op>
__global__ void __launch_bounds__(kThreads)
    elementwise_kernel(Ptrs<const scalar_t*, kIn> in, Ptrs<scalar_t*, kOut> out, int64_t n,
                       int head, Op op) {
  using opmath_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, kVec>;
  auto apply = [&](int64_t i) {  // one element, scalar
    opmath_t args[kIn], res[kOut];
#pragma unroll
    for (int j = 0; j < kIn; ++j) args[j] = static_cast<opmath_t>(in.p[j][i]);
    op(args, res);
#pragma unroll
    for (int j = 0; j < kOut; ++j) out.p[j][i] = static_cast<scalar_t>(res[j]);
  };
  if (blockIdx.x == 0 && int(threadIdx.x) < head) apply(threadIdx.x);
  const int64_t nvec = (n - head) / kVec;
  constexpr int64_t kTile = int64_t(kThreads) * kUnroll;  // vectors per block and step
  for (int64_t base = int64_t(blockIdx.x) * kTile; base < nvec;
       base += int64_t(gridDim.x) * kTile) {
    P a[kUnroll][kIn];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + u * kThreads + threadIdx.x;
      if (v < nvec) {
#pragma unroll
        for (int j = 0; j < kIn; ++j) a[u][j] = reinterpret_cast<const P*>(in.p[j] + head)[v];
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + u * kThreads + threadIdx.x;
      if (v < nvec) {
        P r[kOut];
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          opmath_t args[kIn], res[kOut];
#pragma unroll
          for (int j = 0; j < kIn; ++j) args[j] = static_cast<opmath_t>(a[u][j].v[k]);
          op(args, res);
#pragma unroll
          for (int j = 0; j < kOut; ++j) r[j].v[k] = static_cast<scalar_t>(res[j]);
        }
#pragma unroll
        for (int j = 0; j < kOut; ++j) reinterpret_cast<P*>(out.p[j] + head)[v] = r[j];
      }
    }
  }
  if (kVec > 1 && blockIdx.x == gridDim.x - 1) {
    const int64_t t = head + nvec * kVec + threadIdx.x;
    if (t < n) apply(t);
  }
}

// Blocks of the elementwise grids: two waves of full SMs (8 blocks of 256 threads), then
// grid-stride.  Cached once per device.
int max_blocks() {
  return cuda_detail::current_device_props().sms * (2048 / kThreads) * 2;
}

template <int kIn, int kOut, class scalar_t, class Op>
void launch(Ptrs<const scalar_t*, kIn> in, Ptrs<scalar_t*, kOut> out, int64_t n, Op op) {
  if (n == 0) return;
  constexpr int kVec = 16 / sizeof(scalar_t);
  // The vector kernel needs every pointer at the same offset from a 16-byte boundary.
  const int head = head_of<scalar_t>(in.p[0]);
  bool same = true;
  for (int j = 0; j < kIn; ++j) same &= head_of<scalar_t>(in.p[j]) == head;
  for (int j = 0; j < kOut; ++j) same &= head_of<scalar_t>(out.p[j]) == head;
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (same && n >= head + kVec) {
    constexpr int kUnroll = 4;
    auto kernel = elementwise_kernel<kVec, kUnroll, kIn, kOut, scalar_t, Op>;
    cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
    const int64_t tiles = ((n - head) / kVec + kThreads * kUnroll - 1) / (kThreads * kUnroll);
    const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(tiles, max_blocks()));
    kernel<<<blocks, kThreads, 0, stream>>>(in, out, n, head, op);
  } else {
    constexpr int kUnroll = 8;
    auto kernel = elementwise_kernel<1, kUnroll, kIn, kOut, scalar_t, Op>;
    cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
    const int64_t tiles = (n + kThreads * kUnroll - 1) / (kThreads * kUnroll);
    const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(tiles, max_blocks()));
    kernel<<<blocks, kThreads, 0, stream>>>(in, out, n, 0, op);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---- the ops: which formula of the functor ------------------------------------------

template <class F, class T>
struct ForwardOp {
  T p;
  __device__ __forceinline__ void operator()(const T (&a)[1], T (&r)[1]) const {
    r[0] = F::forward(a[0], p);
  }
};

template <class F, bool kFromOutput, class T>
struct BackwardOp {
  T p;
  __device__ __forceinline__ void operator()(const T (&a)[2], T (&r)[1]) const {
    r[0] = F::template backward<kFromOutput>(a[0], a[1], p);
  }
};

// ---- weighted kernels ---------------------------------------------------------------

// The channel of flat offset o is (o / inner) % channels; `wide` when offsets may not
// fit 32 bits (then a 64-bit divide, once per vector).
struct ChannelMap {
  int64_t inner, channels;
  FastDivmod by_inner, by_channels;

  // (channel, position within its run of `inner` elements) of offset o.
  template <bool kWide>
  __device__ __forceinline__ void locate(int64_t o, int64_t& c, int64_t& r) const {
    if (kWide) {
      const int64_t q = o / inner;
      r = o - q * inner;
      c = q % channels;
    } else {
      const uint32_t q = by_inner.div(uint32_t(o));
      r = int64_t(uint32_t(o) - q * uint32_t(inner));
      c = int64_t(q - by_channels.div(q) * uint32_t(channels));
    }
  }
};

enum class WMode { kForward, kBackward, kBackwardWeightGrad };

// kForward: out = F::forward(a, w[c]).  kBackward*: out = dx from (a = g, b = x, w[c]);
// kBackwardWeightGrad also sums F::weight_grad per channel into dw_acc (opmath type,
// zeroed by the caller).  Block b owns elements [b * chunk, (b + 1) * chunk) (chunk a
// multiple of kVec; pointers 16-byte aligned when kVec > 1; the last block also takes
// the < kVec elements after its last whole vector).  smem_channels: the per-channel
// totals go through shared memory (C * sizeof(acc) bytes of dynamic shared memory);
// otherwise each run of a channel is added to dw_acc directly.
template <WMode kMode, class F, int kVec, bool kWide, class scalar_t>
__global__ void __launch_bounds__(kThreads)
    weighted_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                    const scalar_t* __restrict__ w, scalar_t* __restrict__ out,
                    at::opmath_type<scalar_t>* __restrict__ dw_acc, int64_t n, int64_t chunk,
                    ChannelMap map, bool smem_channels) {
  using T = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, kVec>;
  constexpr bool kGrad = kMode == WMode::kBackwardWeightGrad;
  constexpr bool kTwo = kMode != WMode::kForward;
  constexpr int kUnroll = 2;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* block_acc = reinterpret_cast<T*>(smem_raw);
  if (kGrad && smem_channels) {
    for (int64_t c = threadIdx.x; c < map.channels; c += kThreads) block_acc[c] = T(0);
    __syncthreads();
  }
  int64_t run_c = -1;  // the channel whose gradient terms `run` holds
  T run = T(0);
  auto flush = [&] {
    if (run_c >= 0) {
      if (smem_channels)
        atomicAdd(block_acc + run_c, run);
      else
        atomicAdd(dw_acc + run_c, run);
    }
  };
  // Elements e .. e + cnt - 1 (cnt <= kVec) with values av[], bv[] -> out.
  auto compute = [&](int64_t e, int cnt, const scalar_t (&av)[kVec], const scalar_t (&bv)[kVec],
                     scalar_t (&ov)[kVec]) {
    int64_t c, r;
    map.template locate<kWide>(e, c, r);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      if (k < cnt) {
        const T p = static_cast<T>(w[c]);
        if constexpr (kMode == WMode::kForward) {
          ov[k] = static_cast<scalar_t>(F::forward(static_cast<T>(av[k]), p));
        } else {
          const T gk = static_cast<T>(av[k]), xk = static_cast<T>(bv[k]);
          ov[k] = static_cast<scalar_t>(F::template backward<false>(gk, xk, p));
          if constexpr (kGrad) {
            if (c != run_c) {
              flush();
              run_c = c;
              run = T(0);
            }
            run += F::weight_grad(gk, xk, p);
          }
        }
        if (++r == map.inner) {
          r = 0;
          if (++c == map.channels) c = 0;
        }
      }
    }
  };
  const int64_t begin = int64_t(blockIdx.x) * chunk;
  const int64_t end = n < begin + chunk ? n : begin + chunk;
  const int64_t nvec = (end - begin) / kVec;
  constexpr int64_t kTile = int64_t(kThreads) * kUnroll;
  for (int64_t base = 0; base < nvec; base += kTile) {
    P av[kUnroll], bv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + u * kThreads + threadIdx.x;
      if (v < nvec) {
        av[u] = reinterpret_cast<const P*>(a + begin)[v];
        if (kTwo) bv[u] = reinterpret_cast<const P*>(b + begin)[v];
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + u * kThreads + threadIdx.x;
      if (v < nvec) {
        P ov;
        compute(begin + v * kVec, kVec, av[u].v, bv[u].v, ov.v);
        reinterpret_cast<P*>(out + begin)[v] = ov;
      }
    }
  }
  // The tail of the tensor: fewer than kVec elements, one thread.
  const int64_t t = begin + nvec * kVec;
  if (kVec > 1 && t < end && threadIdx.x == 0) {
    const int cnt = int(end - t);
    scalar_t av[kVec], bv[kVec], ov[kVec];
    for (int k = 0; k < cnt; ++k) {
      av[k] = a[t + k];
      if (kTwo) bv[k] = b[t + k];
    }
    compute(t, cnt, av, bv, ov);
    for (int k = 0; k < cnt; ++k) out[t + k] = ov[k];
  }
  if constexpr (kGrad) {
    flush();
    if (smem_channels) {
      __syncthreads();
      for (int64_t c = threadIdx.x; c < map.channels; c += kThreads)
        if (block_acc[c] != T(0)) atomicAdd(dw_acc + c, block_acc[c]);
    }
  }
}

// Per-channel totals go through shared memory up to this many bytes (under the 48 KiB
// a launch gets without opting in).
constexpr int64_t kMaxChannelSmem = 32 * 1024;

template <WMode kMode, class F, class scalar_t>
void launch_weighted(const scalar_t* a, const scalar_t* b, const scalar_t* w, scalar_t* out,
                     at::opmath_type<scalar_t>* dw_acc, int64_t n, int64_t inner,
                     int64_t channels) {
  using T = at::opmath_type<scalar_t>;
  constexpr int kVec = 16 / sizeof(scalar_t);
  if (n == 0) return;
  bool aligned = reinterpret_cast<uintptr_t>(a) % 16 == 0 &&
                 reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (b) aligned &= reinterpret_cast<uintptr_t>(b) % 16 == 0;
  const bool wide = n > int64_t(UINT32_MAX);
  ChannelMap map{inner, channels, FastDivmod(), FastDivmod()};
  if (!wide) {
    map.by_inner = FastDivmod(uint32_t(inner));
    map.by_channels = FastDivmod(uint32_t(channels));
  }
  const bool smem_channels =
      kMode == WMode::kBackwardWeightGrad && channels * int64_t(sizeof(T)) <= kMaxChannelSmem;
  const size_t smem = smem_channels ? size_t(channels) * sizeof(T) : 0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto go = [&](auto kernel, int vec) {
    cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
    // Blocks of contiguous ranges, whole tiles of 2 x 256 vectors where possible.
    const int64_t per_block_min = int64_t(kThreads) * 2 * vec;
    int64_t blocks = std::min<int64_t>((n + per_block_min - 1) / per_block_min, max_blocks());
    int64_t chunk = (n + blocks - 1) / blocks;
    chunk = (chunk + vec - 1) / vec * vec;
    blocks = (n + chunk - 1) / chunk;
    kernel<<<blocks, kThreads, smem, stream>>>(a, b, w, out, dw_acc, n, chunk, map,
                                               smem_channels);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (aligned) {
    if (wide)
      go(weighted_kernel<kMode, F, kVec, true, scalar_t>, kVec);
    else
      go(weighted_kernel<kMode, F, kVec, false, scalar_t>, kVec);
  } else {
    if (wide)
      go(weighted_kernel<kMode, F, 1, true, scalar_t>, 1);
    else
      go(weighted_kernel<kMode, F, 1, false, scalar_t>, 1);
  }
}

template <class Fn>
void visit_weighted(Act act, Fn&& fn) {
  switch (act) {
#define FA_WEIGHTED_CASE(name, F, op) \
  case Act::name: fn(ActTag<F>{}); return;
    FA_FOR_EACH_WEIGHTED(FA_WEIGHTED_CASE)
#undef FA_WEIGHTED_CASE
    default: TORCH_CHECK(false, "fused_act: activation has no weighted form");
  }
}

#define FA_DISPATCH_FLOATING(TYPE, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, "fused_act", __VA_ARGS__)

}  // namespace

void CudaKernels::forward(Act act, const at::Tensor& x, const at::Tensor& y, double p) {
  c10::cuda::CUDAGuard guard(x.device());
  visit_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    FA_DISPATCH_FLOATING(x.scalar_type(), [&] {
      using T = at::opmath_type<scalar_t>;
      launch<1, 1, scalar_t>({{x.const_data_ptr<scalar_t>()}}, {{y.mutable_data_ptr<scalar_t>()}},
                             x.numel(), ForwardOp<F, T>{T(p)});
    });
  });
}

void CudaKernels::backward(Act act, const at::Tensor& g, const at::Tensor& s, const at::Tensor& dx,
                           double p, bool saved_is_output) {
  c10::cuda::CUDAGuard guard(g.device());
  visit_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    FA_DISPATCH_FLOATING(g.scalar_type(), [&] {
      using T = at::opmath_type<scalar_t>;
      Ptrs<const scalar_t*, 2> in{{g.const_data_ptr<scalar_t>(), s.const_data_ptr<scalar_t>()}};
      Ptrs<scalar_t*, 1> out{{dx.mutable_data_ptr<scalar_t>()}};
      if (saved_is_output)
        launch<2, 1>(in, out, g.numel(), BackwardOp<F, true, T>{T(p)});
      else
        launch<2, 1>(in, out, g.numel(), BackwardOp<F, false, T>{T(p)});
    });
  });
}

void CudaKernels::weighted_forward(Act act, const at::Tensor& x, const at::Tensor& w,
                                   const at::Tensor& y, int64_t inner, int64_t channels) {
  c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor wc = w.contiguous();
  visit_weighted(act, [&](auto a) {
    using F = typename decltype(a)::type;
    FA_DISPATCH_FLOATING(x.scalar_type(), [&] {
      launch_weighted<WMode::kForward, F, scalar_t>(
          x.const_data_ptr<scalar_t>(), nullptr, wc.const_data_ptr<scalar_t>(),
          y.mutable_data_ptr<scalar_t>(), nullptr, x.numel(), inner, channels);
    });
  });
}

void CudaKernels::weighted_backward(Act act, const at::Tensor& g, const at::Tensor& x,
                                    const at::Tensor& w, const at::Tensor& dx,
                                    const at::Tensor& dw, int64_t inner, int64_t channels) {
  c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor wc = w.contiguous();
  // The per-channel sums, in the math type (float for half/bfloat16).
  at::Tensor acc = dw.defined()
                       ? at::zeros({channels}, x.options().dtype(at::toOpMathType(x.scalar_type())))
                       : at::Tensor();
  visit_weighted(act, [&](auto a) {
    using F = typename decltype(a)::type;
    FA_DISPATCH_FLOATING(x.scalar_type(), [&] {
      using T = at::opmath_type<scalar_t>;
      const scalar_t* gp = g.const_data_ptr<scalar_t>();
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      scalar_t* dp = dx.mutable_data_ptr<scalar_t>();
      if (dw.defined())
        launch_weighted<WMode::kBackwardWeightGrad, F, scalar_t>(
            gp, xp, wc.const_data_ptr<scalar_t>(), dp, acc.mutable_data_ptr<T>(), x.numel(),
            inner, channels);
      else
        launch_weighted<WMode::kBackward, F, scalar_t>(gp, xp, wc.const_data_ptr<scalar_t>(),
                                                       dp, nullptr, x.numel(), inner, channels);
    });
  });
  if (dw.defined()) dw.copy_(acc.view(dw.sizes()));
}

}  // namespace fused_act
