"""torch.autograd.Function classes for every operator.

Every operator of fused_act carries its own autograd in C++ (csrc/autograd.cpp): reverse
mode, double backward, forward mode (torch.autograd.forward_ad), in-place calls through
the dispatcher.  That is what fused_act.functional calls for ordinary tensors.

torch.func transforms (grad, vjp, jvp, jacrev, jacfwd, hessian, vmap, functional_call)
cannot run C++ autograd Functions, so fused_act.functional sends the tensors they wrap to
the classes here instead.  They are built from the same operators: the forward and
backward kernels, the derivative composites of csrc/autograd.cpp (NAME_double_backward,
softmax_jvp, ...), and the saving rule of csrc/autograd.cpp (fused_act::saves_output), which
is asked, not restated.  Each class has ``setup_context`` (reverse mode under every
transform), ``jvp`` (forward mode) and ``vmap`` (a batching rule: the fused kernel runs
once on the batched tensor).

Public classes and their ``apply`` signatures:
  one per elementwise operator (ReluFunction, ..., SwishFunction, GeluFunction,
  GeluTanhFunction, MishFunction, ...):   apply(x, p, q, inplace=False, input_copy=None)
(p, q: the operator's two scalar parameters, as its schema has them; q is ignored by the
operators with one, and 0.0 by convention there)
  PreluFunction, SwishWeightedFunction:   apply(x, weight)
  SoftmaxFunction, LogSoftmaxFunction:   apply(x, dim)
  MaxoutFunction:                         apply(x, pieces, dim) -> (y, mask of maxima)
  one per gated operator (GluFunction, SwigluFunction, GegluFunction, GegluTanhFunction,
  RegluFunction):                          apply(x, dim)
For an in-place call whose backward reads the input, ``input_copy`` is the input's value
before the call, taken under autograd (``x.clone()``) so that double backward reaches x
through it; it is taken automatically when omitted.
"""
from typing import Dict, Tuple

import torch
import torch.autograd.forward_ad as _fwAD

from ._ops import ELEMENTWISE_OPS, GATED_OPS, WEIGHTED_OPS, ops

_RULES: Dict[Tuple[str, float, float, bool], bool] = {}


def saves_output(op: str, p: float, q: float, inplace: bool = False) -> bool:
    """Whether elementwise operator `op`'s backward reads its output (else its input),
    for parameters (p, q): the C++ rule (csrc/autograd.cpp), cached."""
    key = (op, p, q, inplace)
    rule = _RULES.get(key)
    if rule is None:
        rule = _RULES[key] = bool(ops.saves_output(op, float(p), float(q), inplace))
    return rule


def _camel(name):
    return "".join(part.capitalize() for part in name.split("_"))


def _front(t, bdim, size):
    """t with its batch dim first; an unbatched t is expanded to the batch."""
    return t.movedim(bdim, 0) if bdim is not None else t.expand(size, *t.shape)


def _add(a, b):
    return b if a is None else (a if b is None else a + b)


def _make_elementwise(op: str):
    forward_op = getattr(ops, op).default
    inplace_op = getattr(ops, op + "_").default
    backward_op = getattr(ops, op + "_backward").default
    double_backward_op = getattr(ops, op + "_double_backward").default

    class Backward(torch.autograd.Function):
        """dx = NAME_backward(grad, saved): linear in grad; its derivative in saved is
        the NAME_double_backward composite."""

        @staticmethod
        def forward(grad, saved, p, q, from_output):
            return backward_op(grad, saved, p, q, from_output)

        @staticmethod
        def setup_context(ctx, inputs, output):
            grad, saved, p, q, from_output = inputs
            ctx.save_for_backward(grad, saved)
            ctx.save_for_forward(grad, saved)
            ctx.p, ctx.q, ctx.from_output = p, q, from_output

        @staticmethod
        def backward(ctx, gg):
            grad, saved = ctx.saved_tensors
            d_grad = d_saved = None
            if ctx.needs_input_grad[0]:
                d_grad = Backward.apply(gg, saved, ctx.p, ctx.q, ctx.from_output)
            if ctx.needs_input_grad[1]:
                d_saved = double_backward_op(gg, grad, saved, ctx.p, ctx.q, ctx.from_output)
            return d_grad, d_saved, None, None, None

        @staticmethod
        def jvp(ctx, grad_t, saved_t, *_):
            grad, saved = ctx.saved_tensors
            out = None
            if grad_t is not None:
                out = Backward.apply(grad_t, saved, ctx.p, ctx.q, ctx.from_output)
            if saved_t is not None:
                out = _add(out, double_backward_op(saved_t, grad, saved, ctx.p, ctx.q,
                                                   ctx.from_output))
            return out

        @staticmethod
        def vmap(info, in_dims, grad, saved, p, q, from_output):
            gd, sd = in_dims[0], in_dims[1]
            if gd is not None and gd == sd and grad.shape == saved.shape:
                return Backward.apply(grad, saved, p, q, from_output), gd
            grad, saved = _front(grad, gd, info.batch_size), _front(saved, sd, info.batch_size)
            return Backward.apply(grad, saved, p, q, from_output), 0

    Backward.__name__ = Backward.__qualname__ = _camel(op) + "BackwardFunction"

    class Forward(torch.autograd.Function):
        @classmethod
        def apply(cls, x, p, q, inplace=False, input_copy=None):
            if (inplace and input_copy is None and torch.is_grad_enabled() and x.requires_grad
                    and not saves_output(op, p, q, True)):
                input_copy = x.clone()
            return super().apply(x, p, q, inplace, input_copy)

        @staticmethod
        def forward(x, p, q, inplace=False, input_copy=None):
            if inplace:
                inplace_op(x, p, q)
                return x
            return forward_op(x, p, q)

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, p, q, inplace, input_copy = inputs
            from_output = saves_output(op, p, q, inplace)
            if inplace:
                ctx.mark_dirty(x)
                saved = output if from_output else input_copy
            else:
                saved = output if from_output else x
            ctx.save_for_backward(saved)
            ctx.save_for_forward(saved)
            ctx.p, ctx.q, ctx.from_output, ctx.inplace = p, q, from_output, inplace

        @staticmethod
        def backward(ctx, grad):
            (saved,) = ctx.saved_tensors
            return (Backward.apply(grad, saved, ctx.p, ctx.q, ctx.from_output),
                    None, None, None, None)

        @staticmethod
        def jvp(ctx, x_t, *_):
            (saved,) = ctx.saved_tensors
            y_t = Backward.apply(x_t, saved, ctx.p, ctx.q, ctx.from_output)
            if ctx.inplace:  # an in-place call updates the tangent in place too
                return x_t.copy_(y_t)
            return y_t

        @staticmethod
        def vmap(info, in_dims, x, p, q, inplace=False, input_copy=None):
            # Elementwise: the batched tensor is the same computation, once.
            if inplace:
                inplace_op(x, p, q)
                return x, in_dims[0]
            return Forward.apply(x, p, q), in_dims[0]

    Forward.__name__ = Forward.__qualname__ = _camel(op) + "Function"
    return Forward


FUNCTIONS = {op: _make_elementwise(op) for op in ELEMENTWISE_OPS}
# ReluFunction, ..., SwishFunction, GeluFunction, GeluTanhFunction, ...: one per operator.
globals().update({f.__name__: f for f in FUNCTIONS.values()})


# ---- prelu / swish_weighted ----------------------------------------------------------
# The fused kernels give the first-order gradients; derivatives of those, and batches of
# weights, use the operator's composite formula (NAME_reference, NAME_jvp in C++).

def _make_weighted(op: str):
    forward_op = getattr(ops, op).default
    backward_op = getattr(ops, op + "_backward").default
    reference_op = getattr(ops, op + "_reference").default
    jvp_op = getattr(ops, op + "_jvp").default

    def first_grads(grad, x, weight):
        """(dx, dweight) from the composite formula: differentiable under torch.func."""
        _, pullback = torch.func.vjp(reference_op, x, weight)
        return pullback(grad)

    class Backward(torch.autograd.Function):
        @staticmethod
        def forward(grad, x, weight):
            return backward_op(grad, x, weight, True)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)
            ctx.save_for_forward(*inputs)

        @staticmethod
        def backward(ctx, g_dx, g_dw):
            grad, x, weight = ctx.saved_tensors
            cot = (torch.zeros_like(x) if g_dx is None else g_dx,
                   torch.zeros_like(weight) if g_dw is None else g_dw)
            _, pullback = torch.func.vjp(first_grads, grad, x, weight)
            return pullback(cot)

        @staticmethod
        def jvp(ctx, grad_t, x_t, w_t):
            primals = ctx.saved_tensors
            tangents = tuple(torch.zeros_like(p) if t is None else t
                             for p, t in zip(primals, (grad_t, x_t, w_t)))
            return torch.func.jvp(first_grads, primals, tangents)[1]

        @staticmethod
        def vmap(info, in_dims, grad, x, weight):
            return torch.func.vmap(first_grads, in_dims)(grad, x, weight), (0, 0)

    Backward.__name__ = Backward.__qualname__ = _camel(op) + "BackwardFunction"

    class Forward(torch.autograd.Function):
        @staticmethod
        def forward(x, weight):
            return forward_op(x, weight)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)
            ctx.save_for_forward(*inputs)

        @staticmethod
        def backward(ctx, grad):
            x, weight = ctx.saved_tensors
            dx, dw = Backward.apply(grad, x, weight)
            return (dx if ctx.needs_input_grad[0] else None,
                    dw if ctx.needs_input_grad[1] else None)

        @staticmethod
        def jvp(ctx, x_t, w_t):
            x, weight = ctx.saved_tensors
            return jvp_op(x, weight, x_t, w_t)

        @staticmethod
        def vmap(info, in_dims, x, weight):
            xd, wd = in_dims
            if wd is None:  # one weight set for the batch: the fused kernel, once
                x = x.movedim(xd, 0)
                if x.dim() - 1 >= 2 and weight.numel() > 1:
                    # channels stay on dim 1: the batch joins the leading dim
                    merged = x.reshape(-1, *x.shape[2:])
                    return Forward.apply(merged, weight).view(x.shape), 0
                return Forward.apply(x, weight), 0
            return torch.func.vmap(reference_op, in_dims)(x, weight), 0

    Forward.__name__ = Forward.__qualname__ = _camel(op) + "Function"
    return Forward


WEIGHTED_FUNCTIONS = {op: _make_weighted(op) for op in WEIGHTED_OPS}
PreluFunction = WEIGHTED_FUNCTIONS["prelu"]
SwishWeightedFunction = WEIGHTED_FUNCTIONS["swish_weighted"]


# ---- softmax / log_softmax -------------------------------------------------------------
# The backward saves only the output y:
#   softmax:     dx = y * (g - sum(g * y))      (its Jacobian is symmetric: also the tangent)
#   log_softmax: dx = g - exp(y) * sum(g)       (tangent: softmax_jvp)

_softmax_op = ops.softmax.default
_softmax_backward_op = ops.softmax_backward.default


def _batched_dim(dim, logical_ndim):
    """`dim` of a logical tensor as a dim of the physical one with the batch first."""
    return dim + 1 if dim >= 0 else dim


class SoftmaxBackwardFunction(torch.autograd.Function):
    @staticmethod
    def forward(grad, y, dim, log):
        return _softmax_backward_op(grad, y, dim, log)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad, y, dim, log = inputs
        ctx.save_for_backward(grad, y)
        ctx.save_for_forward(grad, y)
        ctx.dim, ctx.log = dim, log

    @staticmethod
    def backward(ctx, gg):
        grad, y = ctx.saved_tensors
        d_grad = d_y = None
        if ctx.needs_input_grad[0]:
            d_grad = (ops.softmax_jvp(gg, y, ctx.dim, True) if ctx.log
                      else SoftmaxBackwardFunction.apply(gg, y, ctx.dim, False))
        if ctx.needs_input_grad[1]:
            d_y = ops.softmax_backward_backward(gg, grad, y, ctx.dim, ctx.log)
        return d_grad, d_y, None, None

    @staticmethod
    def jvp(ctx, grad_t, y_t, *_):
        grad, y = ctx.saved_tensors
        out = None
        if grad_t is not None:
            out = SoftmaxBackwardFunction.apply(grad_t, y, ctx.dim, ctx.log)
        if y_t is not None:
            out = _add(out, ops.softmax_backward_jvp(y_t, grad, y, ctx.dim, ctx.log))
        return out

    @staticmethod
    def vmap(info, in_dims, grad, y, dim, log):
        grad, y = _front(grad, in_dims[0], info.batch_size), _front(y, in_dims[1], info.batch_size)
        if grad.dim() == 1:  # 0-d rows: one element each
            return SoftmaxBackwardFunction.apply(grad[:, None], y[:, None], -1, log)[:, 0], 0
        return SoftmaxBackwardFunction.apply(grad, y, _batched_dim(dim, grad.dim() - 1), log), 0


def _make_softmax(log):
    class Forward(torch.autograd.Function):
        @staticmethod
        def forward(x, dim):
            return _softmax_op(x, dim, log)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(output)
            ctx.save_for_forward(output)
            ctx.dim = inputs[1]

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return SoftmaxBackwardFunction.apply(grad, y, ctx.dim, log), None

        @staticmethod
        def jvp(ctx, x_t, _):
            (y,) = ctx.saved_tensors
            if log:
                return ops.softmax_jvp(x_t, y, ctx.dim, True)
            return SoftmaxBackwardFunction.apply(x_t, y, ctx.dim, False)

        @staticmethod
        def vmap(info, in_dims, x, dim):
            x = x.movedim(in_dims[0], 0)
            if x.dim() == 1:
                return Forward.apply(x[:, None], -1)[:, 0], 0
            return Forward.apply(x, _batched_dim(dim, x.dim() - 1)), 0

    name = "LogSoftmaxFunction" if log else "SoftmaxFunction"
    Forward.__name__ = Forward.__qualname__ = name
    return Forward


SoftmaxFunction = _make_softmax(False)
LogSoftmaxFunction = _make_softmax(True)


# ---- maxout ------------------------------------------------------------------------------
# The backward keeps the mask of maxima (csrc/maxout.h), an integer output of the forward
# kernel marked non-differentiable:
#   dx  = maxout_backward(g, mask) = (g / count) * bit   (scatter)
#   its adjoint, maxout_gather(t, mask) = sum of t over the set bits / count, is the tangent
#   of y and the derivative of the scatter with respect to g; the scatter is the gather's.

def _maxout_pair(name, op, other):
    class Pair(torch.autograd.Function):
        @staticmethod
        def forward(t, mask, pieces, dim):
            return op(t, mask, pieces, dim)

        @staticmethod
        def setup_context(ctx, inputs, output):
            _, mask, pieces, dim = inputs
            ctx.save_for_backward(mask)
            ctx.save_for_forward(mask)
            ctx.pieces, ctx.dim = pieces, dim

        @staticmethod
        def backward(ctx, g):
            (mask,) = ctx.saved_tensors
            return other().apply(g, mask, ctx.pieces, ctx.dim), None, None, None

        @staticmethod
        def jvp(ctx, t_t, *_):
            (mask,) = ctx.saved_tensors
            return Pair.apply(t_t, mask, ctx.pieces, ctx.dim)

        @staticmethod
        def vmap(info, in_dims, t, mask, pieces, dim):
            t, mask = _front(t, in_dims[0], info.batch_size), _front(mask, in_dims[1],
                                                                       info.batch_size)
            return Pair.apply(t, mask, pieces, _batched_dim(dim, t.dim() - 1)), 0

    Pair.__name__ = Pair.__qualname__ = name
    return Pair


MaxoutBackwardFunction = _maxout_pair("MaxoutBackwardFunction", ops.maxout_backward.default,
                                      lambda: MaxoutGatherFunction)
MaxoutGatherFunction = _maxout_pair("MaxoutGatherFunction", ops.maxout_gather.default,
                                    lambda: MaxoutBackwardFunction)


class MaxoutFunction(torch.autograd.Function):
    """maxout(x, pieces, dim): ``apply(x, pieces, dim)`` returns ``(y, mask)``, the mask
    of maxima (an integer tensor, not differentiable) being what the backward keeps."""

    @staticmethod
    def forward(x, pieces, dim):
        return ops.maxout_forward.default(x, pieces, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, pieces, dim = inputs
        mask = output[1]
        ctx.mark_non_differentiable(mask)
        ctx.save_for_backward(mask)
        ctx.save_for_forward(mask)
        ctx.pieces, ctx.dim = pieces, dim

    @staticmethod
    def backward(ctx, grad, _grad_mask=None):
        (mask,) = ctx.saved_tensors
        return MaxoutBackwardFunction.apply(grad, mask, ctx.pieces, ctx.dim), None, None

    @staticmethod
    def jvp(ctx, x_t, *_):
        (mask,) = ctx.saved_tensors
        return MaxoutGatherFunction.apply(x_t, mask, ctx.pieces, ctx.dim), None

    @staticmethod
    def vmap(info, in_dims, x, pieces, dim):
        x = x.movedim(in_dims[0], 0)
        return MaxoutFunction.apply(x, pieces, _batched_dim(dim, x.dim() - 1)), (0, 0)
# ---- gated operators (glu, swiglu, geglu, geglu_tanh, reglu) ---------------------------
# The backward saves the input x only.  NAME_backward(grad, x, dim) is linear in grad, and
# its derivative in grad is the forward's tangent map (NAME_jvp); its derivative in x is
# the NAME_backward_backward composite, which is also its tangent for a tangent of x.

def _make_gated(op: str):
    forward_op = getattr(ops, op).default
    backward_op = getattr(ops, op + "_backward").default
    jvp_op = getattr(ops, op + "_jvp").default
    backward_backward_op = getattr(ops, op + "_backward_backward").default

    class Backward(torch.autograd.Function):
        @staticmethod
        def forward(grad, x, dim):
            return backward_op(grad, x, dim)

        @staticmethod
        def setup_context(ctx, inputs, output):
            grad, x, dim = inputs
            ctx.save_for_backward(grad, x)
            ctx.save_for_forward(grad, x)
            ctx.dim = dim

        @staticmethod
        def backward(ctx, gg):
            grad, x = ctx.saved_tensors
            d_grad = d_x = None
            if ctx.needs_input_grad[0]:
                d_grad = jvp_op(x, gg, ctx.dim)
            if ctx.needs_input_grad[1]:
                d_x = backward_backward_op(gg, grad, x, ctx.dim)
            return d_grad, d_x, None

        @staticmethod
        def jvp(ctx, grad_t, x_t, _):
            grad, x = ctx.saved_tensors
            out = None
            if grad_t is not None:
                out = Backward.apply(grad_t, x, ctx.dim)
            if x_t is not None:
                out = _add(out, backward_backward_op(x_t, grad, x, ctx.dim))
            return out

        @staticmethod
        def vmap(info, in_dims, grad, x, dim):
            grad, x = _front(grad, in_dims[0], info.batch_size), _front(x, in_dims[1], info.batch_size)
            return Backward.apply(grad, x, _batched_dim(dim, x.dim() - 1)), 0

    Backward.__name__ = Backward.__qualname__ = _camel(op) + "BackwardFunction"

    class Forward(torch.autograd.Function):
        @staticmethod
        def forward(x, dim):
            return forward_op(x, dim)

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, dim = inputs
            ctx.save_for_backward(x)
            ctx.save_for_forward(x)
            ctx.dim = dim

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return Backward.apply(grad, x, ctx.dim), None

        @staticmethod
        def jvp(ctx, x_t, _):
            (x,) = ctx.saved_tensors
            return jvp_op(x, x_t, ctx.dim)

        @staticmethod
        def vmap(info, in_dims, x, dim):
            x = x.movedim(in_dims[0], 0)
            return Forward.apply(x, _batched_dim(dim, x.dim() - 1)), 0

    Forward.__name__ = Forward.__qualname__ = _camel(op) + "Function"
    return Forward


GATED_FUNCTIONS = {op: _make_gated(op) for op in GATED_OPS}
# GluFunction, SwigluFunction, GegluFunction, GegluTanhFunction, RegluFunction.
globals().update({f.__name__: f for f in GATED_FUNCTIONS.values()})


def is_transformed(t) -> bool:
    """Whether t is wrapped by a torch.func transform (grad/jvp level or vmap batch).
    (Never while torch.compile traces: the operators are traced as they are.)"""
    if torch.compiler.is_compiling():
        return False
    return isinstance(t, torch.Tensor) and (torch._C._functorch.is_functorch_wrapped_tensor(t)
                                            or torch._C._functorch.is_batchedtensor(t))


def needs_function(t) -> bool:
    """Whether an operator that saves its output must run as a Function class here:
    under a torch.func transform, or for a dual tensor (forward AD) that also records a
    graph: the output a C++ node saves has no tangent yet when it is saved, and
    forward-over-reverse needs it."""
    if torch.compiler.is_compiling():
        return False
    if is_transformed(t):
        return True
    return (isinstance(t, torch.Tensor) and t.requires_grad and torch.is_grad_enabled()
            and _fwAD._current_level >= 0 and _fwAD.unpack_dual(t).tangent is not None)


__all__ = [f.__name__ for f in FUNCTIONS.values()] + [
    "PreluFunction", "SwishWeightedFunction",
    "SoftmaxFunction", "LogSoftmaxFunction", "SoftmaxBackwardFunction", "saves_output",
    "MaxoutFunction", "MaxoutBackwardFunction", "MaxoutGatherFunction",
] + [f.__name__ for f in GATED_FUNCTIONS.values()]
