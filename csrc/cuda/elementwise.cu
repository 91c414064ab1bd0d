// CUDA elementwise kernels: one launcher for every activation of activations.h.
//
// elementwise_kernel applies an op to kIn inputs and writes kOut outputs per element:
// 128-bit vector loads/stores when every pointer is 16-byte aligned (a scalar tail of
// fewer than one vector after them), a grid-stride loop with 64-bit offsets, math in
// at::opmath_type (float for half/bfloat16), launched on the current stream and
// checked.  The ops below only pick the functor's forward, backward or weight-gradient
// formula; none is restated here.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "../kernels.h"

namespace fused_act {
namespace {

constexpr int kThreads = 256;

template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <class T, int N>
struct Ptrs {
  T p[N];
};

template <int kVec, int kIn, int kOut, class scalar_t, class Op>
__global__ void __launch_bounds__(kThreads)
    elementwise_kernel(Ptrs<const scalar_t*, kIn> in, Ptrs<scalar_t*, kOut> out, int64_t n, Op op) {
  using opmath_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, kVec>;
  const int64_t nvec = n / kVec;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t v = tid; v < nvec; v += stride) {
    P a[kIn], r[kOut];
#pragma unroll
    for (int j = 0; j < kIn; ++j) a[j] = reinterpret_cast<const P*>(in.p[j])[v];
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      opmath_t args[kIn], res[kOut];
#pragma unroll
      for (int j = 0; j < kIn; ++j) args[j] = static_cast<opmath_t>(a[j].v[k]);
      op(v * kVec + k, args, res);
#pragma unroll
      for (int j = 0; j < kOut; ++j) r[j].v[k] = static_cast<scalar_t>(res[j]);
    }
#pragma unroll
    for (int j = 0; j < kOut; ++j) reinterpret_cast<P*>(out.p[j])[v] = r[j];
  }
  // The tail: fewer than kVec elements after the last whole vector.
  const int64_t t = nvec * kVec + tid;
  if (kVec > 1 && t < n) {
    opmath_t args[kIn], res[kOut];
#pragma unroll
    for (int j = 0; j < kIn; ++j) args[j] = static_cast<opmath_t>(in.p[j][t]);
    op(t, args, res);
#pragma unroll
    for (int j = 0; j < kOut; ++j) out.p[j][t] = static_cast<scalar_t>(res[j]);
  }
}

int max_blocks() {
  static std::vector<int> per_device(c10::cuda::device_count(), 0);
  const int dev = c10::cuda::current_device();
  if (per_device[dev] == 0) {
    int sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    per_device[dev] = sms * 2048 / kThreads * 4;  // four full waves, then grid-stride
  }
  return per_device[dev];
}

template <int kIn, int kOut, class scalar_t, class Op>
void launch(Ptrs<const scalar_t*, kIn> in, Ptrs<scalar_t*, kOut> out, int64_t n, Op op) {
  if (n == 0) return;
  constexpr int kVec = 16 / sizeof(scalar_t);
  bool aligned = true;
  for (int j = 0; j < kIn; ++j) aligned &= reinterpret_cast<uintptr_t>(in.p[j]) % 16 == 0;
  for (int j = 0; j < kOut; ++j) aligned &= reinterpret_cast<uintptr_t>(out.p[j]) % 16 == 0;
  const int64_t work = aligned ? (n + kVec - 1) / kVec : n;
  const int64_t blocks = std::min<int64_t>((work + kThreads - 1) / kThreads, max_blocks());
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (aligned)
    elementwise_kernel<kVec, kIn, kOut><<<blocks, kThreads, 0, stream>>>(in, out, n, op);
  else
    elementwise_kernel<1, kIn, kOut><<<blocks, kThreads, 0, stream>>>(in, out, n, op);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---- the ops: which formula of the functor, and where its parameter comes from -------

template <class F, class T>
struct ForwardOp {
  T p;
  __device__ void operator()(int64_t, const T (&a)[1], T (&r)[1]) const {
    r[0] = F::forward(a[0], p);
  }
};

template <class F, bool kFromOutput, class T>
struct BackwardOp {
  T p;
  __device__ void operator()(int64_t, const T (&a)[2], T (&r)[1]) const {
    r[0] = F::template backward<kFromOutput>(a[0], a[1], p);
  }
};

// Weight of the element at flat offset i: w[(i / inner) % channels].
template <class scalar_t>
struct WeightAt {
  const scalar_t* w;
  int64_t inner, channels;
  __device__ at::opmath_type<scalar_t> operator()(int64_t i) const {
    return static_cast<at::opmath_type<scalar_t>>(channels == 1 ? w[0] : w[(i / inner) % channels]);
  }
};

template <class F, class scalar_t>
struct WeightedForwardOp {
  using T = at::opmath_type<scalar_t>;
  WeightAt<scalar_t> weight;
  __device__ void operator()(int64_t i, const T (&a)[1], T (&r)[1]) const {
    r[0] = F::forward(a[0], weight(i));
  }
};

// Writes dx and, with kWeightGrad, each element's weight-gradient term (summed per
// channel afterwards).
template <class F, bool kWeightGrad, class scalar_t>
struct WeightedBackwardOp {
  using T = at::opmath_type<scalar_t>;
  WeightAt<scalar_t> weight;
  __device__ void operator()(int64_t i, const T (&a)[2], T (&r)[kWeightGrad ? 2 : 1]) const {
    const T p = weight(i);
    r[0] = F::template backward<false>(a[0], a[1], p);
    if constexpr (kWeightGrad) r[1] = F::weight_grad(a[0], a[1], p);
  }
};

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
      WeightAt<scalar_t> weight{wc.const_data_ptr<scalar_t>(), inner, channels};
      launch<1, 1, scalar_t>({{x.const_data_ptr<scalar_t>()}}, {{y.mutable_data_ptr<scalar_t>()}},
                             x.numel(), WeightedForwardOp<F, scalar_t>{weight});
    });
  });
}

void CudaKernels::weighted_backward(Act act, const at::Tensor& g, const at::Tensor& x,
                                    const at::Tensor& w, const at::Tensor& dx,
                                    const at::Tensor& dw, int64_t inner, int64_t channels) {
  c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor wc = w.contiguous();
  at::Tensor terms = dw.defined() ? at::empty_like(x) : at::Tensor();
  visit_weighted(act, [&](auto a) {
    using F = typename decltype(a)::type;
    FA_DISPATCH_FLOATING(x.scalar_type(), [&] {
      WeightAt<scalar_t> weight{wc.const_data_ptr<scalar_t>(), inner, channels};
      Ptrs<const scalar_t*, 2> in{{g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>()}};
      if (dw.defined()) {
        Ptrs<scalar_t*, 2> out{{dx.mutable_data_ptr<scalar_t>(), terms.mutable_data_ptr<scalar_t>()}};
        launch<2, 2>(in, out, x.numel(), WeightedBackwardOp<F, true, scalar_t>{weight});
      } else {
        Ptrs<scalar_t*, 1> out{{dx.mutable_data_ptr<scalar_t>()}};
        launch<2, 1>(in, out, x.numel(), WeightedBackwardOp<F, false, scalar_t>{weight});
      }
    });
  });
  if (dw.defined()) {
    // terms has x's sizes and layout; the channel is dim 1 when there are several.
    const auto acc = at::toOpMathType(x.scalar_type());
    at::Tensor total;
    if (channels == 1) {
      total = terms.sum(acc);
    } else {
      std::vector<int64_t> dims;
      for (int64_t d = 0; d < x.dim(); ++d)
        if (d != 1) dims.push_back(d);
      total = at::sum(terms, dims, /*keepdim=*/false, acc);
    }
    dw.copy_(total.view(dw.sizes()));
  }
}

}  // namespace fused_act
