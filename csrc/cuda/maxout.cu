// CUDA maxout: one thread per output element (grid-stride), running maxout.h's code for
// that output.  Consecutive threads take consecutive inner columns, so along a middle dim
// (inner > 1) every piece's load is coalesced across the warp; for the last dim
// (inner == 1) a thread reads its group's `pieces` contiguous values (the warp's loads
// cover one contiguous span, served by the same cache lines).  One read of x (and a
// write of y and the mask) forward; one read of grad and the mask and a write of dx
// backward.  Half / bfloat16 are computed in float.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../maxout_ops.h"
#include "launch.h"

namespace fused_act {
namespace {

constexpr int kThreads = 256;

// out index o -> (row, column): x's piece 0 at row * pieces * inner + column.
template <class scalar_t, class M>
__global__ void maxout_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                      M* __restrict__ mask, int64_t n, int64_t pieces,
                                      int64_t inner, int64_t words) {
  using T = at::opmath_type<scalar_t>;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < n;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = o / inner, c = o - r * inner;
    y[o] = scalar_t(maxout_forward_one<T>(x + r * pieces * inner + c, inner, pieces,
                                          mask ? mask + r * words * inner + c : nullptr));
  }
}

template <class scalar_t, class M>
__global__ void maxout_backward_kernel(const scalar_t* __restrict__ g, const M* __restrict__ mask,
                                       scalar_t* __restrict__ dx, int64_t n, int64_t pieces,
                                       int64_t inner, int64_t words) {
  using T = at::opmath_type<scalar_t>;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < n;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = o / inner, c = o - r * inner;
    maxout_backward_one<T>(T(g[o]), mask + r * words * inner + c, dx + r * pieces * inner + c,
                           inner, pieces, words);
  }
}

template <class scalar_t, class M>
__global__ void maxout_gather_kernel(const scalar_t* __restrict__ t, const M* __restrict__ mask,
                                     scalar_t* __restrict__ out, int64_t n, int64_t pieces,
                                     int64_t inner, int64_t words) {
  using T = at::opmath_type<scalar_t>;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < n;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = o / inner, c = o - r * inner;
    out[o] = scalar_t(maxout_gather_one<T>(t + r * pieces * inner + c, mask + r * words * inner + c,
                                           inner, pieces, words));
  }
}

int64_t blocks_for(int64_t n) {
  const int64_t most = int64_t(cuda_detail::current_device_props().sms) * (2048 / kThreads) * 2;
  return std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, most));
}

#define FA_DISPATCH_MAXOUT(TYPE, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, "fused_act_maxout", __VA_ARGS__)

}  // namespace

void CudaMaxout::forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& mask,
                         const MaxoutShape& s) {
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = y.numel();
  auto stream = c10::cuda::getCurrentCUDAStream();
  FA_DISPATCH_MAXOUT(x.scalar_type(), [&] {
    visit_word(s.pieces, [&](auto w) {
      using M = typename decltype(w)::type;
      auto kernel = maxout_forward_kernel<scalar_t, M>;
      cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
      kernel<<<blocks_for(n), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
          mask.defined() ? static_cast<M*>(mask.data_ptr()) : nullptr, n, s.pieces, s.inner,
          s.words);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void CudaMaxout::backward(const at::Tensor& g, const at::Tensor& mask, const at::Tensor& dx,
                          const MaxoutShape& s) {
  c10::cuda::CUDAGuard guard(g.device());
  const int64_t n = g.numel();
  auto stream = c10::cuda::getCurrentCUDAStream();
  FA_DISPATCH_MAXOUT(g.scalar_type(), [&] {
    visit_word(s.pieces, [&](auto w) {
      using M = typename decltype(w)::type;
      auto kernel = maxout_backward_kernel<scalar_t, M>;
      cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
      kernel<<<blocks_for(n), kThreads, 0, stream>>>(
          g.const_data_ptr<scalar_t>(), static_cast<const M*>(mask.data_ptr()),
          dx.mutable_data_ptr<scalar_t>(), n, s.pieces, s.inner, s.words);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void CudaMaxout::gather(const at::Tensor& t, const at::Tensor& mask, const at::Tensor& out,
                        const MaxoutShape& s) {
  c10::cuda::CUDAGuard guard(t.device());
  const int64_t n = out.numel();
  auto stream = c10::cuda::getCurrentCUDAStream();
  FA_DISPATCH_MAXOUT(t.scalar_type(), [&] {
    visit_word(s.pieces, [&](auto w) {
      using M = typename decltype(w)::type;
      auto kernel = maxout_gather_kernel<scalar_t, M>;
      cuda_detail::check_device_once(reinterpret_cast<const void*>(kernel));
      kernel<<<blocks_for(n), kThreads, 0, stream>>>(
          t.const_data_ptr<scalar_t>(), static_cast<const M*>(mask.data_ptr()),
          out.mutable_data_ptr<scalar_t>(), n, s.pieces, s.inner, s.words);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace fused_act

TORCH_LIBRARY_IMPL(fused_act, CUDA, m) {
  fused_act::register_maxout_impls<fused_act::CudaMaxout>(m);
}
