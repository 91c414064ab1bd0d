// CUDA softmax / log-softmax (formulas in ../softmax.h, none restated here):
//   forward   y  = exp(x - m) / s            or  (x - m) - log(s)
//   backward  dx = y * (dy - sum(dy * y))    or  dy - exp(y) * sum(dy)
// with m = row max and s = sum exp(x - m).  Backward saves only the output y.
//
// Rows of n contiguous elements, one fused kernel per direction and tier:
//   * warp_*  (n <= 1024; float64: n <= 512): one warp, or a power-of-two slice of one
//     for n < 32, per row, the row held in registers; max and sum by warp shuffles.
//     Passes over memory: forward 1 read + 1 write, backward 2 reads + 1 write (the
//     minimum).  exps per element: softmax 2 (sum, output), log_softmax 1.  float64
//     stops at 512 because 1024 doubles per warp (64 registers of values per thread)
//     spill.  Addresses as in the block tier: each row's body is whole vectors (up to
//     16 bytes, narrower when a row has too few for 16 per lane) from the first vector
//     boundary of the lead stream, and its head and tail (under two vectors) are spread
//     one element per lane in one extra register, so rows of odd length (each starting
//     at its own phase) and inputs with a storage offset keep vector loads.  That
//     register costs one more exp per lane and row (on padding for most lanes), not per
//     element.
//   * block_* (longer rows): one block of 512 threads per row, the row cached in shared
//     memory: forward x, backward dy and y.  The cache takes up to the whole opt-in
//     shared memory of a block (227 KB on Hopper: float32 rows of up to ~58000 forward
//     and ~29000 backward are read from HBM once).  Longer rows cache their first
//     227 KB and re-read only the rest (from L2 when it is still there): forward passes
//     over HBM = 1 read + 1 write + (the uncached fraction) re-read, backward 2 reads
//     + 1 write + 2 x (the uncached fraction).  The sum pass takes a chunk's max first
//     (4 x 128-bit loads per thread, in flight together), moves the running (max, sum)
//     to it with one exp per chunk, then adds one exp per element: 1 + 1/chunk exps per
//     element, plus one in softmax's output pass (the previous online update per
//     element cost 2 exps in a serial chain, 3 with the output).
//     Addresses: each row's first elements up to a 16-byte boundary of the lead stream
//     (its "head") and the elements after its last whole vector (the tail) are done one
//     by one, the rest with 128-bit loads and stores, so rows of any length (50257,
//     32001) and inputs with a storage offset run vectorized.  The cache is laid out so
//     that the body's vectors are 16-byte aligned in shared memory too: consecutive
//     threads read and write consecutive 16-byte words, which is free of bank conflicts.
//   Streams out of phase (every tier but inner_*): the layout follows one stream, the
//   lead: x forward; backward the phase shared by most of dy, y and dx, an input on a
//   tie (launch.h, pick_lead).  Streams in its phase use vector accesses, the others
//   the same elements one by one with the same bytes in flight; so a dx (or y) at
//   another offset from 16 bytes costs scalar stores only, and a dy out of phase with y
//   scalar loads of one stream, where the whole row used to go scalar.
//   * inner_* (softmax along a dim that is not the last: [outer, n, inner] contiguous):
//     a block of 32 columns x by threads; the 32 threads of a warp read 32 adjacent
//     columns of one row (coalesced), the by warps split the n rows and merge their
//     (max, sum) states in shared memory.  No transposed copies: forward 2 reads + 1
//     write, backward 4 reads + 1 write, the re-reads mostly from L2; one exp per element
//     in the sum (two only where the running max grows), plus softmax's output.
// Math in float for half/bfloat16 (at::opmath_type); 64-bit offsets; current stream;
// launches checked.  Shared memory: every block kernel also has static shared memory
// (the reductions' scratch), so its dynamic limit is raised once per device to the
// opt-in limit less that static part (launch.h), whatever the dynamic size.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "../kernels.h"
#include "../softmax.h"
#include "launch.h"

namespace fused_act {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpBlockThreads = 128;
constexpr int kBlockThreads = 512;
// 128-bit loads in flight per thread in the block tier: 4 of x forward, 2 each of dy and
// y backward (64 bytes either way; 4 + 4 pushed the bfloat16 backward past the 128
// registers that 512 threads per block allow, into spills).
constexpr int kUnroll = 4;
constexpr int kUnrollBackward = 2;

using cuda_detail::load_vec;
using cuda_detail::Pack;
using cuda_detail::store_vec;

template <class T> constexpr int vec_of() { return 16 / sizeof(T); }

// The longest row of the warp tier.
template <class T> constexpr int max_warp_cols() { return sizeof(T) == 8 ? 512 : 1024; }

// ---- reductions -------------------------------------------------------------------
template <int kWidth, class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = kWidth / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o, kWidth);
  return v;
}

template <int kWidth, class T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int o = kWidth / 2; o > 0; o /= 2)
    v = softmax_max(v, __shfl_xor_sync(0xffffffffu, v, o, kWidth));
  return v;
}

template <class T>
__device__ __forceinline__ void warp_merge(T& m, T& s) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) {
    const T m2 = __shfl_xor_sync(0xffffffffu, m, o);
    const T s2 = __shfl_xor_sync(0xffffffffu, s, o);
    softmax_online_merge(m, s, m2, s2);
  }
}

// Block-wide merge of the threads' (m, s) states; every thread gets the result.  Its
// first barrier also publishes what the threads wrote to shared memory before it.
template <class T>
__device__ void block_merge(T& m, T& s) {
  __shared__ T sm[kWarp], ss[kWarp];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int nwarps = blockDim.x / kWarp;
  warp_merge(m, s);
  if (lane == 0) sm[warp] = m, ss[warp] = s;
  __syncthreads();
  m = lane < nwarps ? sm[lane] : softmax_lowest<T>();
  s = lane < nwarps ? ss[lane] : T(0);
  warp_merge(m, s);
  __syncthreads();  // sm/ss may be reused by a following reduction
}

template <class T>
__device__ T block_sum(T v) {
  __shared__ T part[kWarp];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  v = warp_sum<kWarp>(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = lane < int(blockDim.x / kWarp) ? part[lane] : T(0);
  v = warp_sum<kWarp>(v);
  __syncthreads();
  return v;
}

// ---- tier 1: a warp (slice) per row, the row in registers ---------------------------
// Thread `lane` holds body vector b = j * kWidth + lane (j < kIters) of its row in
// out[j * kVec .. j * kVec + kVec), and one edge element (WarpRow) in one more register.
template <class scalar_t, int kLog2Cols>
struct WarpLayout {
  static constexpr int kCols = 1 << kLog2Cols;
  static constexpr int kWidth = kCols < kWarp ? kCols : kWarp;
  static constexpr int kPerThread = kCols / kWidth;
  static constexpr int kVec = kPerThread < vec_of<scalar_t>() ? kPerThread : vec_of<scalar_t>();
  static constexpr int kIters = kPerThread / kVec;
  static constexpr int kRowsPerBlock = kWarpBlockThreads / kWidth;
};

// How one row of n elements is split, from where the lead stream's row starts: its
// first `head` elements (up to a boundary of L::kVec elements of the lead), nv whole
// vectors, and the tail after them.  The head and the tail together (nedge < 2 * kVec
// <= 16 elements, so at most one per lane) are the row's edge: lane e < nedge holds
// edge element e < head ? e : e + nv * kVec.  Rows of odd length start at every phase,
// so the split is made per row.  The body's nv vectors fit the layout's slots:
// nv * kVec <= n <= kCols.
struct WarpRow {
  int head, nv, nedge;
};

template <class L, class scalar_t>
__device__ __forceinline__ WarpRow warp_row(const scalar_t* lead_row, int n) {
  WarpRow r;
  r.head = cuda_detail::head_of<scalar_t, L::kVec>(lead_row, n);
  r.nv = (n - r.head) / L::kVec;
  r.nedge = n - r.nv * L::kVec;
  return r;
}

__device__ __forceinline__ int edge_index(const WarpRow& r, int lane, int vec) {
  return lane < r.head ? lane : lane + r.nv * vec;
}

// Loads this thread's part of a row: vector loads when `vec` (the stream is in the
// lead's phase), else the same elements one by one; missing ones get `fill`.  All loads
// of the row are issued before any is used.
template <class L, class scalar_t, class T>
__device__ __forceinline__ void warp_load(const scalar_t* row, const WarpRow& r, int lane,
                                          bool vec, T fill, T (&out)[L::kPerThread], T& edge) {
#pragma unroll
  for (int j = 0; j < L::kIters; ++j) {
    const int b = j * L::kWidth + lane;
    if (b < r.nv) {
      const auto p = load_vec<L::kVec>(row + r.head + b * L::kVec, vec);
#pragma unroll
      for (int v = 0; v < L::kVec; ++v) out[j * L::kVec + v] = static_cast<T>(p.v[v]);
    } else {
#pragma unroll
      for (int v = 0; v < L::kVec; ++v) out[j * L::kVec + v] = fill;
    }
  }
  edge = lane < r.nedge ? static_cast<T>(row[edge_index(r, lane, L::kVec)]) : fill;
}

template <class L, class scalar_t, class T>
__device__ __forceinline__ void warp_store(scalar_t* row, const WarpRow& r, int lane, bool vec,
                                           const T (&in)[L::kPerThread], T edge) {
#pragma unroll
  for (int j = 0; j < L::kIters; ++j) {
    const int b = j * L::kWidth + lane;
    if (b < r.nv) {
      Pack<scalar_t, L::kVec> p;
#pragma unroll
      for (int v = 0; v < L::kVec; ++v) p.v[v] = static_cast<scalar_t>(in[j * L::kVec + v]);
      store_vec<L::kVec>(row + r.head + b * L::kVec, p, vec);
    }
  }
  if (lane < r.nedge) row[edge_index(r, lane, L::kVec)] = static_cast<scalar_t>(edge);
}

// Calls fn(lane, len, off) for each row of this thread's warp slice, grid-stride over
// groups of L::kRowsPerBlock rows: the row starts at element off and has len elements.
// Rows past the end are computed on padding (len 0, the offset of row 0) and not stored,
// so that every lane of a warp takes part in the shuffles.
template <class L, class Fn>
__device__ __forceinline__ void for_each_warp_row(int64_t rows, int n, Fn&& fn) {
  const int lane = threadIdx.x % L::kWidth;
  for (int64_t first = int64_t(blockIdx.x) * L::kRowsPerBlock; first < rows;
       first += int64_t(gridDim.x) * L::kRowsPerBlock) {
    const int64_t row = first + threadIdx.x / L::kWidth;
    fn(lane, row < rows ? n : 0, (row < rows ? row : 0) * int64_t(n));
  }
}

// The lead is x (forward: of two streams, the input on a tie); vec_y: y in x's phase.
template <bool kLog, int kLog2Cols, class scalar_t>
__global__ void __launch_bounds__(kWarpBlockThreads)
    warp_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t rows, int n,
                 bool vec_y) {
  using L = WarpLayout<scalar_t, kLog2Cols>;
  using T = at::opmath_type<scalar_t>;
  for_each_warp_row<L>(rows, n, [&](int lane, int len, int64_t off) {
    const WarpRow r = warp_row<L>(x + off, len);
    T v[L::kPerThread], e;
    warp_load<L>(x + off, r, lane, true, T(-INFINITY), v, e);
    T m = softmax_max(softmax_lowest<T>(), e);
#pragma unroll
    for (int k = 0; k < L::kPerThread; ++k) m = softmax_max(m, v[k]);
    m = warp_max<L::kWidth>(m);
    T s = softmax_exp_term(e, m);
#pragma unroll
    for (int k = 0; k < L::kPerThread; ++k) s += softmax_exp_term(v[k], m);
    s = warp_sum<L::kWidth>(s);
    const SoftmaxNorm<T> c = softmax_norm<kLog>(m, s);
#pragma unroll
    for (int k = 0; k < L::kPerThread; ++k) v[k] = softmax_output<kLog>(v[k], c.shift, c.scale);
    e = softmax_output<kLog>(e, c.shift, c.scale);
    warp_store<L>(y + off, r, lane, vec_y, v, e);
  });
}

// lead: the row phase followed (one of g, y, dx: launch.h, pick_lead); vec bits 0, 1, 2:
// g, y, dx in the lead's phase.
template <bool kLog, int kLog2Cols, class scalar_t>
__global__ void __launch_bounds__(kWarpBlockThreads)
    warp_backward(const scalar_t* __restrict__ g, const scalar_t* __restrict__ y,
                  scalar_t* __restrict__ dx, const scalar_t* lead, int64_t rows, int n,
                  unsigned vec) {
  using L = WarpLayout<scalar_t, kLog2Cols>;
  using T = at::opmath_type<scalar_t>;
  for_each_warp_row<L>(rows, n, [&](int lane, int len, int64_t off) {
    const WarpRow r = warp_row<L>(lead + off, len);
    T gv[L::kPerThread], yv[L::kPerThread], ge, ye;
    warp_load<L>(g + off, r, lane, vec & 1u, T(0), gv, ge);
    warp_load<L>(y + off, r, lane, (vec >> 1) & 1u, T(0), yv, ye);
    T sum = softmax_backward_term<kLog>(ge, ye);
#pragma unroll
    for (int k = 0; k < L::kPerThread; ++k) sum += softmax_backward_term<kLog>(gv[k], yv[k]);
    sum = warp_sum<L::kWidth>(sum);
#pragma unroll
    for (int k = 0; k < L::kPerThread; ++k)
      gv[k] = softmax_backward_output<kLog>(gv[k], yv[k], sum);
    ge = softmax_backward_output<kLog>(ge, ye, sum);
    warp_store<L>(dx + off, r, lane, (vec >> 2) & 1u, gv, ge);
  });
}

// ---- tier 2: a block per row, cached in shared memory ---------------------------------

// How one row is walked and cached, from where the lead stream's row starts (x forward;
// backward the lead of dy, y, dx).  The body, from `head` on (head: the elements up to
// the lead's first 16-byte boundary), is nv whole vectors; element i of the row is
// cached at cache[off + i] when i < cend, so that the body's vectors land on 16-byte
// boundaries of the cache.  cend = n when the row fits in cache_elems (a multiple of the
// vector width), else a vector boundary of the body with off + cend <= cache_elems (then
// the elements from cend on are re-read from global memory), or 0 when there is no
// cache.  Both passes walk this same layout, so cached vectors are read back as vectors.
struct RowPlan {
  int head, off;
  int64_t nv, cend;
};

template <class scalar_t>
__device__ __forceinline__ RowPlan plan_row(const void* p, int64_t n, int64_t cache_elems) {
  constexpr int kVec = vec_of<scalar_t>();
  RowPlan r;
  r.head = cuda_detail::head_of<scalar_t>(p, n);
  r.off = (kVec - r.head) % kVec;
  r.nv = (n - r.head) / kVec;
  if (r.off + n <= cache_elems)
    r.cend = n;
  else if (cache_elems >= 2 * kVec)
    r.cend = r.head + (cache_elems / kVec - 1) * kVec;  // < n, and off + cend <= cache_elems
  else
    r.cend = 0;
  return r;
}

// vec_y: y in x's phase (vector stores; else element by element, launch.h).
template <bool kLog, class scalar_t>
__global__ void __launch_bounds__(kBlockThreads)
    block_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t rows,
                  int64_t n, int64_t cache_elems, bool vec_y) {
  using T = at::opmath_type<scalar_t>;
  constexpr int kVec = vec_of<scalar_t>();
  using P = Pack<scalar_t, kVec>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  scalar_t* cache = reinterpret_cast<scalar_t*>(smem_raw);
  const int tid = threadIdx.x;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const scalar_t* xr = x + row * n;
    scalar_t* yr = y + row * n;
    const RowPlan pl = plan_row<scalar_t>(xr, n, cache_elems);
    const P* xb = reinterpret_cast<const P*>(xr + pl.head);
    P* cb = reinterpret_cast<P*>(cache + pl.off + pl.head);
    const int64_t tail = pl.head + pl.nv * kVec + tid;  // this thread's tail element

    // Pass 1: (max, sum) of the row, caching it.
    T m = softmax_lowest<T>(), s = T(0);
    auto scalar_in = [&](int64_t i) {  // head and tail, one element at a time
      const scalar_t v = xr[i];
      if (i < pl.cend) cache[pl.off + i] = v;
      softmax_online_update(m, s, static_cast<T>(v));
    };
    if (tid < pl.head) scalar_in(tid);
    if (tail < n) scalar_in(tail);
    for (int64_t k0 = tid; k0 < pl.nv; k0 += int64_t(kUnroll) * kBlockThreads) {
      P pk[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + u * kBlockThreads;
        if (k < pl.nv) pk[u] = xb[k];
      }
      T cm = softmax_lowest<T>();  // the chunk's max first: one exp per chunk to move to it
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        if (k0 + u * kBlockThreads < pl.nv)
#pragma unroll
          for (int v = 0; v < kVec; ++v) cm = softmax_max(cm, static_cast<T>(pk[u].v[v]));
      softmax_rescale(m, s, softmax_max(m, cm));
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + u * kBlockThreads;
        if (k < pl.nv) {
          if (pl.head + (k + 1) * kVec <= pl.cend) cb[k] = pk[u];
#pragma unroll
          for (int v = 0; v < kVec; ++v) s += softmax_exp_term(static_cast<T>(pk[u].v[v]), m);
        }
      }
    }
    block_merge(m, s);  // its barrier also publishes the cache
    const SoftmaxNorm<T> c = softmax_norm<kLog>(m, s);

    // Pass 2: y, in x's layout.  The cache is read back in 16-byte words (consecutive
    // threads, consecutive words: free of bank conflicts), the uncached part of a long
    // row re-read in vectors; y gets vector stores when it is in x's phase, else the same
    // elements one by one.  Aligning on y instead would turn those reads scalar (4-way
    // bank conflicts in the cache, scalar HBM re-reads) to save store instructions,
    // which nothing waits on.
    auto out = [&](T v) { return static_cast<scalar_t>(softmax_output<kLog>(v, c.shift, c.scale)); };
    auto x_at = [&](int64_t i) { return static_cast<T>(i < pl.cend ? cache[pl.off + i] : xr[i]); };
    if (tid < pl.head) yr[tid] = out(x_at(tid));
    if (tail < n) yr[tail] = out(x_at(tail));
    for (int64_t k0 = tid; k0 < pl.nv; k0 += int64_t(kUnroll) * kBlockThreads) {
      P pk[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + u * kBlockThreads;
        if (k < pl.nv) pk[u] = pl.head + (k + 1) * kVec <= pl.cend ? cb[k] : xb[k];
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + u * kBlockThreads;
        if (k < pl.nv) {
          P o;
#pragma unroll
          for (int v = 0; v < kVec; ++v) o.v[v] = out(static_cast<T>(pk[u].v[v]));
          store_vec<kVec>(yr + pl.head + k * kVec, o, vec_y);
        }
      }
    }
    __syncthreads();  // the next row overwrites the cache
  }
}

// lead: the stream whose row phase the layout follows (one of g, y, dx: launch.h,
// pick_lead); bits 0, 1, 2 of vec: g, y, dx in the lead's phase.
template <bool kLog, class scalar_t>
__global__ void __launch_bounds__(kBlockThreads)
    block_backward(const scalar_t* __restrict__ g, const scalar_t* __restrict__ y,
                   scalar_t* __restrict__ dx, const scalar_t* lead, int64_t rows, int64_t n,
                   int64_t cache_elems, unsigned vec) {
  using T = at::opmath_type<scalar_t>;
  constexpr int kVec = vec_of<scalar_t>();
  using P = Pack<scalar_t, kVec>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  scalar_t* gc = reinterpret_cast<scalar_t*>(smem_raw);
  scalar_t* yc = gc + cache_elems;  // cache_elems is a multiple of kVec: still aligned
  const int tid = threadIdx.x;
  const bool vg = vec & 1u, vy = (vec >> 1) & 1u, vd = (vec >> 2) & 1u;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const scalar_t* gr = g + row * n;
    const scalar_t* yr = y + row * n;
    scalar_t* dr = dx + row * n;
    const RowPlan pl = plan_row<scalar_t>(lead + row * n, n, cache_elems);
    P* gcb = reinterpret_cast<P*>(gc + pl.off + pl.head);
    P* ycb = reinterpret_cast<P*>(yc + pl.off + pl.head);
    const int64_t tail = pl.head + pl.nv * kVec + tid;  // this thread's tail element

    // Pass 1: the row's sum, caching dy and y.
    T sum = T(0);
    auto scalar_in = [&](int64_t i) {  // head and tail, one element at a time
      const scalar_t a = gr[i], b = yr[i];
      if (i < pl.cend) gc[pl.off + i] = a, yc[pl.off + i] = b;
      sum += softmax_backward_term<kLog>(static_cast<T>(a), static_cast<T>(b));
    };
    if (tid < pl.head) scalar_in(tid);
    if (tail < n) scalar_in(tail);
    for (int64_t k0 = tid; k0 < pl.nv; k0 += int64_t(kUnrollBackward) * kBlockThreads) {
      P a[kUnrollBackward], b[kUnrollBackward];
#pragma unroll
      for (int u = 0; u < kUnrollBackward; ++u) {
        const int64_t k = k0 + u * kBlockThreads;
        if (k < pl.nv) {
          a[u] = load_vec<kVec>(gr + pl.head + k * kVec, vg);
          b[u] = load_vec<kVec>(yr + pl.head + k * kVec, vy);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnrollBackward; ++u) {
        const int64_t k = k0 + u * kBlockThreads;
        if (k < pl.nv) {
          if (pl.head + (k + 1) * kVec <= pl.cend) gcb[k] = a[u], ycb[k] = b[u];
#pragma unroll
          for (int v = 0; v < kVec; ++v)
            sum += softmax_backward_term<kLog>(static_cast<T>(a[u].v[v]),
                                               static_cast<T>(b[u].v[v]));
        }
      }
    }
    sum = block_sum(sum);  // its barrier also publishes the cache

    // Pass 2: dx, in the same layout (the cache read back in 16-byte words, conflict
    // free); dx is stored as vectors when it is in the lead's phase, else one by one.
    auto out = [&](T a, T b) {
      return static_cast<scalar_t>(softmax_backward_output<kLog>(a, b, sum));
    };
    auto at_i = [&](int64_t i) {
      return i < pl.cend ? out(static_cast<T>(gc[pl.off + i]), static_cast<T>(yc[pl.off + i]))
                         : out(static_cast<T>(gr[i]), static_cast<T>(yr[i]));
    };
    if (tid < pl.head) dr[tid] = at_i(tid);
    if (tail < n) dr[tail] = at_i(tail);
    for (int64_t k0 = tid; k0 < pl.nv; k0 += int64_t(kUnrollBackward) * kBlockThreads) {
      P a[kUnrollBackward], b[kUnrollBackward];
#pragma unroll
      for (int u = 0; u < kUnrollBackward; ++u) {
        const int64_t k = k0 + u * kBlockThreads;
        if (k < pl.nv) {
          if (pl.head + (k + 1) * kVec <= pl.cend) {
            a[u] = gcb[k], b[u] = ycb[k];
          } else {
            a[u] = load_vec<kVec>(gr + pl.head + k * kVec, vg);
            b[u] = load_vec<kVec>(yr + pl.head + k * kVec, vy);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kUnrollBackward; ++u) {
        const int64_t k = k0 + u * kBlockThreads;
        if (k < pl.nv) {
          P o;
#pragma unroll
          for (int v = 0; v < kVec; ++v)
            o.v[v] = out(static_cast<T>(a[u].v[v]), static_cast<T>(b[u].v[v]));
          store_vec<kVec>(dr + pl.head + k * kVec, o, vd);
        }
      }
    }
    __syncthreads();  // the next row overwrites the cache
  }
}

// ---- tier 3: along a middle dim, [outer, n, inner] ------------------------------------
// blockDim = (32, by), by <= kInnerMaxY: thread (tx, ty) owns column col = block's first
// column + tx (col = o * inner + i) and the rows j = ty, ty + by, ... of it.
constexpr int kInnerMaxY = 16;

template <bool kLog, class scalar_t>
__global__ void __launch_bounds__(kWarp * kInnerMaxY)
    inner_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t outer,
                  int64_t n, int64_t inner) {
  using T = at::opmath_type<scalar_t>;
  __shared__ T sm[kInnerMaxY][kWarp], ss[kInnerMaxY][kWarp];
  const int tx = threadIdx.x, ty = threadIdx.y, by = blockDim.y;
  const int64_t cols = outer * inner;
  for (int64_t col0 = int64_t(blockIdx.x) * kWarp; col0 < cols; col0 += int64_t(gridDim.x) * kWarp) {
    const int64_t col = col0 + tx;
    const bool active = col < cols;
    const int64_t o = active ? col / inner : 0;  // one divide per column, not per element
    const int64_t base = active ? o * n * inner + (col - o * inner) : 0;
    T m = softmax_lowest<T>(), s = T(0);
    if (active) {
      int64_t j = ty;
      for (; j + 3 * by < n; j += 4 * by) {  // four loads in flight
        scalar_t v[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) v[u] = x[base + (j + u * by) * inner];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const T t = static_cast<T>(v[u]);
          if (t > m) softmax_rescale(m, s, t);  // exp of the old max only when it grows
          s += softmax_exp_term(t, m);
        }
      }
      for (; j < n; j += by) {
        const T t = static_cast<T>(x[base + j * inner]);
        if (t > m) softmax_rescale(m, s, t);
        s += softmax_exp_term(t, m);
      }
    }
    sm[ty][tx] = m;
    ss[ty][tx] = s;
    __syncthreads();
    m = softmax_lowest<T>();
    s = T(0);
    for (int k = 0; k < by; ++k) softmax_online_merge(m, s, sm[k][tx], ss[k][tx]);
    __syncthreads();  // sm/ss are rewritten for the next columns
    if (active) {
      const SoftmaxNorm<T> c = softmax_norm<kLog>(m, s);
      for (int64_t j = ty; j < n; j += by)
        y[base + j * inner] = static_cast<scalar_t>(
            softmax_output<kLog>(static_cast<T>(x[base + j * inner]), c.shift, c.scale));
    }
  }
}

template <bool kLog, class scalar_t>
__global__ void __launch_bounds__(kWarp * kInnerMaxY)
    inner_backward(const scalar_t* __restrict__ g, const scalar_t* __restrict__ y,
                   scalar_t* __restrict__ dx, int64_t outer, int64_t n, int64_t inner) {
  using T = at::opmath_type<scalar_t>;
  __shared__ T part[kInnerMaxY][kWarp];
  const int tx = threadIdx.x, ty = threadIdx.y, by = blockDim.y;
  const int64_t cols = outer * inner;
  for (int64_t col0 = int64_t(blockIdx.x) * kWarp; col0 < cols; col0 += int64_t(gridDim.x) * kWarp) {
    const int64_t col = col0 + tx;
    const bool active = col < cols;
    const int64_t o = active ? col / inner : 0;
    const int64_t base = active ? o * n * inner + (col - o * inner) : 0;
    T sum = T(0);
    if (active) {
      int64_t j = ty;
      for (; j + 3 * by < n; j += 4 * by) {
        scalar_t a[4], b[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          a[u] = g[base + (j + u * by) * inner];
          b[u] = y[base + (j + u * by) * inner];
        }
#pragma unroll
        for (int u = 0; u < 4; ++u)
          sum += softmax_backward_term<kLog>(static_cast<T>(a[u]), static_cast<T>(b[u]));
      }
      for (; j < n; j += by)
        sum += softmax_backward_term<kLog>(static_cast<T>(g[base + j * inner]),
                                           static_cast<T>(y[base + j * inner]));
    }
    part[ty][tx] = sum;
    __syncthreads();
    sum = T(0);
    for (int k = 0; k < by; ++k) sum += part[k][tx];
    __syncthreads();
    if (active) {
      for (int64_t j = ty; j < n; j += by) {
        const int64_t i = base + j * inner;
        dx[i] = static_cast<scalar_t>(softmax_backward_output<kLog>(
            static_cast<T>(g[i]), static_cast<T>(y[i]), sum));
      }
    }
  }
}

// ---- launch --------------------------------------------------------------------

int sms() { return cuda_detail::current_device_props().sms; }

int64_t grid_for(int64_t blocks) { return std::min<int64_t>(blocks, int64_t(sms()) * 32); }

// Calls fn(std::integral_constant<int, log2(next power of two >= n)>) for n <= 2^kMaxL2
// (only those kernels are instantiated).
template <int kMaxL2, class Fn>
void visit_log2_cols(int64_t n, Fn&& fn) {
  int l = 0;
  while ((int64_t(1) << l) < n) ++l;
  switch (l) {
#define FA_L2(k)                                                 \
  case k:                                                        \
    if constexpr (k <= kMaxL2) {                                 \
      fn(std::integral_constant<int, k>{});                      \
      return;                                                    \
    }                                                            \
    break;
    FA_L2(0) FA_L2(1) FA_L2(2) FA_L2(3) FA_L2(4) FA_L2(5) FA_L2(6) FA_L2(7) FA_L2(8) FA_L2(9)
    FA_L2(10)
#undef FA_L2
    default: break;
  }
  TORCH_CHECK(false, "fused_act: row too long for the warp softmax kernel");
}

template <class T> constexpr int max_warp_log2() { return sizeof(T) == 8 ? 9 : 10; }

// flash-attention's BOOL_SWITCH: a runtime bool as a compile-time constant.
#define FA_BOOL_SWITCH(COND, NAME, ...)      \
  [&] {                                      \
    if (COND) {                              \
      constexpr bool NAME = true;            \
      return __VA_ARGS__();                  \
    } else {                                 \
      constexpr bool NAME = false;           \
      return __VA_ARGS__();                  \
    }                                        \
  }()

#define FA_DISPATCH_SOFTMAX(TYPE, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, "fused_act_softmax", __VA_ARGS__)

// The cache of a block kernel, in elements per cached array (a multiple of the vector
// width): the whole row (plus room for the head's shift) when it fits in the kernel's
// dynamic shared memory, else as much as fits.
template <class scalar_t>
int64_t cache_elems_for(const void* kernel, int64_t n, int arrays) {
  constexpr int kVec = vec_of<scalar_t>();
  const int64_t full = (n + kVec - 1 + kVec - 1) / kVec * kVec;  // off + n <= full
  const int64_t fit =
      int64_t(cuda_detail::max_dynamic_smem(kernel)) / (arrays * int64_t(sizeof(scalar_t))) /
      kVec * kVec;
  return std::min(full, fit);
}

// by (the threads splitting one column): up to 16, no more than the rows, fewer when
// there are so many columns that 32 x by threads per block would be several waves.
dim3 inner_block(int64_t outer, int64_t n, int64_t inner) {
  const int64_t col_blocks = (outer * inner + kWarp - 1) / kWarp;
  int by = kInnerMaxY;
  while (by > 1 && (by > n || col_blocks * by * kWarp > int64_t(sms()) * 2048 * 2)) by /= 2;
  return dim3(kWarp, by);
}

int64_t inner_grid(int64_t outer, int64_t inner) {
  return std::min<int64_t>((outer * inner + kWarp - 1) / kWarp, int64_t(sms()) * 64);
}

}  // namespace

void CudaKernels::softmax_forward(const at::Tensor& x, const at::Tensor& y, int64_t n, bool log) {
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = x.numel() / n;
  if (rows == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  FA_DISPATCH_SOFTMAX(x.scalar_type(), [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    FA_BOOL_SWITCH(log, kLog, [&] {
      if (n <= max_warp_cols<scalar_t>()) {
        visit_log2_cols<max_warp_log2<scalar_t>()>(n, [&](auto l2) {
          constexpr int kL2 = decltype(l2)::value;
          using L = WarpLayout<scalar_t, kL2>;
          const bool vec_y = cuda_detail::same_phase<scalar_t, L::kVec>(xp, yp);
          auto kernel = warp_forward<kLog, kL2, scalar_t>;
          cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
          const int64_t blocks = grid_for((rows + L::kRowsPerBlock - 1) / L::kRowsPerBlock);
          kernel<<<blocks, kWarpBlockThreads, 0, stream>>>(xp, yp, rows, int(n), vec_y);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
        return;
      }
      auto kernel = block_forward<kLog, scalar_t>;
      const int64_t cache = cache_elems_for<scalar_t>(reinterpret_cast<const void*>(kernel), n, 1);
      const size_t smem = size_t(cache) * sizeof(scalar_t);
      const bool vec_y = cuda_detail::same_phase<scalar_t>(xp, yp);
      kernel<<<grid_for(rows), kBlockThreads, smem, stream>>>(xp, yp, rows, n, cache, vec_y);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void CudaKernels::softmax_backward(const at::Tensor& g, const at::Tensor& y, const at::Tensor& dx,
                                   int64_t n, bool log) {
  c10::cuda::CUDAGuard guard(g.device());
  const int64_t rows = g.numel() / n;
  if (rows == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  FA_DISPATCH_SOFTMAX(g.scalar_type(), [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    scalar_t* dp = dx.mutable_data_ptr<scalar_t>();
    FA_BOOL_SWITCH(log, kLog, [&] {
      const scalar_t* streams[3] = {gp, yp, dp};
      if (n <= max_warp_cols<scalar_t>()) {
        visit_log2_cols<max_warp_log2<scalar_t>()>(n, [&](auto l2) {
          constexpr int kL2 = decltype(l2)::value;
          using L = WarpLayout<scalar_t, kL2>;
          const cuda_detail::Lead lead = cuda_detail::pick_lead<scalar_t, L::kVec>({gp, yp, dp});
          auto kernel = warp_backward<kLog, kL2, scalar_t>;
          cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
          const int64_t blocks = grid_for((rows + L::kRowsPerBlock - 1) / L::kRowsPerBlock);
          kernel<<<blocks, kWarpBlockThreads, 0, stream>>>(gp, yp, dp, streams[lead.index], rows,
                                                           int(n), lead.vec);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
        return;
      }
      auto kernel = block_backward<kLog, scalar_t>;
      const int64_t cache = cache_elems_for<scalar_t>(reinterpret_cast<const void*>(kernel), n, 2);
      const size_t smem = 2 * size_t(cache) * sizeof(scalar_t);
      const cuda_detail::Lead lead = cuda_detail::pick_lead<scalar_t>({gp, yp, dp});
      kernel<<<grid_for(rows), kBlockThreads, smem, stream>>>(gp, yp, dp, streams[lead.index],
                                                              rows, n, cache, lead.vec);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void CudaKernels::softmax_forward_inner(const at::Tensor& x, const at::Tensor& y, int64_t n,
                                        int64_t inner, bool log) {
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t outer = x.numel() / (n * inner);
  if (outer == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  FA_DISPATCH_SOFTMAX(x.scalar_type(), [&] {
    FA_BOOL_SWITCH(log, kLog, [&] {
      auto kernel = inner_forward<kLog, scalar_t>;
      cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
      kernel<<<inner_grid(outer, inner), inner_block(outer, n, inner), 0, stream>>>(
          x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), outer, n, inner);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void CudaKernels::softmax_backward_inner(const at::Tensor& g, const at::Tensor& y,
                                         const at::Tensor& dx, int64_t n, int64_t inner,
                                         bool log) {
  c10::cuda::CUDAGuard guard(g.device());
  const int64_t outer = g.numel() / (n * inner);
  if (outer == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  FA_DISPATCH_SOFTMAX(g.scalar_type(), [&] {
    FA_BOOL_SWITCH(log, kLog, [&] {
      auto kernel = inner_backward<kLog, scalar_t>;
      cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
      kernel<<<inner_grid(outer, inner), inner_block(outer, n, inner), 0, stream>>>(
          g.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
          dx.mutable_data_ptr<scalar_t>(), outer, n, inner);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace fused_act
