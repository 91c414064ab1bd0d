// The softmax operators' device-independent layer: argument checks, dim wrapping, output
// allocation and layout, then a call into one device's row kernels (Dev = CpuKernels or
// CudaKernels).  Schemas (ops.cpp):
//   softmax(Tensor x, int dim, bool log) -> Tensor
//   softmax_backward(Tensor grad, Tensor y, int dim, bool log) -> Tensor
// log = true is log_softmax.  Outputs are contiguous, as torch's.  The kernels work on
// the last dim of contiguous rows; any other dim or layout goes through a contiguous
// copy with that dim moved last (and the result is copied back into place).
#pragma once
#include <ATen/ATen.h>
#include <ATen/WrapDimUtils.h>
#include <torch/library.h>

#include "ops_impl.h"

namespace fused_act {

template <class Dev>
struct SoftmaxOps {
  static const char* name(bool log) { return log ? "log_softmax" : "softmax"; }

  // The tensor viewed with `dim` last and contiguous (a copy only when needed).
  static at::Tensor rows_view(const at::Tensor& t, int64_t dim) {
    if (t.dim() == 0) return t.reshape({1});
    return t.movedim(dim, -1).contiguous();
  }

  // Copies `rows` (laid out by rows_view) into the contiguous `out` unless they share it.
  static void put_back(const at::Tensor& out, const at::Tensor& rows, int64_t dim) {
    if (rows.data_ptr() == out.data_ptr()) return;
    out.copy_(out.dim() == 0 ? rows.reshape({}) : rows.movedim(-1, dim));
  }

  static at::Tensor forward(const at::Tensor& x, int64_t dim, bool log) {
    check_floating(x, name(log), "input");
    const int64_t d = at::maybe_wrap_dim(dim, x.dim());
    at::Tensor y = at::empty(x.sizes(), x.options());
    if (x.numel() == 0) return y;
    const int64_t n = x.dim() == 0 ? 1 : x.size(d);
    at::Tensor xr = rows_view(x, d);
    const bool direct = x.dim() == 0 || (d == x.dim() - 1 && x.is_contiguous());
    at::Tensor yr = direct ? y : at::empty_like(xr);
    Dev::softmax_forward(xr, yr, n, log);
    put_back(y, yr, d);
    return y;
  }

  static at::Tensor backward(const at::Tensor& g, const at::Tensor& y, int64_t dim, bool log) {
    const char* op = log ? "log_softmax_backward" : "softmax_backward";
    check_floating(g, op, "grad");
    check_same(g, y, op, "grad", "output");
    TORCH_CHECK(g.sizes() == y.sizes(), "fused_act::", op, ": grad has shape ", g.sizes(),
                " but the output has shape ", y.sizes());
    const int64_t d = at::maybe_wrap_dim(dim, g.dim());
    at::Tensor dx = at::empty(g.sizes(), g.options());
    if (g.numel() == 0) return dx;
    const int64_t n = g.dim() == 0 ? 1 : g.size(d);
    at::Tensor gr = rows_view(g, d), yr = rows_view(y, d);
    const bool direct =
        g.dim() == 0 || (d == g.dim() - 1 && g.is_contiguous() && y.is_contiguous());
    at::Tensor dr = direct ? dx : at::empty_like(gr);
    Dev::softmax_backward(gr, yr, dr, n, log);
    put_back(dx, dr, d);
    return dx;
  }
};

template <class Dev>
void register_softmax_impls(torch::Library& m) {
  m.impl("softmax", TORCH_FN(SoftmaxOps<Dev>::forward));
  m.impl("softmax_backward", TORCH_FN(SoftmaxOps<Dev>::backward));
}

}  // namespace fused_act
