// CUDA elementwise kernels: one launcher for every activation of activations.h (and its
// row form for the gated ops of gated.h).
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
// behind loads instead of serializing them.  Addresses: the first few elements up to a
// 16-byte boundary of one stream, the lead, are peeled (the "head"), the rest runs in
// whole vectors with a scalar tail after the last one.  The lead is the phase (offset
// from a 16-byte boundary) shared by the most streams, an input on a tie (launch.h,
// pick_lead): every stream in its phase (all of them for aligned tensors, in-place ops,
// equal storage offsets) uses 128-bit accesses; a stream out of phase (say a gradient
// with a storage offset of one element next to an aligned saved tensor and output)
// reads or writes the same elements one by one, with the same bytes in flight (kUnroll
// x 16 bytes per thread), so one odd stream no longer turns the others scalar.  That
// case is its own instantiation (kMixed): the scalar accesses of a 2-byte type need
// twice the registers of its vectors (46 -> 82 for a float16 backward), which must not
// cost the common all-aligned case occupancy.
//
// The weighted kernels (prelu, trainable swish: weight w[(o / inner) % channels] for the
// element at flat offset o) divide once per 128-bit vector, by multiply-high (FastDivmod,
// no hardware divide) while offsets fit 32 bits, then step the channel across the
// vector.  Each block walks one contiguous range, so a thread's channel changes only at
// channel boundaries: the weight gradient is summed in registers per run of one channel,
// flushed to a per-block shared-memory total per channel, and each block adds its totals
// to the result with one atomic per channel: no temporary the size of the input (the
// previous version wrote every element's term to memory and summed it afterwards).
// Determinism: with one weight (a shared PReLU slope or Swish beta, the common case) the
// gradient is the same on every run: each thread's terms stay in its register, a fixed
// shuffle tree sums the block, the block writes its total to its own slot of a small
// buffer (one value per block), and a one-block kernel sums the slots in a fixed order;
// no second pass over the data.  With one weight per channel the atomics above make the
// order of the float additions depend on scheduling, so that gradient can differ in its
// last bits from run to run (as torch's atomics-based reductions do).  Making it
// deterministic in one pass needs an ordered reduction per channel inside each block
// (the runs of one channel are spread over all threads of a block when `inner` is small,
// and a block can touch thousands of channels), plus one buffer slot per (block,
// channel touched): a segmented reduction per tile through shared memory, not done yet.
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
using cuda_detail::head_of;
using cuda_detail::load_vec;
using cuda_detail::Pack;
using cuda_detail::store_vec;

constexpr int kThreads = 256;

template <class T, int N>
struct Ptrs {
  T p[N];
};

// kVec elements per access, kUnroll accesses in flight per input.  The body starts
// `head` elements in (head <= n; the lead stream is 16-byte aligned there); with
// kMixed, bit j of vec_mask says input j, bit kIn + j output j, is in the lead's phase
// (vector accesses), else it goes element by element (launch.h, load_vec / store_vec);
// without, every stream is in phase.  The head and the tail (< kVec elements after the
// last whole vector) are done by the first threads of block 0 and of the last block.  In-place calls alias an input and an output
// (same index, same thread, read before written), so no __restrict__ here; the loads of
// an iteration are issued before its stores in program order, which is all the
// compiler needs to keep them in flight together.
template <int kVec, int kUnroll, bool kMixed, int kIn, int kOut, class scalar_t, class Op>
__global__ void __launch_bounds__(kThreads)
    elementwise_kernel(Ptrs<const scalar_t*, kIn> in, Ptrs<scalar_t*, kOut> out, int64_t n,
                       int head, unsigned vec_mask, Op op) {
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
        for (int j = 0; j < kIn; ++j)
          a[u][j] = load_vec<kVec>(in.p[j] + head + v * kVec, !kMixed || ((vec_mask >> j) & 1u));
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
        for (int j = 0; j < kOut; ++j)
          store_vec<kVec>(out.p[j] + head + v * kVec, r[j],
                          !kMixed || ((vec_mask >> (kIn + j)) & 1u));
      }
    }
  }
  if (blockIdx.x == gridDim.x - 1) {
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
  static_assert(kIn + kOut <= 3, "pick_lead below lists at most three streams");
  const void* streams[3] = {};
  for (int j = 0; j < kIn; ++j) streams[j] = in.p[j];
  for (int j = 0; j < kOut; ++j) streams[kIn + j] = out.p[j];
  const cuda_detail::Lead lead =
      kIn + kOut == 2 ? cuda_detail::pick_lead<scalar_t>({streams[0], streams[1]})
                      : cuda_detail::pick_lead<scalar_t>({streams[0], streams[1], streams[2]});
  const int head = head_of<scalar_t>(streams[lead.index], n);
  auto stream = c10::cuda::getCurrentCUDAStream();
  constexpr int kUnroll = 4;
  auto go = [&](auto kernel) {
    cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
    const int64_t tiles = ((n - head) / kVec + kThreads * kUnroll - 1) / (kThreads * kUnroll);
    const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(tiles, max_blocks()));
    kernel<<<blocks, kThreads, 0, stream>>>(in, out, n, head, lead.vec, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (lead.vec == (1u << (kIn + kOut)) - 1)
    go(elementwise_kernel<kVec, kUnroll, false, kIn, kOut, scalar_t, Op>);
  else
    go(elementwise_kernel<kVec, kUnroll, true, kIn, kOut, scalar_t, Op>);
}

// ---- rows: the same kind of loop over streams that advance by their own pitch ---------
// Element c of row r of stream j sits at p_j + r * pitch_j + c, for rows x L elements
// (the gated ops: the halves a, b of row r at x + r * 2L and x + r * 2L + L, the output
// at y + r * L).  The work is the rows x L elements as one range, kVec elements per
// access (so rows of few elements still fill the blocks; one row, outer = 1, too).
// kVec > 1 only when every stream and pitch is 16-byte aligned and kVec divides L (the
// common case: hidden sizes are multiples of 8); otherwise kVec = 1 (scalar accesses,
// the same loop).  The row of a vector comes from one multiply-high (FastDivmod) while
// the number of vectors fits 32 bits, else a 64-bit divide.
template <int kIn, int kOut>
struct RowMap {
  int64_t nvec;         // vectors in all: rows * (L / kVec)
  int64_t per_row;      // vectors per row: L / kVec
  FastDivmod by_row;    // division by per_row when !wide
  bool wide;
  int64_t pitch_in[kIn], pitch_out[kOut];  // elements between rows, per stream
};

template <int kVec, int kUnroll, int kIn, int kOut, class scalar_t, class Op>
__global__ void __launch_bounds__(kThreads)
    elementwise_rows_kernel(Ptrs<const scalar_t*, kIn> in, Ptrs<scalar_t*, kOut> out,
                            RowMap<kIn, kOut> map, Op op) {
  using opmath_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, kVec>;
  constexpr int64_t kTile = int64_t(kThreads) * kUnroll;
  // (row, element within the row) of vector v.
  auto locate = [&](int64_t v, int64_t& r, int64_t& c) {
    r = map.wide ? v / map.per_row : int64_t(map.by_row.div(uint32_t(v)));
    c = (v - r * map.per_row) * kVec;
  };
  for (int64_t base = int64_t(blockIdx.x) * kTile; base < map.nvec;
       base += int64_t(gridDim.x) * kTile) {
    P a[kUnroll][kIn];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + u * kThreads + threadIdx.x;
      if (v < map.nvec) {
        int64_t r, c;
        locate(v, r, c);
#pragma unroll
        for (int j = 0; j < kIn; ++j)
          a[u][j] = load_vec<kVec>(in.p[j] + r * map.pitch_in[j] + c, true);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + u * kThreads + threadIdx.x;
      if (v < map.nvec) {
        P res[kOut];
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          opmath_t args[kIn], o[kOut];
#pragma unroll
          for (int j = 0; j < kIn; ++j) args[j] = static_cast<opmath_t>(a[u][j].v[k]);
          op(args, o);
#pragma unroll
          for (int j = 0; j < kOut; ++j) res[j].v[k] = static_cast<scalar_t>(o[j]);
        }
        int64_t r, c;
        locate(v, r, c);
#pragma unroll
        for (int j = 0; j < kOut; ++j)
          store_vec<kVec>(out.p[j] + r * map.pitch_out[j] + c, res[j], true);
      }
    }
  }
}

template <int kIn, int kOut, class scalar_t, class Op>
void launch_rows(Ptrs<const scalar_t*, kIn> in, Ptrs<scalar_t*, kOut> out, int64_t rows,
                 int64_t len, const int64_t (&pitch_in)[kIn], const int64_t (&pitch_out)[kOut],
                 Op op) {
  if (rows == 0 || len == 0) return;
  constexpr int kVec = 16 / sizeof(scalar_t);
  bool aligned = len % kVec == 0;
  for (int j = 0; j < kIn; ++j)
    aligned = aligned && reinterpret_cast<uintptr_t>(in.p[j]) % 16 == 0 && pitch_in[j] % kVec == 0;
  for (int j = 0; j < kOut; ++j)
    aligned = aligned && reinterpret_cast<uintptr_t>(out.p[j]) % 16 == 0 &&
              pitch_out[j] % kVec == 0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  constexpr int kUnroll = 4;
  auto go = [&](auto kernel, int vec) {
    RowMap<kIn, kOut> map;
    map.per_row = len / vec;
    map.nvec = rows * map.per_row;
    map.wide = map.nvec > int64_t(UINT32_MAX);
    map.by_row = map.wide ? FastDivmod() : FastDivmod(uint32_t(map.per_row));
    for (int j = 0; j < kIn; ++j) map.pitch_in[j] = pitch_in[j];
    for (int j = 0; j < kOut; ++j) map.pitch_out[j] = pitch_out[j];
    cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
    const int64_t tiles = (map.nvec + kThreads * kUnroll - 1) / (kThreads * kUnroll);
    const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(tiles, max_blocks()));
    kernel<<<blocks, kThreads, 0, stream>>>(in, out, map, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (aligned)
    go(elementwise_rows_kernel<kVec, kUnroll, kIn, kOut, scalar_t, Op>, kVec);
  else
    go(elementwise_rows_kernel<1, kUnroll, kIn, kOut, scalar_t, Op>, 1);
}

// ---- the ops: which formula of the functor ------------------------------------------

// Both scalar parameters (p, q), through Params<F> (activations.h).
template <class F, class T>
struct ForwardOp {
  T p, q;
  __device__ __forceinline__ void operator()(const T (&a)[1], T (&r)[1]) const {
    r[0] = Params<F>::forward(a[0], p, q);
  }
};

template <class F, bool kFromOutput, class T>
struct BackwardOp {
  T p, q;
  __device__ __forceinline__ void operator()(const T (&a)[2], T (&r)[1]) const {
    r[0] = Params<F>::template backward<kFromOutput>(a[0], a[1], p, q);
  }
};

// The gated ops (../gated.h): inputs (a, b) -> y; backward (g, a, b) -> (da, db).
template <class GM, bool kSecond, class T>
struct GatedForwardOp {
  T p;
  __device__ __forceinline__ void operator()(const T (&a)[2], T (&r)[1]) const {
    r[0] = kSecond ? GM::forward(a[1], a[0], p) : GM::forward(a[0], a[1], p);
  }
};

template <class GM, bool kSecond, class T>
struct GatedBackwardOp {
  T p;
  __device__ __forceinline__ void operator()(const T (&a)[3], T (&r)[2]) const {
    if (kSecond)
      GM::backward(a[0], a[2], a[1], p, r[1], r[0]);
    else
      GM::backward(a[0], a[1], a[2], p, r[0], r[1]);
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

// The sum of v over the block's threads by a fixed tree (xor shuffles, then the warps'
// totals in order): the same bits on every run.  The result is in thread 0.
template <class T>
__device__ T block_sum_ordered(T v) {
  __shared__ T warp_total[kThreads / 32];
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) warp_total[threadIdx.x / 32] = v;
  __syncthreads();
  T total = T(0);
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += warp_total[w];
  return total;
}

// The weight gradient of one channel from the blocks' totals, summed in block order by
// one block of kThreads threads (thread t: blocks t, t + kThreads, ...).
template <class T>
__global__ void __launch_bounds__(kThreads)
    sum_block_totals(const T* __restrict__ totals, int64_t blocks, T* __restrict__ dw_acc) {
  T v = T(0);
  for (int64_t b = threadIdx.x; b < blocks; b += kThreads) v += totals[b];
  v = block_sum_ordered(v);
  if (threadIdx.x == 0) dw_acc[0] = v;
}

// kForward: out = F::forward(a, w[c]).  kBackward*: out = dx from (a = g, b = x, w[c]);
// kBackwardWeightGrad also sums F::weight_grad per channel into dw_acc (opmath type,
// zeroed by the caller).  The first `head` elements (up to the lead stream's 16-byte
// boundary) are done by thread 0 of block 0; block k owns elements [head + k * chunk,
// head + (k + 1) * chunk) (chunk a multiple of kVec, so the lead is aligned at every
// vector), the last block also the < kVec elements after its last whole vector.  With
// kMixed, bits 0, 1, 2 of vec_mask: a, b (when there is one), out in the lead's phase
// (vector accesses; the others element by element, launch.h); without, all are.
// smem_channels: the per-channel
// totals go through shared memory (C * sizeof(acc) bytes of dynamic shared memory);
// otherwise each run of a channel is added to dw_acc directly.  With one channel,
// block_totals (one slot per block) takes the block's total instead, in a fixed order.
template <WMode kMode, class F, int kVec, bool kWide, bool kMixed, class scalar_t>
__global__ void __launch_bounds__(kThreads)
    weighted_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                    const scalar_t* __restrict__ w, scalar_t* __restrict__ out,
                    at::opmath_type<scalar_t>* __restrict__ dw_acc,
                    at::opmath_type<scalar_t>* __restrict__ block_totals, int64_t n, int head,
                    int64_t chunk, unsigned vec_mask, ChannelMap map, bool smem_channels) {
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
  // Fewer than kVec elements from t, one thread: the head and the tail of the tensor.
  auto partial = [&](int64_t t, int cnt) {
    scalar_t av[kVec], bv[kVec], ov[kVec];
    for (int k = 0; k < cnt; ++k) {
      av[k] = a[t + k];
      if (kTwo) bv[k] = b[t + k];
    }
    compute(t, cnt, av, bv, ov);
    for (int k = 0; k < cnt; ++k) out[t + k] = ov[k];
  };
  if (head > 0 && blockIdx.x == 0 && threadIdx.x == 0) partial(0, head);
  const bool va = !kMixed || (vec_mask & 1u), vb = !kMixed || ((vec_mask >> 1) & 1u);
  const bool vo = !kMixed || ((vec_mask >> (kTwo ? 2 : 1)) & 1u);
  const int64_t begin = head + int64_t(blockIdx.x) * chunk;
  const int64_t end = n < begin + chunk ? n : begin + chunk;
  const int64_t nvec = begin < end ? (end - begin) / kVec : 0;
  constexpr int64_t kTile = int64_t(kThreads) * kUnroll;
  for (int64_t base = 0; base < nvec; base += kTile) {
    P av[kUnroll], bv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + u * kThreads + threadIdx.x;
      if (v < nvec) {
        av[u] = load_vec<kVec>(a + begin + v * kVec, va);
        if (kTwo) bv[u] = load_vec<kVec>(b + begin + v * kVec, vb);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + u * kThreads + threadIdx.x;
      if (v < nvec) {
        P ov;
        compute(begin + v * kVec, kVec, av[u].v, bv[u].v, ov.v);
        store_vec<kVec>(out + begin + v * kVec, ov, vo);
      }
    }
  }
  const int64_t t = begin + nvec * kVec;
  if (t < end && threadIdx.x == 0) partial(t, int(end - t));
  if constexpr (kGrad) {
    if (map.channels == 1) {  // every term is in `run` (channel 0 never changes)
      const T total = block_sum_ordered(run_c == 0 ? run : T(0));
      if (threadIdx.x == 0) block_totals[blockIdx.x] = total;
      return;
    }
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
  const cuda_detail::Lead lead = b ? cuda_detail::pick_lead<scalar_t>({a, b, out})
                                   : cuda_detail::pick_lead<scalar_t>({a, out});
  const int head = head_of<scalar_t>(lead.index == 0 ? static_cast<const void*>(a)
                                     : lead.index == 1 && b ? static_cast<const void*>(b)
                                                            : static_cast<const void*>(out),
                                     n);
  const bool wide = n > int64_t(UINT32_MAX);
  ChannelMap map{inner, channels, FastDivmod(), FastDivmod()};
  if (!wide) {
    map.by_inner = FastDivmod(uint32_t(inner));
    map.by_channels = FastDivmod(uint32_t(channels));
  }
  const bool smem_channels = kMode == WMode::kBackwardWeightGrad && channels > 1 &&
                             channels * int64_t(sizeof(T)) <= kMaxChannelSmem;
  const size_t smem = smem_channels ? size_t(channels) * sizeof(T) : 0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto go = [&](auto kernel) {
    cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
    // Blocks of contiguous ranges after the head, whole tiles of 2 x 256 vectors where
    // possible (a tensor of no more than the head: one block, which does the head).
    const int64_t body = n - head;
    const int64_t per_block_min = int64_t(kThreads) * 2 * kVec;
    int64_t blocks = std::max<int64_t>(
        1, std::min<int64_t>((body + per_block_min - 1) / per_block_min, max_blocks()));
    int64_t chunk = (body + blocks - 1) / blocks;
    chunk = std::max<int64_t>(kVec, (chunk + kVec - 1) / kVec * kVec);
    blocks = std::max<int64_t>(1, (body + chunk - 1) / chunk);
    const bool ordered = kMode == WMode::kBackwardWeightGrad && channels == 1;
    at::Tensor totals;  // one slot per block, on this stream (the caching allocator)
    if (ordered)
      totals = at::empty({blocks}, at::TensorOptions()
                                       .dtype(c10::CppTypeToScalarType<T>::value)
                                       .device(at::kCUDA, c10::cuda::current_device()));
    T* totals_p = ordered ? totals.mutable_data_ptr<T>() : nullptr;
    kernel<<<blocks, kThreads, smem, stream>>>(a, b, w, out, dw_acc, totals_p, n, head, chunk,
                                               lead.vec, map, smem_channels);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (ordered) {
      sum_block_totals<T><<<1, kThreads, 0, stream>>>(totals_p, blocks, dw_acc);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  };
  const bool mixed = lead.vec != (b ? 7u : 3u);
  if (wide && mixed)
    go(weighted_kernel<kMode, F, kVec, true, true, scalar_t>);
  else if (wide)
    go(weighted_kernel<kMode, F, kVec, true, false, scalar_t>);
  else if (mixed)
    go(weighted_kernel<kMode, F, kVec, false, true, scalar_t>);
  else
    go(weighted_kernel<kMode, F, kVec, false, false, scalar_t>);
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

void CudaKernels::forward(Act act, const at::Tensor& x, const at::Tensor& y, double p,
                          double q) {
  c10::cuda::CUDAGuard guard(x.device());
  visit_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    FA_DISPATCH_FLOATING(x.scalar_type(), [&] {
      using T = at::opmath_type<scalar_t>;
      launch<1, 1, scalar_t>({{x.const_data_ptr<scalar_t>()}}, {{y.mutable_data_ptr<scalar_t>()}},
                             x.numel(), ForwardOp<F, T>{T(p), T(q)});
    });
  });
}

void CudaKernels::backward(Act act, const at::Tensor& g, const at::Tensor& s, const at::Tensor& dx,
                           double p, double q, bool saved_is_output) {
  c10::cuda::CUDAGuard guard(g.device());
  visit_act(act, [&](auto a) {
    using F = typename decltype(a)::type;
    FA_DISPATCH_FLOATING(g.scalar_type(), [&] {
      using T = at::opmath_type<scalar_t>;
      Ptrs<const scalar_t*, 2> in{{g.const_data_ptr<scalar_t>(), s.const_data_ptr<scalar_t>()}};
      Ptrs<scalar_t*, 1> out{{dx.mutable_data_ptr<scalar_t>()}};
      if (saved_is_output)
        launch<2, 1>(in, out, g.numel(), BackwardOp<F, true, T>{T(p), T(q)});
      else
        launch<2, 1>(in, out, g.numel(), BackwardOp<F, false, T>{T(p), T(q)});
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

void CudaKernels::gated_forward(Gate gate, const at::Tensor& x, const at::Tensor& y,
                                int64_t outer, int64_t half) {
  c10::cuda::CUDAGuard guard(x.device());
  visit_gate(gate, [&](auto tag) {
    using Tag = decltype(tag);
    using GM = GatedMath<typename Tag::type>;
    FA_DISPATCH_FLOATING(x.scalar_type(), [&] {
      using T = at::opmath_type<scalar_t>;
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      Ptrs<const scalar_t*, 2> in{{xp, xp + half}};
      Ptrs<scalar_t*, 1> out{{y.mutable_data_ptr<scalar_t>()}};
      launch_rows<2, 1>(in, out, outer, half, {2 * half, 2 * half}, {half},
                        GatedForwardOp<GM, Tag::gate_is_second_half, T>{T(gate_param(gate))});
    });
  });
}

void CudaKernels::gated_backward(Gate gate, const at::Tensor& g, const at::Tensor& x,
                                 const at::Tensor& dx, int64_t outer, int64_t half) {
  c10::cuda::CUDAGuard guard(x.device());
  visit_gate(gate, [&](auto tag) {
    using Tag = decltype(tag);
    using GM = GatedMath<typename Tag::type>;
    FA_DISPATCH_FLOATING(x.scalar_type(), [&] {
      using T = at::opmath_type<scalar_t>;
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      scalar_t* dp = dx.mutable_data_ptr<scalar_t>();
      Ptrs<const scalar_t*, 3> in{{g.const_data_ptr<scalar_t>(), xp, xp + half}};
      Ptrs<scalar_t*, 2> out{{dp, dp + half}};
      launch_rows<3, 2>(in, out, outer, half, {half, 2 * half, 2 * half}, {2 * half, 2 * half},
                        GatedBackwardOp<GM, Tag::gate_is_second_half, T>{T(gate_param(gate))});
    });
  });
}

}  // namespace fused_act
