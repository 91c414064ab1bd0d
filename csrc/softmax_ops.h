// The softmax operators' device-independent layer: argument checks, dim wrapping, output
// allocation and layout, then a call into one device's row kernels (Dev = CpuKernels or
// CudaKernels).  Schemas (ops.cpp):
//   softmax(Tensor x, int dim, bool log) -> Tensor
//   softmax_backward(Tensor grad, Tensor y, int dim, bool log) -> Tensor
// log = true is log_softmax.  Outputs are contiguous, as torch's.  Inputs are made
// contiguous (a copy only when they are not); then the dim is either the last one (or
// followed only by size-1 dims: contiguous rows) or a middle dim of [outer, n, inner],
// which the devices' column kernels handle in place.
#pragma once
#include <ATen/ATen.h>
#include <ATen/WrapDimUtils.h>
#include <torch/library.h>

#include "ops_impl.h"

namespace fused_act {

template <class Dev>
struct SoftmaxOps {
  static const char* name(bool log) { return log ? "log_softmax" : "softmax"; }

  // dim in [-ndim, ndim) (a 0-d tensor counts as 1-d, as in torch), made non-negative.
  static int64_t wrap_dim(const char* op, int64_t dim, int64_t ndim) {
    const int64_t n = ndim > 0 ? ndim : 1;
    TORCH_CHECK_INDEX(dim >= -n && dim < n, "fused_act::", op, ": dim ", dim,
                      " is out of range for a tensor of ", ndim, " dimension(s) (expected in [",
                      -n, ", ", n - 1, "])");
    return dim < 0 ? dim + n : dim;
  }

  // Elements after `dim` (its stride in a contiguous tensor).
  static int64_t inner_of(const at::Tensor& t, int64_t d) {
    int64_t inner = 1;
    for (int64_t i = d + 1; i < t.dim(); ++i) inner *= t.size(i);
    return inner;
  }

  static at::Tensor forward(const at::Tensor& x, int64_t dim, bool log) {
    check_floating(x, name(log), "input");
    const int64_t d = wrap_dim(name(log), dim, x.dim());
    at::Tensor y = at::empty(x.sizes(), x.options());
    if (x.numel() == 0) return y;
    const at::Tensor xc = x.contiguous();
    const int64_t n = x.dim() == 0 ? 1 : x.size(d);
    const int64_t inner = x.dim() == 0 ? 1 : inner_of(x, d);
    if (inner == 1)
      Dev::softmax_forward(xc, y, n, log);
    else
      Dev::softmax_forward_inner(xc, y, n, inner, log);
    return y;
  }

  static at::Tensor backward(const at::Tensor& g, const at::Tensor& y, int64_t dim, bool log) {
    const char* op = log ? "log_softmax_backward" : "softmax_backward";
    check_floating(g, op, "grad");
    check_same(g, y, op, "grad", "output");
    TORCH_CHECK(g.sizes() == y.sizes(), "fused_act::", op, ": grad has shape ", g.sizes(),
                " but the output has shape ", y.sizes());
    const int64_t d = wrap_dim(op, dim, g.dim());
    at::Tensor dx = at::empty(g.sizes(), g.options());
    if (g.numel() == 0) return dx;
    const at::Tensor gc = g.contiguous(), yc = y.contiguous();
    const int64_t n = g.dim() == 0 ? 1 : g.size(d);
    const int64_t inner = g.dim() == 0 ? 1 : inner_of(g, d);
    if (inner == 1)
      Dev::softmax_backward(gc, yc, dx, n, log);
    else
      Dev::softmax_backward_inner(gc, yc, dx, n, inner, log);
    return dx;
  }
};

template <class Dev>
void register_softmax_impls(torch::Library& m) {
  m.impl("softmax", TORCH_FN(SoftmaxOps<Dev>::forward));
  m.impl("softmax_backward", TORCH_FN(SoftmaxOps<Dev>::backward));
}

}  // namespace fused_act
