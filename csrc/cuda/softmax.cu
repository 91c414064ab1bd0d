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
//     spill.
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
//     Addresses: each row's first elements up to a 16-byte boundary (its "head") and
//     the elements after its last whole vector (the tail) are done one by one, the rest
//     with 128-bit loads and stores, so rows of any length (50257, 32001) and inputs with
//     a storage offset run vectorized.  The cache is laid out so that the body's vectors
//     are 16-byte aligned in shared memory too: consecutive threads read and write
//     consecutive 16-byte words, which is free of bank conflicts.
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

template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

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
// Thread `lane` holds elements (j * kWidth + lane) * kVec + v, j < kIters, v < kVec.
template <class scalar_t, int kLog2Cols>
struct WarpLayout {
  static constexpr int kCols = 1 << kLog2Cols;
  static constexpr int kWidth = kCols < kWarp ? kCols : kWarp;
  static constexpr int kPerThread = kCols / kWidth;
  static constexpr int kVec = kPerThread < vec_of<scalar_t>() ? kPerThread : vec_of<scalar_t>();
  static constexpr int kIters = kPerThread / kVec;
  static constexpr int kRowsPerBlock = kWarpBlockThreads / kWidth;
};

// Loads this thread's part of a row of n values; missing ones get `fill`.
template <class L, class scalar_t, class T>
__device__ __forceinline__ void warp_load(const scalar_t* row, int n, int lane, bool vec_ok,
                                          T fill, T (&out)[L::kPerThread]) {
#pragma unroll
  for (int j = 0; j < L::kIters; ++j) {
    const int base = (j * L::kWidth + lane) * L::kVec;
    if (vec_ok && base + L::kVec <= n) {
      const auto p = *reinterpret_cast<const Pack<scalar_t, L::kVec>*>(row + base);
#pragma unroll
      for (int v = 0; v < L::kVec; ++v) out[j * L::kVec + v] = static_cast<T>(p.v[v]);
    } else {
#pragma unroll
      for (int v = 0; v < L::kVec; ++v)
        out[j * L::kVec + v] = base + v < n ? static_cast<T>(row[base + v]) : fill;
    }
  }
}

template <class L, class scalar_t, class T>
__device__ __forceinline__ void warp_store(scalar_t* row, int n, int lane, bool vec_ok,
                                           const T (&in)[L::kPerThread]) {
#pragma unroll
  for (int j = 0; j < L::kIters; ++j) {
    const int base = (j * L::kWidth + lane) * L::kVec;
    if (vec_ok && base + L::kVec <= n) {
      Pack<scalar_t, L::kVec> p;
#pragma unroll
      for (int v = 0; v < L::kVec; ++v) p.v[v] = static_cast<scalar_t>(in[j * L::kVec + v]);
      *reinterpret_cast<Pack<scalar_t, L::kVec>*>(row + base) = p;
    } else {
#pragma unroll
      for (int v = 0; v < L::kVec; ++v)
        if (base + v < n) row[base + v] = static_cast<scalar_t>(in[j * L::kVec + v]);
    }
  }
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

template <bool kLog, int kLog2Cols, class scalar_t>
__global__ void __launch_bounds__(kWarpBlockThreads)
    warp_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t rows, int n, bool vec_ok) {
  using L = WarpLayout<scalar_t, kLog2Cols>;
  using T = at::opmath_type<scalar_t>;
  for_each_warp_row<L>(rows, n, [&](int lane, int len, int64_t off) {
    T v[L::kPerThread];
    warp_load<L>(x + off, len, lane, vec_ok, T(-INFINITY), v);
    T m = softmax_lowest<T>();
#pragma unroll
    for (int k = 0; k < L::kPerThread; ++k) m = softmax_max(m, v[k]);
    m = warp_max<L::kWidth>(m);
    T s = 0;
#pragma unroll
    for (int k = 0; k < L::kPerThread; ++k) s += softmax_exp_term(v[k], m);
    s = warp_sum<L::kWidth>(s);
    const SoftmaxNorm<T> c = softmax_norm<kLog>(m, s);
#pragma unroll
    for (int k = 0; k < L::kPerThread; ++k) v[k] = softmax_output<kLog>(v[k], c.shift, c.scale);
    warp_store<L>(y + off, len, lane, vec_ok, v);
  });
}

template <bool kLog, int kLog2Cols, class scalar_t>
__global__ void __launch_bounds__(kWarpBlockThreads)
    warp_backward(const scalar_t* __restrict__ g, const scalar_t* __restrict__ y,
                  scalar_t* __restrict__ dx, int64_t rows, int n,
                  bool vec_ok) {
  using L = WarpLayout<scalar_t, kLog2Cols>;
  using T = at::opmath_type<scalar_t>;
  for_each_warp_row<L>(rows, n, [&](int lane, int len, int64_t off) {
    T gv[L::kPerThread], yv[L::kPerThread];
    warp_load<L>(g + off, len, lane, vec_ok, T(0), gv);
    warp_load<L>(y + off, len, lane, vec_ok, T(0), yv);
    T sum = 0;
#pragma unroll
    for (int k = 0; k < L::kPerThread; ++k) sum += softmax_backward_term<kLog>(gv[k], yv[k]);
    sum = warp_sum<L::kWidth>(sum);
#pragma unroll
    for (int k = 0; k < L::kPerThread; ++k)
      gv[k] = softmax_backward_output<kLog>(gv[k], yv[k], sum);
    warp_store<L>(dx + off, len, lane, vec_ok, gv);
  });
}

// ---- tier 2: a block per row, cached in shared memory ---------------------------------

// Elements before the first 16-byte boundary at or after p, at most n.
template <class scalar_t>
__device__ __forceinline__ int head_of(const void* p, int64_t n) {
  constexpr int kVec = vec_of<scalar_t>();
  const int mis = int((reinterpret_cast<uintptr_t>(p) % 16) / sizeof(scalar_t));
  const int h = (kVec - mis) % kVec;
  return h < n ? h : int(n);
}

// How one row is walked and cached, from its input's address.  Element i of the row is
// cached at cache[off + i] when i < cend, so that the body (from `head` on, nv whole
// vectors) lands on 16-byte boundaries of the cache.  cend = n when the row fits in
// cache_elems (a multiple of the vector width), else a vector boundary of the body with
// off + cend <= cache_elems (then the elements from cend on are re-read from global
// memory), or 0 when there is no cache.
struct RowPlan {
  int head, off;
  int64_t nv, cend;
};

template <class scalar_t>
__device__ __forceinline__ RowPlan plan_row(const void* p, int64_t n, int64_t cache_elems) {
  constexpr int kVec = vec_of<scalar_t>();
  RowPlan r;
  r.head = head_of<scalar_t>(p, n);
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

template <bool kLog, class scalar_t>
__global__ void __launch_bounds__(kBlockThreads)
    block_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t rows,
                  int64_t n, int64_t cache_elems) {
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

    // Pass 1: (max, sum) of the row, caching it.
    T m = softmax_lowest<T>(), s = T(0);
    auto scalar_in = [&](int64_t i) {  // head and tail, one element at a time
      const scalar_t v = xr[i];
      if (i < pl.cend) cache[pl.off + i] = v;
      softmax_online_update(m, s, static_cast<T>(v));
    };
    if (tid < pl.head) scalar_in(tid);
    if (pl.head + pl.nv * kVec + tid < n) scalar_in(pl.head + pl.nv * kVec + tid);
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

    // Pass 2: y, vectorized along y's own 16-byte boundaries.
    auto out = [&](T v) { return static_cast<scalar_t>(softmax_output<kLog>(v, c.shift, c.scale)); };
    auto x_at = [&](int64_t i) { return static_cast<T>(i < pl.cend ? cache[pl.off + i] : xr[i]); };
    const int hy = head_of<scalar_t>(yr, n);
    const int64_t nvy = (n - hy) / kVec;
    P* yb = reinterpret_cast<P*>(yr + hy);
    if (tid < hy) yr[tid] = out(x_at(tid));
    if (hy + nvy * kVec + tid < n) yr[hy + nvy * kVec + tid] = out(x_at(hy + nvy * kVec + tid));
    if (hy == pl.head) {  // x's and y's vectors line up (the common case)
      for (int64_t k0 = tid; k0 < nvy; k0 += int64_t(kUnroll) * kBlockThreads) {
        P pk[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int64_t k = k0 + u * kBlockThreads;
          if (k < nvy) pk[u] = pl.head + (k + 1) * kVec <= pl.cend ? cb[k] : xb[k];
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int64_t k = k0 + u * kBlockThreads;
          if (k < nvy) {
            P o;
#pragma unroll
            for (int v = 0; v < kVec; ++v) o.v[v] = out(static_cast<T>(pk[u].v[v]));
            yb[k] = o;
          }
        }
      }
    } else {  // x and y at different offsets from 16 bytes: vector stores, scalar reads
      for (int64_t k = tid; k < nvy; k += kBlockThreads) {
        P o;
#pragma unroll
        for (int v = 0; v < kVec; ++v) o.v[v] = out(x_at(hy + k * kVec + v));
        yb[k] = o;
      }
    }
    __syncthreads();  // the next row overwrites the cache
  }
}

template <bool kLog, class scalar_t>
__global__ void __launch_bounds__(kBlockThreads)
    block_backward(const scalar_t* __restrict__ g, const scalar_t* __restrict__ y,
                   scalar_t* __restrict__ dx, int64_t rows, int64_t n, int64_t cache_elems) {
  using T = at::opmath_type<scalar_t>;
  constexpr int kVec = vec_of<scalar_t>();
  using P = Pack<scalar_t, kVec>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  scalar_t* gc = reinterpret_cast<scalar_t*>(smem_raw);
  scalar_t* yc = gc + cache_elems;  // cache_elems is a multiple of kVec: still aligned
  const int tid = threadIdx.x;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const scalar_t* gr = g + row * n;
    const scalar_t* yr = y + row * n;
    scalar_t* dr = dx + row * n;
    const RowPlan pl = plan_row<scalar_t>(gr, n, cache_elems);
    const bool same = head_of<scalar_t>(yr, n) == pl.head;  // dy's and y's vectors line up
    const P* gb = reinterpret_cast<const P*>(gr + pl.head);
    const P* yb = reinterpret_cast<const P*>(yr + pl.head);
    P* gcb = reinterpret_cast<P*>(gc + pl.off + pl.head);
    P* ycb = reinterpret_cast<P*>(yc + pl.off + pl.head);

    // Pass 1: the row's sum, caching dy and y.
    T sum = T(0);
    auto scalar_in = [&](int64_t i) {
      const scalar_t a = gr[i], b = yr[i];
      if (i < pl.cend) gc[pl.off + i] = a, yc[pl.off + i] = b;
      sum += softmax_backward_term<kLog>(static_cast<T>(a), static_cast<T>(b));
    };
    if (same) {
      if (tid < pl.head) scalar_in(tid);
      if (pl.head + pl.nv * kVec + tid < n) scalar_in(pl.head + pl.nv * kVec + tid);
      for (int64_t k0 = tid; k0 < pl.nv; k0 += int64_t(kUnrollBackward) * kBlockThreads) {
        P a[kUnrollBackward], b[kUnrollBackward];
#pragma unroll
        for (int u = 0; u < kUnrollBackward; ++u) {
          const int64_t k = k0 + u * kBlockThreads;
          if (k < pl.nv) a[u] = gb[k], b[u] = yb[k];
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
    } else {  // dy and y at different offsets from 16 bytes (rare): one element at a time
      for (int64_t i = tid; i < n; i += kBlockThreads) scalar_in(i);
    }
    sum = block_sum(sum);  // its barrier also publishes the cache

    // Pass 2: dx.
    auto out = [&](T a, T b) {
      return static_cast<scalar_t>(softmax_backward_output<kLog>(a, b, sum));
    };
    auto at_i = [&](int64_t i) {
      return i < pl.cend ? out(static_cast<T>(gc[pl.off + i]), static_cast<T>(yc[pl.off + i]))
                         : out(static_cast<T>(gr[i]), static_cast<T>(yr[i]));
    };
    const int hd = head_of<scalar_t>(dr, n);
    const int64_t nvd = (n - hd) / kVec;
    P* db = reinterpret_cast<P*>(dr + hd);
    if (tid < hd) dr[tid] = at_i(tid);
    if (hd + nvd * kVec + tid < n) dr[hd + nvd * kVec + tid] = at_i(hd + nvd * kVec + tid);
    if (same && hd == pl.head) {
      for (int64_t k0 = tid; k0 < nvd; k0 += int64_t(kUnrollBackward) * kBlockThreads) {
        P a[kUnrollBackward], b[kUnrollBackward];
#pragma unroll
        for (int u = 0; u < kUnrollBackward; ++u) {
          const int64_t k = k0 + u * kBlockThreads;
          if (k < nvd) {
            if (pl.head + (k + 1) * kVec <= pl.cend)
              a[u] = gcb[k], b[u] = ycb[k];
            else
              a[u] = gb[k], b[u] = yb[k];
          }
        }
#pragma unroll
        for (int u = 0; u < kUnrollBackward; ++u) {
          const int64_t k = k0 + u * kBlockThreads;
          if (k < nvd) {
            P o;
#pragma unroll
            for (int v = 0; v < kVec; ++v)
              o.v[v] = out(static_cast<T>(a[u].v[v]), static_cast<T>(b[u].v[v]));
            db[k] = o;
          }
        }
      }
    } else {
      for (int64_t k = tid; k < nvd; k += kBlockThreads) {
        P o;
#pragma unroll
        for (int v = 0; v < kVec; ++v) o.v[v] = at_i(hd + k * kVec + v);
        db[k] = o;
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

template <class scalar_t>
bool can_vectorize(int64_t n, std::initializer_list<const void*> ptrs) {
  if (n % vec_of<scalar_t>() != 0) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

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
        const bool vec = can_vectorize<scalar_t>(n, {xp, yp});
        visit_log2_cols<max_warp_log2<scalar_t>()>(n, [&](auto l2) {
          constexpr int kL2 = decltype(l2)::value;
          using L = WarpLayout<scalar_t, kL2>;
          auto kernel = warp_forward<kLog, kL2, scalar_t>;
          cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
          const int64_t blocks = grid_for((rows + L::kRowsPerBlock - 1) / L::kRowsPerBlock);
          kernel<<<blocks, kWarpBlockThreads, 0, stream>>>(xp, yp, rows, int(n), vec);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
        return;
      }
      auto kernel = block_forward<kLog, scalar_t>;
      const int64_t cache = cache_elems_for<scalar_t>(reinterpret_cast<const void*>(kernel), n, 1);
      const size_t smem = size_t(cache) * sizeof(scalar_t);
      kernel<<<grid_for(rows), kBlockThreads, smem, stream>>>(xp, yp, rows, n, cache);
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
      if (n <= max_warp_cols<scalar_t>()) {
        const bool vec = can_vectorize<scalar_t>(n, {gp, yp, dp});
        visit_log2_cols<max_warp_log2<scalar_t>()>(n, [&](auto l2) {
          constexpr int kL2 = decltype(l2)::value;
          using L = WarpLayout<scalar_t, kL2>;
          auto kernel = warp_backward<kLog, kL2, scalar_t>;
          cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
          const int64_t blocks = grid_for((rows + L::kRowsPerBlock - 1) / L::kRowsPerBlock);
          kernel<<<blocks, kWarpBlockThreads, 0, stream>>>(gp, yp, dp, rows, int(n), vec);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
        return;
      }
      auto kernel = block_backward<kLog, scalar_t>;
      const int64_t cache = cache_elems_for<scalar_t>(reinterpret_cast<const void*>(kernel), n, 2);
      const size_t smem = 2 * size_t(cache) * sizeof(scalar_t);
      kernel<<<grid_for(rows), kBlockThreads, smem, stream>>>(gp, yp, dp, rows, n, cache);
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
