// The maxout operators' device-independent layer: argument checks, the layout
// [outer, groups, pieces, inner] of a contiguous input (maxout.h), output and mask
// allocation, then a call into one device's kernels (Dev = CpuMaxout or CudaMaxout).
// Schemas (maxout_ops.cpp):
//   maxout(Tensor x, int pieces, int dim) -> Tensor
//   maxout_forward(Tensor x, int pieces, int dim) -> (Tensor y, Tensor mask)
//   maxout_backward(Tensor grad, Tensor mask, int pieces, int dim) -> Tensor
//   maxout_gather(Tensor t, Tensor mask, int pieces, int dim) -> Tensor
// dim counts in the input's dims (the output has as many); grad and the mask have the
// output's shape along every other dim.  Inputs are made contiguous (a copy only when they
// are not); outputs are contiguous.
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "maxout.h"
#include "ops_impl.h"  // check_floating, check_same

namespace fused_act {

// The layout of one call.
struct MaxoutShape {
  int64_t outer = 1, groups = 1, pieces = 1, inner = 1, words = 1;
};

// The device entry points.  Every tensor is contiguous; mask may be undefined in forward
// (no backward wanted: only y is computed).
#define FA_MAXOUT_KERNELS                                                                    \
  static void forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& mask,     \
                      const MaxoutShape& s);                                                 \
  static void backward(const at::Tensor& g, const at::Tensor& mask, const at::Tensor& dx,   \
                       const MaxoutShape& s);                                                \
  static void gather(const at::Tensor& t, const at::Tensor& mask, const at::Tensor& out,    \
                     const MaxoutShape& s);

struct CpuMaxout {
  FA_MAXOUT_KERNELS
};
#ifdef FA_WITH_CUDA
struct CudaMaxout {
  FA_MAXOUT_KERNELS
};
#endif
#undef FA_MAXOUT_KERNELS

// The mask's dtype: the smallest integer type of maxout_word_bytes(pieces) bytes (its bits
// are what count, read as unsigned by the kernels).
inline at::ScalarType maxout_mask_dtype(int64_t pieces) {
  switch (maxout_word_bytes(pieces)) {
    case 1: return at::kByte;
    case 2: return at::kShort;
    case 4: return at::kInt;
    default: return at::kLong;
  }
}

inline void maxout_check_pieces(const char* op, int64_t pieces) {
  TORCH_CHECK_VALUE(pieces >= 1, "fused_act::", op, ": pieces must be at least 1, got ", pieces);
}

inline int64_t maxout_wrap_dim(const char* op, int64_t dim, int64_t ndim) {
  TORCH_CHECK(ndim >= 1, "fused_act::", op,
              ": expected an input with at least 1 dimension, got a 0-d tensor");
  TORCH_CHECK_INDEX(dim >= -ndim && dim < ndim, "fused_act::", op, ": dim ", dim,
                    " is out of range for a tensor of ", ndim, " dimension(s) (expected in [",
                    -ndim, ", ", ndim - 1, "])");
  return dim < 0 ? dim + ndim : dim;
}

// The layout of an input of `sizes` (d: the wrapped dim).
inline MaxoutShape maxout_layout(const char* op, at::IntArrayRef sizes, int64_t d, int64_t pieces) {
  MaxoutShape s;
  s.pieces = pieces;
  s.words = maxout_words(pieces);
  TORCH_CHECK_VALUE(sizes[d] % pieces == 0, "fused_act::", op, ": the size of dim ", d, " (",
                    sizes[d], ") is not a multiple of pieces (", pieces, ")");
  s.groups = sizes[d] / pieces;
  for (int64_t i = 0; i < d; ++i) s.outer *= sizes[i];
  for (int64_t i = d + 1; i < int64_t(sizes.size()); ++i) s.inner *= sizes[i];
  return s;
}

inline std::vector<int64_t> maxout_sizes_with(at::IntArrayRef sizes, int64_t d, int64_t n) {
  std::vector<int64_t> out(sizes.begin(), sizes.end());
  out[d] = n;
  return out;
}

template <class Dev>
struct MaxoutOps {
  static std::tuple<at::Tensor, at::Tensor> run_forward(const at::Tensor& x, int64_t pieces,
                                                        int64_t dim, bool want_mask) {
    const char* op = "maxout";
    check_floating(x, op, "input");
    maxout_check_pieces(op, pieces);
    const int64_t d = maxout_wrap_dim(op, dim, x.dim());
    const MaxoutShape s = maxout_layout(op, x.sizes(), d, pieces);
    at::Tensor y = at::empty(maxout_sizes_with(x.sizes(), d, s.groups), x.options());
    at::Tensor mask;
    if (want_mask)
      mask = at::empty(maxout_sizes_with(x.sizes(), d, s.groups * s.words),
                       x.options().dtype(maxout_mask_dtype(pieces)));
    if (y.numel() > 0) Dev::forward(x.contiguous(), y, mask, s);
    return {y, mask};
  }

  static at::Tensor forward(const at::Tensor& x, int64_t pieces, int64_t dim) {
    return std::get<0>(run_forward(x, pieces, dim, false));
  }

  static std::tuple<at::Tensor, at::Tensor> forward_with_mask(const at::Tensor& x, int64_t pieces,
                                                              int64_t dim) {
    return run_forward(x, pieces, dim, true);
  }

  // The checks of backward / gather: a float tensor t of the output's shape (grad) or the
  // input's (tangent), and the mask; returns the layout.
  static MaxoutShape check_pair(const char* op, const at::Tensor& t, const at::Tensor& mask,
                                int64_t pieces, int64_t dim, bool t_is_output) {
    check_floating(t, op, t_is_output ? "grad" : "tangent");
    maxout_check_pieces(op, pieces);
    TORCH_CHECK(mask.device() == t.device(), "fused_act::", op, ": mask is on ", mask.device(),
                " but ", t_is_output ? "grad" : "tangent", " is on ", t.device());
    TORCH_CHECK_TYPE(mask.scalar_type() == maxout_mask_dtype(pieces), "fused_act::", op,
                     ": mask has dtype ", mask.scalar_type(), " but ", pieces,
                     " pieces take ", maxout_mask_dtype(pieces));
    const int64_t d = maxout_wrap_dim(op, dim, t.dim());
    TORCH_CHECK(mask.dim() == t.dim(), "fused_act::", op, ": mask has ", mask.dim(),
                " dims but ", t_is_output ? "grad" : "tangent", " has ", t.dim());
    const int64_t words = maxout_words(pieces);
    const int64_t groups = t_is_output ? t.size(d) : t.size(d) / pieces;
    TORCH_CHECK(t_is_output || t.size(d) % pieces == 0, "fused_act::", op,
                ": the size of dim ", d, " (", t.size(d), ") is not a multiple of pieces (",
                pieces, ")");
    TORCH_CHECK(mask.sizes() == at::IntArrayRef(maxout_sizes_with(t.sizes(), d, groups * words)),
                "fused_act::", op, ": mask has shape ", mask.sizes(), ", expected ",
                at::IntArrayRef(maxout_sizes_with(t.sizes(), d, groups * words)));
    return maxout_layout(op, maxout_sizes_with(t.sizes(), d, groups * pieces), d, pieces);
  }

  static at::Tensor backward(const at::Tensor& g, const at::Tensor& mask, int64_t pieces,
                             int64_t dim) {
    const MaxoutShape s = check_pair("maxout_backward", g, mask, pieces, dim, true);
    const int64_t d = maxout_wrap_dim("maxout_backward", dim, g.dim());
    at::Tensor dx = at::empty(maxout_sizes_with(g.sizes(), d, s.groups * pieces), g.options());
    if (dx.numel() > 0) Dev::backward(g.contiguous(), mask.contiguous(), dx, s);
    return dx;
  }

  static at::Tensor gather(const at::Tensor& t, const at::Tensor& mask, int64_t pieces,
                           int64_t dim) {
    const MaxoutShape s = check_pair("maxout_gather", t, mask, pieces, dim, false);
    const int64_t d = maxout_wrap_dim("maxout_gather", dim, t.dim());
    at::Tensor out = at::empty(maxout_sizes_with(t.sizes(), d, s.groups), t.options());
    if (out.numel() > 0) Dev::gather(t.contiguous(), mask.contiguous(), out, s);
    return out;
  }
};

template <class Dev>
void register_maxout_impls(torch::Library& m) {
  m.impl("maxout", TORCH_FN(MaxoutOps<Dev>::forward));
  m.impl("maxout_forward", TORCH_FN(MaxoutOps<Dev>::forward_with_mask));
  m.impl("maxout_backward", TORCH_FN(MaxoutOps<Dev>::backward));
  m.impl("maxout_gather", TORCH_FN(MaxoutOps<Dev>::gather));
}

}  // namespace fused_act
