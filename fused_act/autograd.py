"""torch.autograd.Function classes for every activation.

Forward and backward each run one fused kernel (``torch.ops.fused_act.*``).  What the
backward reads is the least that suffices (see csrc/activations.h):

* the output y for relu, relu6, leaky_relu (slope >= 0), elu (alpha >= 0), sigmoid, tanh,
  softmax and log_softmax;
* the input x for silu/swish, prelu, and leaky_relu/elu with a negative parameter.

An in-place forward saves y when that is what the backward reads; otherwise it keeps a
copy of x taken before the overwrite (only when a gradient is needed).  Backward never
writes into the incoming gradient.

The operators carry their own autograd in C++ (csrc/autograd.cpp), and fused_act.functional
calls them directly for out-of-place calls.  The Functions here are the same computation
as Python classes (and the path of in-place calls): their backward calls the backward
operator, which is itself differentiable in C++, so double backward needs nothing here.
"""
from typing import Callable, Dict

import torch

from ._ops import ops

# Whether each elementwise operator's backward can read the output, given its scalar
# parameter p: the same rule as Rule<A>::saves_output in csrc/autograd.cpp (the in-place
# Functions below need it to know what to keep; a test checks that the two agree).
SAVES_OUTPUT: Dict[str, Callable[[float], bool]] = {
    "relu": lambda p: True,
    "relu6": lambda p: True,
    "leaky_relu": lambda slope: slope >= 0,
    "elu": lambda alpha: alpha >= 0,
    "sigmoid": lambda p: True,
    "tanh": lambda p: True,
    "swish": lambda p: False,
}


def _camel(name):
    return "".join(part.capitalize() for part in name.split("_"))


def _make_elementwise(op: str):
    forward_op = getattr(ops, op).default
    inplace_op = getattr(ops, op + "_").default
    backward_op = getattr(ops, op + "_backward").default  # differentiable (C++ autograd)
    saves_output = SAVES_OUTPUT[op]

    class Forward(torch.autograd.Function):
        """apply(x, p, inplace, input_copy=None).  For an in-place call whose backward
        reads the input, pass ``input_copy = x.clone()`` taken under autograd (as
        fused_act.functional does): the backward reads it, and double backward reaches x
        through it.  Without it, a copy is taken here (first-order gradients only)."""

        @staticmethod
        def forward(ctx, x, p, inplace, input_copy=None):
            from_output = saves_output(p)
            need_grad = ctx.needs_input_grad[0]
            ctx.p, ctx.from_output = p, from_output
            if not inplace:
                y = forward_op(x, p)
                if need_grad:
                    ctx.save_for_backward(y if from_output else x)
                return y
            # In place: what the backward reads must survive the overwrite.
            if need_grad and not from_output and input_copy is None:
                input_copy = x.clone()
            inplace_op(x, p)
            ctx.mark_dirty(x)
            if need_grad:
                ctx.save_for_backward(x if from_output else input_copy)
            return x

        @staticmethod
        def backward(ctx, grad):
            (saved,) = ctx.saved_tensors
            return backward_op(grad, saved, ctx.p, ctx.from_output), None, None, None

    Forward.__name__ = Forward.__qualname__ = _camel(op) + "Function"
    return Forward


ReluFunction = _make_elementwise("relu")
Relu6Function = _make_elementwise("relu6")
LeakyReluFunction = _make_elementwise("leaky_relu")
EluFunction = _make_elementwise("elu")
SigmoidFunction = _make_elementwise("sigmoid")
TanhFunction = _make_elementwise("tanh")
SwishFunction = _make_elementwise("swish")
FUNCTIONS = {
    "relu": ReluFunction, "relu6": Relu6Function, "leaky_relu": LeakyReluFunction,
    "elu": EluFunction, "sigmoid": SigmoidFunction, "tanh": TanhFunction, "swish": SwishFunction,
}

_OUT_OF_PLACE = {name: getattr(ops, name).default for name in SAVES_OUTPUT}
_IN_PLACE = {name: getattr(ops, name + "_").default for name in SAVES_OUTPUT}


def apply_elementwise(op, x, p, inplace):
    """Runs elementwise operator `op`.  Out of place: the operator itself (autograd in
    C++).  In place under autograd: the Function, giving a call whose backward reads the
    input the copy it needs (made here, under autograd, so that double backward reaches
    x through it)."""
    if not inplace:
        return _OUT_OF_PLACE[op](x, p)
    if not (torch.is_grad_enabled() and x.requires_grad):
        _IN_PLACE[op](x, p)  # no graph to record
        return x
    function = FUNCTIONS[op]
    if not SAVES_OUTPUT[op](p):
        return function.apply(x, p, True, x.clone())
    return function.apply(x, p, True)


def _make_weighted(op_name):
    forward_op = getattr(ops, op_name).default
    backward_op = getattr(ops, op_name + "_backward").default

    class WeightedForward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight):
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                ctx.save_for_backward(x, weight)
            return forward_op(x, weight)

        @staticmethod
        def backward(ctx, grad):
            x, weight = ctx.saved_tensors
            needs = ctx.needs_input_grad[:2]
            if torch.is_grad_enabled():
                # A graph of the gradient is wanted: the operator's C++ autograd gives
                # differentiable gradients.
                with torch.enable_grad():
                    xi = x if x.requires_grad else x.detach().requires_grad_()
                    wi = weight if weight.requires_grad else weight.detach().requires_grad_()
                    dx, dw = torch.autograd.grad(forward_op(xi, wi), (xi, wi), grad,
                                                 create_graph=True, allow_unused=True)
            else:
                dx, dw = backward_op(grad, x, weight, needs[1])
            return (dx if needs[0] else None), (dw if needs[1] else None)

    WeightedForward.__name__ = WeightedForward.__qualname__ = _camel(op_name) + "Function"
    return WeightedForward


PreluFunction = _make_weighted("prelu")
SwishWeightedFunction = _make_weighted("swish_weighted")


def weighted_op(name):
    """The weighted operator `name` (prelu, swish_weighted), whose autograd kernel is in
    C++ (csrc/autograd.cpp): what fused_act.functional calls."""
    return getattr(ops, name).default


# ---- softmax / log_softmax ----------------------------------------------------------
# The backward saves only the output y:
#   softmax:     dx = y * (g - sum(g * y))
#   log_softmax: dx = g - exp(y) * sum(g)
# (its own gradient, for double backward, is in csrc/autograd.cpp).

# The operator, with its autograd kernel in C++: what fused_act.functional.softmax /
# log_softmax call.
softmax_op = ops.softmax.default
_softmax_backward_op = ops.softmax_backward.default


def _make_softmax(log):
    class Forward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, dim):
            y = softmax_op(x, dim, log)
            if ctx.needs_input_grad[0]:
                ctx.save_for_backward(y)
            ctx.dim = dim
            return y

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return _softmax_backward_op(grad, y, ctx.dim, log), None

    name = "LogSoftmaxFunction" if log else "SoftmaxFunction"
    Forward.__name__ = Forward.__qualname__ = name
    return Forward


SoftmaxFunction = _make_softmax(False)
LogSoftmaxFunction = _make_softmax(True)

__all__ = [
    "ReluFunction", "Relu6Function", "LeakyReluFunction", "EluFunction", "SigmoidFunction",
    "TanhFunction", "SwishFunction", "PreluFunction", "SwishWeightedFunction",
    "SoftmaxFunction", "LogSoftmaxFunction",
]
