"""ONNX export of models that call fused_act: each operator becomes standard ONNX operators.

    import fused_act
    model = fused_act.convert(model)
    onnx_program = torch.onnx.export(
        model, (x,), dynamo=True,
        custom_translation_table=fused_act.onnx_translation_table())

What each operator becomes (ONNX opset 18 operators, standard domain):

    relu                 Relu
    relu6                Clip(x, 0, 6)
    leaky_relu(slope)    LeakyRelu(alpha=slope)
    prelu(weight)        PRelu(x, weight reshaped to (C, 1, ..., 1)): channels on dim 1, as torch
    elu(alpha)           Elu(alpha=alpha)
    sigmoid, tanh        Sigmoid, Tanh
    swish(beta)          x * Sigmoid(beta * x)   (silu: x * Sigmoid(x))
    swish_weighted(beta) x * Sigmoid(beta * x), the tensor beta reshaped as PReLU's weight
    gelu                 x/2 * (1 + Erf(x/sqrt(2)))   (Gelu is an opset-20 operator)
    gelu_tanh            x/2 * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 x^3)))
    mish, hardswish      Mish, HardSwish
    hardsigmoid          HardSigmoid(alpha=1/6, beta=1/2)
    selu, celu(alpha)    Selu (torch's alpha and scale), Celu(alpha=alpha)
    relu_squared         Relu(x) * Relu(x)
    softplus(beta, threshold)
                         Where(x*beta > threshold, x, Softplus(x*beta) / beta)
    hardtanh(min, max)   Clip(x, min, max)
    softmax(dim, log)    Softmax(axis=dim) or LogSoftmax(axis=dim)
    maxout(pieces, dim)  Reshape(x, sizes with dim split into (-1, pieces)) then
                         ReduceMax(axis=dim + 1, keepdims=0)  (the sizes from Shape: dynamic
                         dims stay dynamic)
    glu(dim)             a * Sigmoid(b), where a, b = Split(x, axis=dim, num_outputs=2)
    swiglu, geglu, geglu_tanh, reglu(dim)
                         act(a) * b, act as silu, gelu, gelu_tanh and relu above

In-place calls (``inplace=True`` modules, ``relu_``, ...): a functionalized graph would carry
them as ``auto_functionalized`` nodes, which the ONNX exporter cannot translate.  Building the
table therefore also registers, once, a rule for torch's FunctionalTensorMode that rewrites
``NAME_(x, p)`` as ``x.copy_(NAME(x, p))`` -- only while an ONNX export runs
(``torch.onnx.is_in_onnx_export()``); everywhere else (torch.compile, torch.export) the
in-place operators are functionalized as before.

onnxscript is imported only when the table is built: fused_act itself does not need it.
The table needs torch 2.6 or later (``torch.onnx.export``'s ``custom_translation_table`` and
``torch.library.register_torch_dispatch``); with an older torch, building it raises a
RuntimeError that says so, and the legacy exporter below is the way to export.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) gets the same
translations from ``register_legacy_symbolics()`` (opset 15 and later), for out-of-place
calls only: a traced in-place call has no representation there, and the export fails.
"""
import inspect
from typing import Callable, Dict

import torch

from ._ops import ops

_OPSET = 18

_inplace_rule_registered = False


def _translations(op) -> Dict[str, Callable]:
    """Operator name -> function building its ONNX graph (traced by the exporter with
    ONNX values for tensors and Python values for the scalar arguments)."""

    def constant_like(value, x):
        return op.CastLike(op.Constant(value_float=float(value)), x)

    def rank(x, name):
        shape = x.shape
        if shape is None:
            raise ValueError(f"fused_act.onnx: {name} needs the rank of its input to place "
                             "the per-channel weight on dim 1; the exported graph does not "
                             "know it")
        return len(shape)

    def channel_weight(x, weight, name):
        """weight (one value, or one per channel of dim 1) shaped to broadcast against x
        the way torch.prelu broadcasts it."""
        weight = op.CastLike(weight, x)
        r = rank(x, name)
        if r >= 2:
            shape = [-1] + [1] * (r - 2)
        else:  # no channel dim: one value for everything, as torch requires
            shape = [1] * r
        return op.Reshape(weight, op.Constant(value_ints=shape))

    def swish(x, beta):
        if isinstance(beta, float):
            scaled = x if beta == 1.0 else op.Mul(constant_like(beta, x), x)
        else:
            scaled = op.Mul(beta, x)
        return op.Mul(x, op.Sigmoid(scaled))

    def relu(x, p: float, q: float):
        return op.Relu(x)

    def relu6(x, p: float, q: float):
        return op.Clip(x, constant_like(0.0, x), constant_like(6.0, x))

    def leaky_relu(x, p: float, q: float):
        return op.LeakyRelu(x, alpha=float(p))

    def elu(x, p: float, q: float):
        return op.Elu(x, alpha=float(p))

    def sigmoid(x, p: float, q: float):
        return op.Sigmoid(x)

    def tanh(x, p: float, q: float):
        return op.Tanh(x)

    def swish_float(x, p: float, q: float):
        return swish(x, float(p))

    def gelu(x, p: float, q: float):  # Gelu is an operator from opset 20 on: its formula here
        half_x = op.Mul(constant_like(0.5, x), x)
        erf = op.Erf(op.Mul(x, constant_like(0.7071067811865476, x)))
        return op.Mul(half_x, op.Add(constant_like(1.0, x), erf))

    def gelu_tanh(x, p: float, q: float):
        cube = op.Mul(op.Mul(x, x), x)
        inner = op.Mul(constant_like(0.7978845608028654, x),
                       op.Add(x, op.Mul(constant_like(0.044715, x), cube)))
        half_x = op.Mul(constant_like(0.5, x), x)
        return op.Mul(half_x, op.Add(constant_like(1.0, x), op.Tanh(inner)))

    def mish(x, p: float, q: float):
        return op.Mish(x)

    def hardswish(x, p: float, q: float):
        return op.HardSwish(x)

    def hardsigmoid(x, p: float, q: float):
        return op.HardSigmoid(x, alpha=1.0 / 6.0, beta=0.5)

    def selu(x, p: float, q: float):  # torch's alpha and scale (ONNX's defaults, rounded to float)
        return op.Selu(x, alpha=1.6732632423543772, gamma=1.0507009873554805)

    def celu(x, p: float, q: float):
        return op.Celu(x, alpha=float(p))

    def relu_squared(x, p: float, q: float):
        r = op.Relu(x)
        return op.Mul(r, r)

    def softplus(x, p: float, q: float):
        z = x if float(p) == 1.0 else op.Mul(x, constant_like(p, x))
        soft = op.Softplus(z)
        if float(p) != 1.0:
            soft = op.Div(soft, constant_like(p, x))
        return op.Where(op.Greater(z, constant_like(q, x)), x, soft)

    def hardtanh(x, p: float, q: float):
        return op.Clip(x, constant_like(p, x), constant_like(q, x))

    def prelu(x, weight):
        return op.PRelu(x, channel_weight(x, weight, "prelu"))

    def swish_weighted(x, weight):
        return swish(x, channel_weight(x, weight, "swish_weighted"))

    def softmax(x, dim: int, log: bool):
        fn = op.LogSoftmax if log else op.Softmax
        if rank(x, "softmax") == 0:  # torch allows dim 0 / -1 on a scalar
            flat = op.Reshape(x, op.Constant(value_ints=[1]))
            return op.Reshape(fn(flat, axis=0), op.Constant(value_ints=[]))
        return fn(x, axis=int(dim))

    def maxout(x, pieces: int, dim: int):
        r = len(x.shape) if x.shape is not None else None
        if r is None:
            raise ValueError("fused_act.onnx: maxout needs the rank of its input; the exported "
                             "graph does not know it")
        d = int(dim) % r
        parts = []
        if d > 0:
            parts.append(op.Shape(x, start=0, end=d))
        parts.append(op.Constant(value_ints=[-1, int(pieces)]))
        if d + 1 < r:
            parts.append(op.Shape(x, start=d + 1))
        shape = parts[0] if len(parts) == 1 else op.Concat(*parts, axis=0)
        return op.ReduceMax(op.Reshape(x, shape), op.Constant(value_ints=[d + 1]), keepdims=0)

    def halves(x, dim):
        a, b = op.Split(x, axis=int(dim), num_outputs=2)
        return a, b

    def glu(x, dim: int):
        a, b = halves(x, dim)
        return op.Mul(a, op.Sigmoid(b))

    def gated(act):
        def translate(x, dim: int):
            a, b = halves(x, dim)
            return op.Mul(act(a, 0.0, 0.0), b)
        return translate

    return {
        "maxout": maxout,
        "glu": glu, "swiglu": gated(lambda a, p, q: swish(a, 1.0)), "geglu": gated(gelu),
        "geglu_tanh": gated(gelu_tanh), "reglu": gated(relu),
        "relu": relu, "relu6": relu6, "leaky_relu": leaky_relu, "elu": elu,
        "sigmoid": sigmoid, "tanh": tanh, "swish": swish_float, "gelu": gelu,
        "gelu_tanh": gelu_tanh, "mish": mish, "hardswish": hardswish,
        "hardsigmoid": hardsigmoid, "selu": selu, "celu": celu, "relu_squared": relu_squared,
        "softplus": softplus, "hardtanh": hardtanh,
        "prelu": prelu, "swish_weighted": swish_weighted, "softmax": softmax,
    }


def _register_inplace_rule():
    """Lets an ONNX export functionalize the in-place operators into their out-of-place
    forms (see the module docstring)."""
    global _inplace_rule_registered
    if _inplace_rule_registered:
        return
    from torch._subclasses.functional_tensor import FunctionalTensorMode

    def functionalize_inplace(mode, func, types, args, kwargs):
        if not torch.onnx.is_in_onnx_export():
            return mode.__torch_dispatch__(func, types, args, kwargs)
        out_of_place = getattr(ops, func._schema.name.split("::")[1][:-1]).default
        x = args[0]
        with mode:
            x.copy_(out_of_place(*args, **kwargs))
        return x if func._schema.returns else None

    # Every in-place operator NAME_ (a mutable schema) that has an out-of-place form NAME.
    for qualname in torch._C._dispatch_get_all_op_names():
        namespace, _, name = qualname.partition("::")
        if (namespace == "fused_act" and name.endswith("_") and hasattr(ops, name[:-1])
                and getattr(ops, name).default._schema.is_mutable):
            torch.library.register_torch_dispatch(qualname, FunctionalTensorMode,
                                                  functionalize_inplace)
    _inplace_rule_registered = True


def _missing_torch_apis():
    """What the table and its in-place rule use that this torch lacks: export's
    custom_translation_table arrived in torch 2.6, register_torch_dispatch in 2.5."""
    missing = []
    if "custom_translation_table" not in inspect.signature(torch.onnx.export).parameters:
        missing.append("torch.onnx.export(custom_translation_table=...)")
    if not hasattr(torch.library, "register_torch_dispatch"):
        missing.append("torch.library.register_torch_dispatch")
    return missing


def onnx_translation_table() -> Dict[torch._ops.OpOverload, Callable]:
    """The ``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``: every
    fused_act operator mapped to standard ONNX operators (see this module's docstring).
    Needs torch 2.6 or later and the ``onnxscript`` package (imported here, not by
    fused_act)."""
    missing = _missing_torch_apis()
    if missing:
        raise RuntimeError(
            f"fused_act.onnx_translation_table: ONNX export through torch.onnx.export(..., "
            f"dynamo=True) needs torch 2.6 or later; torch {torch.__version__} lacks "
            f"{' and '.join(missing)}.  With this torch, call "
            "fused_act.onnx.register_legacy_symbolics() and export with dynamo=False "
            "(out-of-place calls only).")
    try:
        from onnxscript import opset18
    except ImportError as err:
        raise ImportError("fused_act.onnx_translation_table: ONNX export needs the onnxscript "
                          "package (pip install onnxscript onnx)") from err
    _register_inplace_rule()
    table = {}
    for name, fn in _translations(opset18).items():
        if hasattr(ops, name):
            table[getattr(ops, name).default] = fn
    return table


def _legacy_symbolics():
    from torch.onnx import symbolic_helper as sh

    def const(g, value, like):
        return g.op("CastLike", g.op("Constant", value_t=torch.tensor(float(value))), like)

    def scalar(p):
        return sh._get_const(p, "f", "p")

    def channel_weight(g, x, weight, name):
        r = sh._get_tensor_rank(x)
        if r is None:
            raise RuntimeError(f"fused_act.onnx: {name} needs the rank of its input to place "
                               "the per-channel weight on dim 1; the traced graph does not "
                               "know it")
        shape = [-1] + [1] * (r - 2) if r >= 2 else [1] * r
        weight = g.op("CastLike", weight, x)
        return g.op("Reshape", weight,
                    g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))

    def swish(g, x, beta):
        return g.op("Mul", x, g.op("Sigmoid", g.op("Mul", beta, x)))

    def gelu(g, x, p, q):
        erf = g.op("Erf", g.op("Mul", x, const(g, 0.7071067811865476, x)))
        return g.op("Mul", g.op("Mul", const(g, 0.5, x), x),
                    g.op("Add", const(g, 1.0, x), erf))

    def gelu_tanh(g, x, p, q):
        cube = g.op("Mul", g.op("Mul", x, x), x)
        inner = g.op("Mul", const(g, 0.7978845608028654, x),
                     g.op("Add", x, g.op("Mul", const(g, 0.044715, x), cube)))
        return g.op("Mul", g.op("Mul", const(g, 0.5, x), x),
                    g.op("Add", const(g, 1.0, x), g.op("Tanh", inner)))

    def relu_squared(g, x, p, q):
        r = g.op("Relu", x)
        return g.op("Mul", r, r)

    def softplus(g, x, p, q):
        beta, threshold = scalar(p), sh._get_const(q, "f", "q")
        z = x if beta == 1.0 else g.op("Mul", x, const(g, beta, x))
        soft = g.op("Softplus", z)
        if beta != 1.0:
            soft = g.op("Div", soft, const(g, beta, x))
        return g.op("Where", g.op("Greater", z, const(g, threshold, x)), x, soft)

    def softmax(g, x, dim, log):
        dim, log = sh._get_const(dim, "i", "dim"), sh._get_const(log, "b", "log")
        if sh._get_tensor_rank(x) == 0:
            flat = g.op("Reshape", x, g.op("Constant", value_t=torch.tensor([1])))
            y = g.op("LogSoftmax" if log else "Softmax", flat, axis_i=0)
            return g.op("Reshape", y, g.op("Constant",
                                           value_t=torch.tensor([], dtype=torch.int64)))
        return g.op("LogSoftmax" if log else "Softmax", x, axis_i=dim)

    def maxout(g, x, pieces, dim):
        pieces, dim = sh._get_const(pieces, "i", "pieces"), sh._get_const(dim, "i", "dim")
        r = sh._get_tensor_rank(x)
        if r is None:
            raise RuntimeError("fused_act.onnx: maxout needs the rank of its input; the traced "
                               "graph does not know it")
        d = dim % r
        parts = []
        if d > 0:
            parts.append(g.op("Shape", x, start_i=0, end_i=d))
        parts.append(g.op("Constant", value_t=torch.tensor([-1, pieces], dtype=torch.int64)))
        if d + 1 < r:
            parts.append(g.op("Shape", x, start_i=d + 1))
        shape = parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis_i=0)
        return g.op("ReduceMax", g.op("Reshape", x, shape), axes_i=[d + 1], keepdims_i=0)

    def halves(g, x, dim):
        return g.op("Split", x, axis_i=sh._get_const(dim, "i", "dim"), outputs=2)

    def gated(act):
        def translate(g, x, dim):
            a, b = halves(g, x, dim)
            return g.op("Mul", act(g, a), b)
        return translate

    return {
        "maxout": maxout,
        "glu": lambda g, x, dim: (lambda a, b: g.op("Mul", a, g.op("Sigmoid", b)))(
            *halves(g, x, dim)),
        "swiglu": gated(lambda g, a: g.op("Mul", a, g.op("Sigmoid", a))),
        "geglu": gated(lambda g, a: gelu(g, a, None, None)),
        "geglu_tanh": gated(lambda g, a: gelu_tanh(g, a, None, None)),
        "reglu": gated(lambda g, a: g.op("Relu", a)),
        "relu": lambda g, x, p, q: g.op("Relu", x),
        "relu6": lambda g, x, p, q: g.op("Clip", x, const(g, 0.0, x), const(g, 6.0, x)),
        "leaky_relu": lambda g, x, p, q: g.op("LeakyRelu", x, alpha_f=scalar(p)),
        "elu": lambda g, x, p, q: g.op("Elu", x, alpha_f=scalar(p)),
        "sigmoid": lambda g, x, p, q: g.op("Sigmoid", x),
        "tanh": lambda g, x, p, q: g.op("Tanh", x),
        "swish": lambda g, x, p, q: swish(g, x, const(g, scalar(p), x)),
        "gelu": gelu,
        "gelu_tanh": gelu_tanh,
        # Mish is an operator from opset 18 on.
        "mish": lambda g, x, p, q: g.op("Mul", x, g.op("Tanh", g.op("Softplus", x))),
        "hardswish": lambda g, x, p, q: g.op("HardSwish", x),
        "hardsigmoid": lambda g, x, p, q: g.op("HardSigmoid", x, alpha_f=1.0 / 6.0, beta_f=0.5),
        "selu": lambda g, x, p, q: g.op("Selu", x, alpha_f=1.6732632423543772,
                                     gamma_f=1.0507009873554805),
        "celu": lambda g, x, p, q: g.op("Celu", x, alpha_f=scalar(p)),
        "relu_squared": relu_squared,
        "softplus": softplus,
        "hardtanh": lambda g, x, p, q: g.op("Clip", x, const(g, scalar(p), x),
                                            const(g, sh._get_const(q, "f", "q"), x)),
        "prelu": lambda g, x, w: g.op("PRelu", x, channel_weight(g, x, w, "prelu")),
        "swish_weighted": lambda g, x, w: swish(g, x, channel_weight(g, x, w, "swish_weighted")),
        "softmax": softmax,
    }


LEGACY_OPSET = 15  # CastLike


def register_legacy_symbolics() -> None:
    """Registers, for ``torch.onnx.export(..., dynamo=False)`` at opset 15 and later, the
    ONNX translation of every out-of-place fused_act operator (the same operators as
    onnx_translation_table()).  Calling it again changes nothing."""
    for name, fn in _legacy_symbolics().items():
        if hasattr(ops, name):
            torch.onnx.register_custom_op_symbolic(f"fused_act::{name}", fn, LEGACY_OPSET)


__all__ = ["onnx_translation_table", "register_legacy_symbolics"]
