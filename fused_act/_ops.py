"""Loads the compiled operators (namespace ``torch.ops.fused_act``) and gives each a fake
(meta) kernel, so torch.compile and torch.library.opcheck can trace them.

The fake kernels allocate exactly what the C++ operators allocate: outputs like the
first tensor argument (torch's ``preserve_format``), weight gradients like the weight.
"""
import torch

from . import _build

# The library must have been compiled against this torch: say so before loading it (an
# undefined-symbol error otherwise), and explain any other failure to load it.
_build.check_torch()
try:
    from . import _C  # noqa: F401  (registers torch.ops.fused_act.*)
except ImportError as e:
    raise _build.explain_load_error(e)

ops = torch.ops.fused_act

# Operators of the elementwise table (csrc/activations.h, FA_FOR_EACH_ACTIVATION: asked of
# the library, not restated here) and the weighted ones (FA_FOR_EACH_WEIGHTED).
ELEMENTWISE_OPS = tuple(ops.activation_names())
WEIGHTED_OPS = ("prelu", "swish_weighted")
# The gated operators (csrc/gated.h, FA_FOR_EACH_GATED), asked of the library.
GATED_OPS = tuple(ops.gated_names())


def built_with_cuda() -> bool:
    return bool(ops.built_with_cuda())


def _register_fakes():
    for name in ELEMENTWISE_OPS:
        torch.library.register_fake(f"fused_act::{name}")(lambda x, p, q: torch.empty_like(x))
        torch.library.register_fake(f"fused_act::{name}_")(lambda x, p, q: None)
        torch.library.register_fake(f"fused_act::{name}_backward")(
            lambda grad, saved, p, q, saved_is_output: torch.empty_like(grad))
    for name in WEIGHTED_OPS:
        torch.library.register_fake(f"fused_act::{name}")(_weighted_fake(name))
        torch.library.register_fake(f"fused_act::{name}_backward")(
            lambda grad, x, weight, need_weight_grad: (torch.empty_like(grad),
                                                       torch.empty_like(weight)))

    for name in GATED_OPS:
        torch.library.register_fake(f"fused_act::{name}")(
            lambda x, dim, name=name: torch.empty(_halved(name, x, dim), dtype=x.dtype,
                                                  device=x.device))
        torch.library.register_fake(f"fused_act::{name}_backward")(
            lambda grad, x, dim, name=name: _gated_backward_fake(name, grad, x, dim))

    # Softmax outputs are contiguous with the input's shape, as torch's (softmax_ops.h).
    torch.library.register_fake("fused_act::softmax")(
        lambda x, dim, log: _softmax_fake("log_softmax" if log else "softmax", x, dim))
    torch.library.register_fake("fused_act::softmax_backward")(
        lambda grad, y, dim, log: _softmax_fake(
            "log_softmax_backward" if log else "softmax_backward", grad, dim))

    # Maxout: outputs contiguous, the mask of the smallest integer type holding `pieces`
    # bits per output (csrc/maxout.h, maxout_ops.h).
    torch.library.register_fake("fused_act::maxout")(
        lambda x, pieces, dim: _maxout_out("maxout", x, pieces, dim, False)[0])
    torch.library.register_fake("fused_act::maxout_forward")(
        lambda x, pieces, dim: _maxout_out("maxout", x, pieces, dim, True))
    torch.library.register_fake("fused_act::maxout_backward")(
        lambda grad, mask, pieces, dim: _maxout_pair("maxout_backward", grad, pieces, dim, True))
    torch.library.register_fake("fused_act::maxout_gather")(
        lambda t, mask, pieces, dim: _maxout_pair("maxout_gather", t, pieces, dim, False))


def _weighted_fake(name):
    def fake(x, weight):
        # The same device rule as the kernels: a weight elsewhere is an error, never a
        # result on one of the two devices.
        if weight.device != x.device:
            raise RuntimeError(f"fused_act::{name}: weight is on {weight.device} but input is "
                               f"on {x.device}")
        return torch.empty_like(x)
    return fake


def _halved(op, x, dim):
    """The output shape of gated operator `op` (csrc/gated_ops.h): x's, halved along dim,
    with the operator's errors."""
    if x.dim() == 0:
        raise RuntimeError(f"fused_act::{op}: a 0-dim input cannot be split in two halves "
                           f"({op} does not support scalars because halving size must be even)")
    if not -x.dim() <= dim < x.dim():
        raise IndexError(f"fused_act::{op}: dim {dim} is out of range for a tensor of "
                         f"{x.dim()} dimension(s) (expected in [{-x.dim()}, {x.dim() - 1}])")
    d = dim % x.dim()
    if x.shape[d] % 2 != 0:
        raise RuntimeError(f"fused_act::{op}: Halving dimension must be even, but dimension "
                           f"{d} is size {x.shape[d]}")
    return x.shape[:d] + (x.shape[d] // 2,) + x.shape[d + 1:]


def _gated_backward_fake(op, grad, x, dim):
    if tuple(grad.shape) != tuple(_halved(op, x, dim)):
        raise RuntimeError(f"fused_act::{op}_backward: grad has shape {list(grad.shape)} but "
                           f"the output of an input of shape {list(x.shape)} has shape "
                           f"{list(_halved(op, x, dim))}")
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _softmax_fake(op, x, dim):
    n = max(x.dim(), 1)
    if not -n <= dim < n:  # the same error as the C++ operator
        raise IndexError(f"fused_act::{op}: dim {dim} is out of range for a tensor of "
                         f"{x.dim()} dimension(s) (expected in [{-n}, {n - 1}])")
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def maxout_mask_dtype(pieces: int) -> torch.dtype:
    """The dtype of maxout's mask of maxima: one bit per piece, one word per output."""
    return (torch.uint8 if pieces <= 8 else torch.int16 if pieces <= 16
            else torch.int32 if pieces <= 32 else torch.int64)


def maxout_mask_words(pieces: int) -> int:
    """Mask words per output: one up to 64 pieces, ceil(pieces / 64) beyond."""
    return 1 if pieces <= 64 else (pieces + 63) // 64


def _maxout_dim(op, ndim, dim):
    if ndim < 1:
        raise RuntimeError(f"fused_act::{op}: expected an input with at least 1 dimension, "
                           "got a 0-d tensor")
    if not -ndim <= dim < ndim:
        raise IndexError(f"fused_act::{op}: dim {dim} is out of range for a tensor of {ndim} "
                         f"dimension(s) (expected in [{-ndim}, {ndim - 1}])")
    return dim % ndim


def _maxout_pieces(op, pieces):
    if pieces < 1:
        raise ValueError(f"fused_act::{op}: pieces must be at least 1, got {pieces}")


def _maxout_out(op, x, pieces, dim, with_mask):
    _maxout_pieces(op, pieces)
    d = _maxout_dim(op, x.dim(), dim)
    if x.shape[d] % pieces != 0:
        raise ValueError(f"fused_act::{op}: the size of dim {d} ({x.shape[d]}) is not a "
                         f"multiple of pieces ({pieces})")
    shape = list(x.shape)
    shape[d] = x.shape[d] // pieces
    y = x.new_empty(shape)
    if not with_mask:
        return y, None
    shape[d] *= maxout_mask_words(pieces)
    return y, x.new_empty(shape, dtype=maxout_mask_dtype(pieces))


def _maxout_pair(op, t, pieces, dim, t_is_output):
    _maxout_pieces(op, pieces)
    d = _maxout_dim(op, t.dim(), dim)
    shape = list(t.shape)
    shape[d] = t.shape[d] * pieces if t_is_output else t.shape[d] // pieces
    return t.new_empty(shape)


_register_fakes()
