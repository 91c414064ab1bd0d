// CUDA softmax / log-softmax over contiguous rows (formulas in ../softmax.h):
//   forward   y  = exp(x - m) / s            or  (x - m) - log(s)
//   backward  dx = y * (dy - sum(dy * y))    or  dy - exp(y) * sum(dy)
// with m = row max and s = sum exp(x - m).  Backward saves only the output y.
//
// One fused kernel per direction and tier, chosen by the row length n:
//   * n <= 1024: warp_*: one warp (or a power-of-two slice of one, for n < 32) per row,
//     the row held in registers; max and sum by warp shuffles.
//   * longer rows: block_*: one block per row; each thread keeps an online (max, sum)
//     state, the states are merged by warp shuffles then across warps.  With kCache the
//     row (forward: x; backward: dy and y) is kept in shared memory between the passes;
//     rows too long for shared memory re-read global memory (mostly L2) instead.
// Loads and stores are 128-bit when the row length and pointers allow it; math in float
// for half/bfloat16 (at::opmath_type); 64-bit offsets; current stream; launch checked.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "../kernels.h"
#include "../softmax.h"

namespace fused_act {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpBlockThreads = 128;
constexpr int kBlockThreads = 512;
constexpr int kMaxWarpCols = 1024;

template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <class T> constexpr int vec_of() { return 16 / sizeof(T); }

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

// Block-wide merge of the threads' (m, s) states; every thread gets the result.
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
    warp_forward(const scalar_t* x, scalar_t* y, int64_t rows, int n, bool vec_ok) {
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
    warp_backward(const scalar_t* g, const scalar_t* y, scalar_t* dx, int64_t rows, int n,
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

// ---- tier 2/3: a block per row ---------------------------------------------------
// Calls fn(i, pack) for each kVec-pack of the row this thread owns (vec_ok), or
// fn(i, value) one element at a time.
template <int kVec, class scalar_t, class Fn>
__device__ __forceinline__ void for_each_owned(const scalar_t* row, int64_t n, bool vec_ok,
                                               Fn&& fn) {
  if (vec_ok) {
    const auto* p = reinterpret_cast<const Pack<scalar_t, kVec>*>(row);
    for (int64_t i = threadIdx.x; i < n / kVec; i += blockDim.x) {
      const Pack<scalar_t, kVec> pk = p[i];
#pragma unroll
      for (int v = 0; v < kVec; ++v) fn(i * kVec + v, pk.v[v]);
    }
  } else {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) fn(i, row[i]);
  }
}

// Writes out[i] = fn(i) over this thread's part of the row (same ownership as above).
template <int kVec, class scalar_t, class Fn>
__device__ __forceinline__ void write_owned(scalar_t* row, int64_t n, bool vec_ok, Fn&& fn) {
  if (vec_ok) {
    auto* p = reinterpret_cast<Pack<scalar_t, kVec>*>(row);
    for (int64_t i = threadIdx.x; i < n / kVec; i += blockDim.x) {
      Pack<scalar_t, kVec> pk;
#pragma unroll
      for (int v = 0; v < kVec; ++v) pk.v[v] = static_cast<scalar_t>(fn(i * kVec + v));
      p[i] = pk;
    }
  } else {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) row[i] = static_cast<scalar_t>(fn(i));
  }
}

template <bool kLog, bool kCache, class scalar_t>
__global__ void __launch_bounds__(kBlockThreads)
    block_forward(const scalar_t* x, scalar_t* y, int64_t rows, int64_t n, bool vec_ok) {
  using T = at::opmath_type<scalar_t>;
  constexpr int kVec = vec_of<scalar_t>();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  scalar_t* cache = reinterpret_cast<scalar_t*>(smem_raw);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const scalar_t* xr = x + row * n;
    T m = softmax_lowest<T>(), s = 0;
    for_each_owned<kVec>(xr, n, vec_ok, [&](int64_t i, scalar_t v) {
      if (kCache) cache[i] = v;
      softmax_online_update(m, s, static_cast<T>(v));
    });
    block_merge(m, s);  // its barrier also publishes the cache
    const SoftmaxNorm<T> c = softmax_norm<kLog>(m, s);
    // Each thread reads back the cache entries it wrote itself.
    write_owned<kVec>(y + row * n, n, vec_ok, [&](int64_t i) {
      const T v = static_cast<T>(kCache ? cache[i] : xr[i]);
      return softmax_output<kLog>(v, c.shift, c.scale);
    });
  }
}

template <bool kLog, bool kCache, class scalar_t>
__global__ void __launch_bounds__(kBlockThreads)
    block_backward(const scalar_t* g, const scalar_t* y, scalar_t* dx, int64_t rows, int64_t n,
                   bool vec_ok) {
  using T = at::opmath_type<scalar_t>;
  constexpr int kVec = vec_of<scalar_t>();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  scalar_t* gc = reinterpret_cast<scalar_t*>(smem_raw);
  scalar_t* yc = gc + (kCache ? n : 0);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const scalar_t* gr = g + row * n;
    const scalar_t* yr = y + row * n;
    T sum = 0;
    if (vec_ok) {
      const auto* gp = reinterpret_cast<const Pack<scalar_t, kVec>*>(gr);
      const auto* yp = reinterpret_cast<const Pack<scalar_t, kVec>*>(yr);
      for (int64_t i = threadIdx.x; i < n / kVec; i += blockDim.x) {
        const auto a = gp[i], b = yp[i];
#pragma unroll
        for (int v = 0; v < kVec; ++v) {
          if (kCache) gc[i * kVec + v] = a.v[v], yc[i * kVec + v] = b.v[v];
          sum += softmax_backward_term<kLog>(static_cast<T>(a.v[v]), static_cast<T>(b.v[v]));
        }
      }
    } else {
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        if (kCache) gc[i] = gr[i], yc[i] = yr[i];
        sum += softmax_backward_term<kLog>(static_cast<T>(gr[i]), static_cast<T>(yr[i]));
      }
    }
    sum = block_sum(sum);
    write_owned<kVec>(dx + row * n, n, vec_ok, [&](int64_t i) {
      const T a = static_cast<T>(kCache ? gc[i] : gr[i]);
      const T b = static_cast<T>(kCache ? yc[i] : yr[i]);
      return softmax_backward_output<kLog>(a, b, sum);
    });
  }
}

// ---- launch --------------------------------------------------------------------
struct DeviceInfo {
  int sms = 0;
  int smem_optin = 0;
};

const DeviceInfo& device_info() {
  static std::vector<DeviceInfo> per_device(c10::cuda::device_count());
  const int dev = c10::cuda::current_device();
  DeviceInfo& d = per_device[dev];
  if (d.sms == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  }
  return d;
}

// Rows cached in shared memory up to this many bytes per block (two blocks per SM fit).
size_t smem_budget() {
  return std::min<size_t>(device_info().smem_optin - 4096, 100 * 1024);
}

template <class scalar_t>
bool can_vectorize(int64_t n, std::initializer_list<const void*> ptrs) {
  if (n % vec_of<scalar_t>() != 0) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

int64_t grid_for(int64_t blocks) {
  return std::min<int64_t>(blocks, int64_t(device_info().sms) * 32);
}

// Calls fn(std::integral_constant<int, log2(next power of two >= n)>) for n <= 1024.
template <class Fn>
void visit_log2_cols(int64_t n, Fn&& fn) {
  int l = 0;
  while ((int64_t(1) << l) < n) ++l;
  switch (l) {
#define FA_L2(k) \
  case k: fn(std::integral_constant<int, k>{}); return;
    FA_L2(0) FA_L2(1) FA_L2(2) FA_L2(3) FA_L2(4) FA_L2(5) FA_L2(6) FA_L2(7) FA_L2(8) FA_L2(9)
    FA_L2(10)
#undef FA_L2
    default: TORCH_CHECK(false, "fused_act: row too long for the warp softmax kernel");
  }
}

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

template <class Kernel>
void set_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(bytes)));
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
    const bool vec = can_vectorize<scalar_t>(n, {xp, yp});
    FA_BOOL_SWITCH(log, kLog, [&] {
      if (n <= kMaxWarpCols) {
        visit_log2_cols(n, [&](auto l2) {
          constexpr int kL2 = decltype(l2)::value;
          using L = WarpLayout<scalar_t, kL2>;
          const int64_t blocks = grid_for((rows + L::kRowsPerBlock - 1) / L::kRowsPerBlock);
          warp_forward<kLog, kL2><<<blocks, kWarpBlockThreads, 0, stream>>>(xp, yp, rows, int(n),
                                                                            vec);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
        return;
      }
      const size_t bytes = n * sizeof(scalar_t);
      FA_BOOL_SWITCH(bytes <= smem_budget(), kCache, [&] {
        const size_t smem = kCache ? bytes : 0;
        auto kernel = block_forward<kLog, kCache, scalar_t>;
        set_smem(kernel, smem);
        kernel<<<grid_for(rows), kBlockThreads, smem, stream>>>(xp, yp, rows, n, vec);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
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
    const bool vec = can_vectorize<scalar_t>(n, {gp, yp, dp});
    FA_BOOL_SWITCH(log, kLog, [&] {
      if (n <= kMaxWarpCols) {
        visit_log2_cols(n, [&](auto l2) {
          constexpr int kL2 = decltype(l2)::value;
          using L = WarpLayout<scalar_t, kL2>;
          const int64_t blocks = grid_for((rows + L::kRowsPerBlock - 1) / L::kRowsPerBlock);
          warp_backward<kLog, kL2><<<blocks, kWarpBlockThreads, 0, stream>>>(gp, yp, dp, rows,
                                                                             int(n), vec);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
        return;
      }
      const size_t bytes = 2 * n * sizeof(scalar_t);
      FA_BOOL_SWITCH(bytes <= smem_budget(), kCache, [&] {
        const size_t smem = kCache ? bytes : 0;
        auto kernel = block_backward<kLog, kCache, scalar_t>;
        set_smem(kernel, smem);
        kernel<<<grid_for(rows), kBlockThreads, smem, stream>>>(gp, yp, dp, rows, n, vec);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
}

// Along a middle dim: the rows are made contiguous (a transposed copy) for the row
// kernels above.
void CudaKernels::softmax_forward_inner(const at::Tensor& x, const at::Tensor& y, int64_t n,
                                        int64_t inner, bool log) {
  const int64_t outer = x.numel() / (n * inner);
  at::Tensor xt = x.view({outer, n, inner}).transpose(1, 2).contiguous();
  at::Tensor yt = at::empty_like(xt);
  softmax_forward(xt, yt, n, log);
  y.view({outer, n, inner}).copy_(yt.transpose(1, 2));
}

void CudaKernels::softmax_backward_inner(const at::Tensor& g, const at::Tensor& y,
                                         const at::Tensor& dx, int64_t n, int64_t inner,
                                         bool log) {
  const int64_t outer = g.numel() / (n * inner);
  at::Tensor gt = g.view({outer, n, inner}).transpose(1, 2).contiguous();
  at::Tensor yt = y.view({outer, n, inner}).transpose(1, 2).contiguous();
  at::Tensor dt = at::empty_like(gt);
  softmax_backward(gt, yt, dt, n, log);
  dx.view({outer, n, inner}).copy_(dt.transpose(1, 2));
}

}  // namespace fused_act
