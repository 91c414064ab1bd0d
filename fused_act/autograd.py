"""torch.autograd.Function classes for every activation, generated from one spec each.

Forward and backward each run one fused kernel (``torch.ops.fused_act.*``).  What the
backward reads is the least that suffices (see csrc/activations.h):

* the output y for relu, relu6, leaky_relu (slope >= 0), elu (alpha >= 0), sigmoid, tanh;
* the input x for silu/swish, prelu, and leaky_relu/elu with a negative parameter.

An in-place forward saves y when that is what the backward reads; otherwise it keeps a
copy of x taken before the overwrite (only when a gradient is needed).  Backward never
writes into the incoming gradient.

Double backward: the fused backward is itself a Function whose gradient is
``d(dx)/d(grad) = backward(gg)`` (the backward is linear in the gradient) and
``d(dx)/d(saved) = gg * grad * D'(saved)``, written with torch ops so any order works.
The weighted activations (prelu, swish with a tensor beta) compute their first-order
gradients through a differentiable composition when a graph of the backward is asked for.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ._ops import ops


@dataclass(frozen=True)
class KernelSpec:
    """How one elementwise operator saves for backward and differentiates its backward."""

    op: str
    # Whether the backward can read the output, given the scalar parameter p.
    saves_output: Callable[[float], bool]
    # D'(saved) with dx = grad * D(saved); None when D is piecewise constant.
    second_derivative: Optional[Callable] = None


def _elu_d2(s, alpha, from_output):
    if from_output:  # D(y) = y + alpha on y <= 0, else 1
        return (s <= 0).to(s.dtype)
    return torch.where(s <= 0, alpha * torch.exp(s), torch.zeros_like(s))


def _swish_d2(x, beta, from_output):
    s = torch.sigmoid(beta * x)
    return beta * s * (1 - s) * (2 + beta * x * (1 - 2 * s))


KERNELS = {
    "relu": KernelSpec("relu", lambda p: True),
    "relu6": KernelSpec("relu6", lambda p: True),
    "leaky_relu": KernelSpec("leaky_relu", lambda slope: slope >= 0),
    "elu": KernelSpec("elu", lambda alpha: alpha >= 0, _elu_d2),
    "sigmoid": KernelSpec("sigmoid", lambda p: True, lambda y, p, o: 1 - 2 * y),
    "tanh": KernelSpec("tanh", lambda p: True, lambda y, p, o: -2 * y),
    "swish": KernelSpec("swish", lambda p: False, _swish_d2),
}


def _camel(name):
    return "".join(part.capitalize() for part in name.split("_"))


def _make_elementwise(spec: KernelSpec):
    forward_op = getattr(ops, spec.op)
    inplace_op = getattr(ops, spec.op + "_")
    backward_op = getattr(ops, spec.op + "_backward")

    class Backward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, grad, saved, p, from_output):
            ctx.save_for_backward(grad, saved)
            ctx.p, ctx.from_output = p, from_output
            return backward_op(grad, saved, p, from_output)

        @staticmethod
        def backward(ctx, gg):
            grad, saved = ctx.saved_tensors
            d_grad = d_saved = None
            if ctx.needs_input_grad[0]:
                d_grad = Backward.apply(gg, saved, ctx.p, ctx.from_output)
            if ctx.needs_input_grad[1] and spec.second_derivative is not None:
                d_saved = gg * grad * spec.second_derivative(saved, ctx.p, ctx.from_output)
            return d_grad, d_saved, None, None

    class Forward(torch.autograd.Function):
        """apply(x, p, inplace, input_copy=None).  For an in-place call whose backward
        reads the input, pass ``input_copy = x.clone()`` taken under autograd (as
        fused_act.functional does): the backward reads it, and double backward reaches x
        through it.  Without it, a copy is taken here (first-order gradients only)."""

        @staticmethod
        def forward(ctx, x, p, inplace, input_copy=None):
            from_output = spec.saves_output(p)
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
            return Backward.apply(grad, saved, ctx.p, ctx.from_output), None, None, None


    Forward.__name__ = Forward.__qualname__ = _camel(spec.op) + "Function"
    Backward.__name__ = Backward.__qualname__ = _camel(spec.op) + "BackwardFunction"
    return Forward


# The out-of-place operators have their autograd kernels in C++ (csrc/autograd.cpp),
# with the same saving rules and double backward as the Functions above: calling them
# costs what calling a torch operator costs.
_OUT_OF_PLACE = {name: getattr(ops, name).default for name in KERNELS}
_IN_PLACE = {name: getattr(ops, name + "_").default for name in KERNELS}


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
    if not KERNELS[op].saves_output(p):
        return function.apply(x, p, True, x.clone())
    return function.apply(x, p, True)


def _prelu_reference(x, w):
    if w.numel() > 1:  # one slope per channel, along dim 1
        w = w.reshape((1, -1) + (1,) * (x.dim() - 2))
    return torch.where(x > 0, x, w * x)


def _swish_reference(x, beta):
    if beta.numel() > 1:
        beta = beta.reshape((1, -1) + (1,) * (x.dim() - 2))
    return x * torch.sigmoid(beta * x)


def _grads_through(reference, grad, x, w, needs):
    """First-order gradients of reference(x, w), kept differentiable (for double backward)."""
    with torch.enable_grad():
        xi = x if x.requires_grad else x.detach().requires_grad_()
        wi = w if w.requires_grad else w.detach().requires_grad_()
        y = reference(xi, wi)
        dx, dw = torch.autograd.grad(y, (xi, wi), grad, create_graph=True, allow_unused=True)
    return (dx if needs[0] else None), (dw if needs[1] else None)


def _make_weighted(op_name, reference):
    forward_op = getattr(ops, op_name)
    backward_op = getattr(ops, op_name + "_backward")

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
            if torch.is_grad_enabled():  # a graph of the gradient is wanted
                return _grads_through(reference, grad, x, weight, needs)
            dx, dw = backward_op(grad, x, weight, needs[1])
            return (dx if needs[0] else None), (dw if needs[1] else None)

    WeightedForward.__name__ = WeightedForward.__qualname__ = _camel(op_name) + "Function"
    return WeightedForward


ReluFunction = _make_elementwise(KERNELS["relu"])
Relu6Function = _make_elementwise(KERNELS["relu6"])
LeakyReluFunction = _make_elementwise(KERNELS["leaky_relu"])
EluFunction = _make_elementwise(KERNELS["elu"])
SigmoidFunction = _make_elementwise(KERNELS["sigmoid"])
TanhFunction = _make_elementwise(KERNELS["tanh"])
SwishFunction = _make_elementwise(KERNELS["swish"])
FUNCTIONS = {
    "relu": ReluFunction, "relu6": Relu6Function, "leaky_relu": LeakyReluFunction,
    "elu": EluFunction, "sigmoid": SigmoidFunction, "tanh": TanhFunction, "swish": SwishFunction,
}
PreluFunction = _make_weighted("prelu", _prelu_reference)


def weighted_op(name):
    """The weighted operator `name` (prelu, swish_weighted), whose autograd kernel is in
    C++ (csrc/autograd.cpp): what fused_act.functional calls."""
    return getattr(ops, name).default
SwishWeightedFunction = _make_weighted("swish_weighted", _swish_reference)

__all__ = [
    "ReluFunction", "Relu6Function", "LeakyReluFunction", "EluFunction", "SigmoidFunction",
    "TanhFunction", "SwishFunction", "PreluFunction", "SwishWeightedFunction",
]


# ---- softmax / log_softmax ----------------------------------------------------------
# Forward and backward each run one fused kernel; the backward saves only the output y:
#   softmax:     dx = y * (g - sum(g * y))
#   log_softmax: dx = g - exp(y) * sum(g)
# The backward is a Function too, with its gradient in torch ops (double backward):
#   softmax:     d(dx)/dg is the same symmetric map, applied to gg (the fused kernel);
#                d/dy = gg * (g - sum(g * y)) - g * sum(gg * y)
#   log_softmax: d/dg = gg - sum(gg * exp(y));  d/dy = -gg * exp(y) * sum(g)


class _SoftmaxBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, y, dim, log):
        ctx.save_for_backward(grad, y)
        ctx.dim, ctx.log = dim, log
        return ops.softmax_backward(grad, y, dim, log)

    @staticmethod
    def backward(ctx, gg):
        grad, y = ctx.saved_tensors
        dim, log = ctx.dim, ctx.log
        d_grad = d_y = None
        if log:
            p = torch.exp(y)
            if ctx.needs_input_grad[0]:
                d_grad = gg - (gg * p).sum(dim, keepdim=True)
            if ctx.needs_input_grad[1]:
                d_y = -gg * p * grad.sum(dim, keepdim=True)
        else:
            if ctx.needs_input_grad[0]:
                d_grad = _SoftmaxBackward.apply(gg, y, dim, False)
            if ctx.needs_input_grad[1]:
                d_y = (gg * (grad - (grad * y).sum(dim, keepdim=True))
                       - grad * (gg * y).sum(dim, keepdim=True))
        return d_grad, d_y, None, None


def _make_softmax(log):
    class Forward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, dim):
            y = ops.softmax(x, dim, log)
            if ctx.needs_input_grad[0]:
                ctx.save_for_backward(y)
            ctx.dim = dim
            return y

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return _SoftmaxBackward.apply(grad, y, ctx.dim, log), None

    name = "LogSoftmaxFunction" if log else "SoftmaxFunction"
    Forward.__name__ = Forward.__qualname__ = name
    return Forward


SoftmaxFunction = _make_softmax(False)
# The operator, with its autograd kernel in C++ (csrc/autograd.cpp): what
# fused_act.functional.softmax / log_softmax call.
softmax_op = ops.softmax.default
LogSoftmaxFunction = _make_softmax(True)

__all__ += ["SoftmaxFunction", "LogSoftmaxFunction"]
