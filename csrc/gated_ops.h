// The gated operators' device-independent layer (gated.h): argument checks, dim
// wrapping, output allocation, then a call into one device's kernels.  Schemas
// (gated.cpp), for each NAME of FA_FOR_EACH_GATED:
//   NAME(Tensor x, int dim) -> Tensor                       a, b = x.chunk(2, dim)
//   NAME_backward(Tensor grad, Tensor x, int dim) -> Tensor  the gradient of all of x
// Layout: x is made contiguous (a copy only when it is not); then, with
// outer = prod(sizes[:dim]) and L = size[dim] / 2 * prod(sizes[dim + 1:]), row o of
// `outer` holds a at x + o * 2L and b at x + o * 2L + L, each L contiguous elements, and
// its output at y + o * L: one kernel for every dim (the last dim: L = size / 2).
// Outputs are contiguous, as torch's glu.
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>

#include "gated.h"
#include "ops_impl.h"

namespace fused_act {

template <class Dev>
struct GatedOps {
  struct Layout {
    int64_t dim, outer, half;  // half: L, the elements of one half of one row
  };

  // Torch's rules for glu: not 0-dim, dim in range, an even size along dim.
  static Layout layout(Gate gate, const at::Tensor& x, int64_t dim) {
    const char* op = gate_name(gate);
    TORCH_CHECK(x.dim() > 0, "fused_act::", op, ": a 0-dim input cannot be split in two "
                "halves (", op, " does not support scalars because halving size must be even)");
    TORCH_CHECK_INDEX(dim >= -x.dim() && dim < x.dim(), "fused_act::", op, ": dim ", dim,
                      " is out of range for a tensor of ", x.dim(),
                      " dimension(s) (expected in [", -x.dim(), ", ", x.dim() - 1, "])");
    const int64_t d = dim < 0 ? dim + x.dim() : dim;
    TORCH_CHECK(x.size(d) % 2 == 0, "fused_act::", op,
                ": Halving dimension must be even, but dimension ", d, " is size ", x.size(d));
    Layout l{d, 1, x.size(d) / 2};
    for (int64_t i = 0; i < d; ++i) l.outer *= x.size(i);
    for (int64_t i = d + 1; i < x.dim(); ++i) l.half *= x.size(i);
    return l;
  }

  static std::vector<int64_t> halved(const at::Tensor& x, int64_t d) {
    std::vector<int64_t> sizes(x.sizes().begin(), x.sizes().end());
    sizes[d] /= 2;
    return sizes;
  }

  static at::Tensor forward(Gate gate, const at::Tensor& x, int64_t dim) {
    check_floating(x, gate_name(gate), "input");
    const Layout l = layout(gate, x, dim);
    at::Tensor y = at::empty(halved(x, l.dim), x.options());
    if (y.numel() == 0) return y;
    Dev::gated_forward(gate, x.contiguous(), y, l.outer, l.half);
    return y;
  }

  static at::Tensor backward(Gate gate, const at::Tensor& g, const at::Tensor& x, int64_t dim) {
    const char* op = gate_name(gate);
    check_floating(g, op, "grad");
    check_same(g, x, op, "grad", "input");
    const Layout l = layout(gate, x, dim);
    const auto expected = halved(x, l.dim);
    TORCH_CHECK(g.sizes() == at::IntArrayRef(expected), "fused_act::", op, "_backward: grad has shape ",
                g.sizes(), " but the output of an input of shape ", x.sizes(), " has shape ",
                at::IntArrayRef(expected));
    at::Tensor dx = at::empty(x.sizes(), x.options());
    if (dx.numel() == 0) return dx;
    Dev::gated_backward(gate, g.contiguous(), x.contiguous(), dx, l.outer, l.half);
    return dx;
  }
};

template <class Dev, Gate G>
struct BoundGated {
  static at::Tensor forward(const at::Tensor& x, int64_t dim) {
    return GatedOps<Dev>::forward(G, x, dim);
  }
  static at::Tensor backward(const at::Tensor& g, const at::Tensor& x, int64_t dim) {
    return GatedOps<Dev>::backward(G, g, x, dim);
  }
};

template <class Dev>
void register_gated_impls(torch::Library& m) {
#define FA_GATED_IMPL(name, F, p, second)                                   \
  m.impl(#name, TORCH_FN((BoundGated<Dev, Gate::name>::forward)));          \
  m.impl(#name "_backward", TORCH_FN((BoundGated<Dev, Gate::name>::backward)));
  FA_FOR_EACH_GATED(FA_GATED_IMPL)
#undef FA_GATED_IMPL
}

}  // namespace fused_act
