// Entry points of the device kernels, called by the operator layer (ops_impl.h).
// Every tensor passed in has the same sizes and strides and is non-overlapping and
// dense, so kernels walk storage as a flat array; the operator layer guarantees it.
// For the weighted kernels, the weight of the element at flat offset o is
// w[(o / inner) % channels].
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "activations.h"
#include "gated.h"

namespace fused_act {

// The entry points every device implements (written once, declared for each device).
#define FA_DEVICE_KERNELS                                                                 \
  static void forward(Act act, const at::Tensor& x, const at::Tensor& y, double p,       \
                      double q);                                                          \
  static void backward(Act act, const at::Tensor& g, const at::Tensor& s,                 \
                       const at::Tensor& dx, double p, double q, bool saved_is_output);   \
  static void weighted_forward(Act act, const at::Tensor& x, const at::Tensor& w,         \
                               const at::Tensor& y, int64_t inner, int64_t channels);     \
  /* dw is undefined when the weight needs no gradient. */                                \
  static void weighted_backward(Act act, const at::Tensor& g, const at::Tensor& x,        \
                                const at::Tensor& w, const at::Tensor& dx,                \
                                const at::Tensor& dw, int64_t inner, int64_t channels);   \
  /* Softmax / log-softmax over rows of n contiguous elements (x, y, g, dx contiguous, */ \
  /* numel a multiple of n, n > 0): y from x, or dx from the gradient g and output y. */  \
  static void softmax_forward(const at::Tensor& x, const at::Tensor& y, int64_t n,        \
                              bool log);                                                  \
  static void softmax_backward(const at::Tensor& g, const at::Tensor& y,                  \
                               const at::Tensor& dx, int64_t n, bool log);                \
  /* The same along the middle dim of contiguous tensors viewed as [outer, n, inner]. */ \
  static void softmax_forward_inner(const at::Tensor& x, const at::Tensor& y, int64_t n,  \
                                    int64_t inner, bool log);                             \
  static void softmax_backward_inner(const at::Tensor& g, const at::Tensor& y,            \
                                     const at::Tensor& dx, int64_t n, int64_t inner,      \
                                     bool log);                                             \
  /* Gated ops (gated.h): x contiguous [outer, 2, L] (the halves a, b of each row), y and */ \
  /* g contiguous [outer, L], dx like x. */                                                \
  static void gated_forward(Gate gate, const at::Tensor& x, const at::Tensor& y,           \
                            int64_t outer, int64_t half);                                  \
  static void gated_backward(Gate gate, const at::Tensor& g, const at::Tensor& x,          \
                             const at::Tensor& dx, int64_t outer, int64_t half);

struct CpuKernels {
  FA_DEVICE_KERNELS
};

#ifdef FA_WITH_CUDA
struct CudaKernels {
  FA_DEVICE_KERNELS
};
#endif

#undef FA_DEVICE_KERNELS

// The instruction set the CPU kernels use ("avx512", "avx2" or "baseline"): the best the
// CPU supports unless FUSED_ACT_CPU_CAPABILITY or set_cpu_capability() asks for less.
std::string cpu_capability();
void set_cpu_capability(const std::string& name);

// The traffic (bytes read and written by one call) above which the CPU kernels write
// float outputs with non-temporal stores; by default 3/4 of the calling threads' share of
// the caches (cpu/elementwise.cpp).  A negative value restores the default.
int64_t nontemporal_threshold();
void set_nontemporal_threshold(int64_t bytes);

}  // namespace fused_act
