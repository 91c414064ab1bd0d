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

    # Softmax outputs are contiguous with the input's shape, as torch's (softmax_ops.h).
    torch.library.register_fake("fused_act::softmax")(
        lambda x, dim, log: _softmax_fake("log_softmax" if log else "softmax", x, dim))
    torch.library.register_fake("fused_act::softmax_backward")(
        lambda grad, y, dim, log: _softmax_fake(
            "log_softmax_backward" if log else "softmax_backward", grad, dim))


def _weighted_fake(name):
    def fake(x, weight):
        # The same device rule as the kernels: a weight elsewhere is an error, never a
        # result on one of the two devices.
        if weight.device != x.device:
            raise RuntimeError(f"fused_act::{name}: weight is on {weight.device} but input is "
                               f"on {x.device}")
        return torch.empty_like(x)
    return fake


def _softmax_fake(op, x, dim):
    n = max(x.dim(), 1)
    if not -n <= dim < n:  # the same error as the C++ operator
        raise IndexError(f"fused_act::{op}: dim {dim} is out of range for a tensor of "
                         f"{x.dim()} dimension(s) (expected in [{-n}, {n - 1}])")
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


_register_fakes()
