"""Functional forms, with torch.nn.functional's signatures and defaults.

Floating-point inputs (float32, float64, float16, bfloat16) on CPU or CUDA run the fused
kernels.  Other inputs get torch's own result where torch defines one (integer inputs
of relu/relu6 stay integer; sigmoid/tanh promote integers to the default float dtype as
torch does) and otherwise a TypeError naming the operator.
"""
import numbers
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import _C, _compile, _table
from . import autograd as _ag
from ._ops import ELEMENTWISE_OPS, GATED_OPS, WEIGHTED_OPS, built_with_cuda, ops

# Eager calls on plain float tensors go to _C.NAME: the operator torch.ops.fused_act.NAME
# (same autograd and kernels) called without torch.ops' generic argument parsing.  It
# returns NotImplemented for anything else, and torch.compile traces torch.ops instead.
_compiling = torch.compiler.is_compiling
# The fast-path guard: dynamo folds it to True (it then traces torch.ops), and in eager it
# is a bare `return False`, a third of is_compiling's cost.  Export's non-strict tracing
# (where only is_compiling is True) passes tensor subclasses, which _C declines anyway.
_dynamo_tracing = getattr(torch.compiler, "is_dynamo_compiling", _compiling)

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_BUILT_WITH_CUDA = built_with_cuda()
_OUT_OF_PLACE = {op: getattr(ops, op).default for op in ELEMENTWISE_OPS}
_IN_PLACE = {op: getattr(ops, op + "_").default for op in ELEMENTWISE_OPS}
_WEIGHTED = {op: getattr(ops, op).default for op in WEIGHTED_OPS}
_SOFTMAX = ops.softmax.default
_GATED = {op: getattr(ops, op).default for op in GATED_OPS}


def _number(name, arg, value):
    """A float from a Python number, or a TypeError naming the function (as torch's own
    argument parser gives for a non-number)."""
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad:
        return float(value)
    raise TypeError(f"fused_act.{name}(): argument '{arg}' must be a number, not "
                    f"{type(value).__name__}")


def _check(name, x, torch_fallback=None, promote_integers=False):
    """Returns the tensor the kernel runs on, or (None, torch's own result) for inputs
    fused_act leaves to torch: other dtypes, sparse and nested layouts, tensor
    subclasses (outside torch.compile, whose tracing tensors are subclasses too)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"fused_act.{name}: expected a torch.Tensor as input, got {type(x).__name__}")
    if x.layout != torch.strided or x.is_nested or (
            type(x) is not torch.Tensor and not isinstance(x, nn.Parameter) and not _compiling()
            and not _ag.is_transformed(x)):
        if torch_fallback is None:
            raise TypeError(f"fused_act.{name}: {x.layout} / nested / subclass inputs are not "
                            "supported")
        try:
            return None, torch_fallback()
        # (IndexError: torch 2.4's jagged nested tensors fail so on a (1,)-shaped weight)
        except (RuntimeError, NotImplementedError, IndexError) as err:
            kind = "nested" if x.is_nested else str(x.layout).replace("torch.", "")
            raise type(err)(f"fused_act.{name}: no kernel for {kind} inputs, and torch's own "
                            f"{name} has none either ({err})") from None
    if x.device.type == "cuda" and not _BUILT_WITH_CUDA:
        raise RuntimeError(
            f"fused_act.{name}: the input is on {x.device}, but fused_act was built without "
            "CUDA kernels; reinstall it on a machine with nvcc and a CUDA build of torch "
            "(FUSED_ACT_CUDA=1 makes the build fail instead of skipping them)")
    if x.device.type not in ("cpu", "cuda", "meta"):
        raise RuntimeError(f"fused_act.{name}: no kernel for device '{x.device.type}' "
                           "(supported: cpu, cuda)")
    if x.dtype in _FLOAT_DTYPES:
        return x, None
    if promote_integers and not x.is_complex() and not x.is_floating_point():
        return x.to(torch.get_default_dtype()), None
    if torch_fallback is not None:
        try:
            return None, torch_fallback()
        except (RuntimeError, NotImplementedError) as err:
            raise TypeError(f"fused_act.{name}: unsupported dtype {x.dtype}; supported: "
                            "float32, float64, float16, bfloat16") from err
    raise TypeError(f"fused_act.{name}: unsupported dtype {x.dtype}; supported: "
                    "float32, float64, float16, bfloat16")


def _elementwise(op, x, p, q, inplace):
    """Runs elementwise operator `op` on a checked tensor.  Ordinary tensors: the
    operator, whose C++ autograd covers reverse and forward mode and, in place, the
    dispatcher's version counter and view handling.  Tensors wrapped by a torch.func
    transform (and dual tensors that record a graph): the autograd.Function (an
    in-place call writes its result back)."""
    if _ag.needs_function(x):
        y = _ag.FUNCTIONS[op].apply(x, p, q)
        return x.copy_(y) if inplace else y
    if inplace:
        _IN_PLACE[op](x, p, q)
        return x
    return _OUT_OF_PLACE[op](x, p, q)


def _autocast_dtype(x):
    """The lower-precision dtype autocast is running at for x's device, or None."""
    dev = x.device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return None


def _weighted(op, name, x, weight):
    """prelu / swish with a tensor weight on a checked x."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"fused_act.{name}: weight must be a torch.Tensor, got "
                        f"{type(weight).__name__}")
    if weight.device != x.device:
        raise RuntimeError(f"fused_act.{name}: weight is on {weight.device} but the input is on "
                           f"{x.device}")
    low = _autocast_dtype(x)
    if low is not None:
        if op == "prelu":
            # As torch's autocast does for prelu (its lower-precision list): float32
            # arguments run in the autocast dtype.
            if x.dtype == torch.float32:
                x = x.to(low)
            if weight.dtype == torch.float32:
                weight = weight.to(low)
        elif weight.dtype != x.dtype:
            # swish (no torch operator: autocast leaves its input alone, as it leaves
            # nn.SiLU's): beta follows the input, the output keeps the input's dtype.
            weight = weight.to(x.dtype)
        # Either way the weight's gradient comes back in the weight's own dtype.
    if _ag.is_transformed(x) or _ag.is_transformed(weight):
        return _ag.WEIGHTED_FUNCTIONS[op].apply(x, weight)
    return _WEIGHTED[op](x, weight)


# ---- the elementwise activations, generated from their rows (fused_act/_table.py) ----
# Each becomes a plain function with torch's signature, compiled from source like the
# methods of a dataclass: no per-call cost over a hand-written one.  Eager calls on plain
# float tensors go to _C.<op> (NotImplemented for anything else); other inputs are checked,
# torch's own function answers what fused_act leaves to it, and tensors of torch.func
# transforms take the autograd.Function (_elementwise).

def _not_implemented(*args):
    return NotImplemented


def _variant(name, param, value, choices):
    """The operator a string parameter selects (GELU's approximate), or torch's error."""
    op = choices.get(value) if isinstance(value, str) else None
    if op is None:
        raise RuntimeError(f"fused_act.{name}: {param} must be one of "
                           f"{', '.join(map(repr, choices))}, not {value!r}")
    return op


def _variant_source(row):
    """For a row whose string parameter picks the operator (GELU's approximate): the fast
    entry point's expression and the line that names the operator for the other paths."""
    param, choices = row.op
    fast = " else ".join(f"(_C.{op} if {param} == {value!r}" for value, op in choices.items())
    fast += " else _not_implemented" + ")" * len(choices)
    return fast, f"    op = _variant({row.name!r}, {param!r}, {param}, {dict(choices)!r})\n"


def _function_source(row):
    params = "".join(f", {n}={d!r}" for n, d in row.params)
    if row.inplace:
        params += ", inplace=False"
    def scalar(var, source):  # the expression the fast path passes, and the checked value
        if isinstance(source, str):
            return source, f"    {var} = _number({row.name!r}, {source!r}, {source})\n"
        return repr(float(source)), f"    {var} = {float(source)!r}\n"
    p_fast, p_check = scalar("p", row.p)
    q_fast, q_check = scalar("q", row.q)
    if isinstance(row.op, tuple):
        fast, op_line = _variant_source(row)
    else:
        fast = f"(_C.{row.op}_ if inplace else _C.{row.op})" if row.inplace else f"_C.{row.op}"
        op_line = f"    op = {row.op!r}\n"
    torch_args = "".join(f", {n}={n}" for n, _ in row.params)
    if row.inplace:
        torch_args += ", inplace=inplace"
    src = (f"def {row.name}(input{params}):\n"
           f"    if not _dynamo_tracing():\n"
           f"        y = {fast}(input, {p_fast}, {q_fast})\n"
           f"        if y is not NotImplemented:\n"
           f"            return y\n"
           f"{p_check}{q_check}{op_line}"
           f"    x, other = _check({row.name!r}, input, lambda: _torch_{row.name}(input{torch_args}),"
           f" promote_integers={row.promote_integers})\n"
           f"    return other if x is None else _elementwise(op, x, p, q, "
           f"{'inplace' if row.inplace else 'False'})\n")
    if row.inplace_alias:
        names = ", ".join(n for n, _ in row.params)
        src += (f"\n\ndef {row.name}_(input{''.join(f', {n}={d!r}' for n, d in row.params)}):\n"
                f"    return {row.name}(input{', ' + names if names else ''}, inplace=True)\n")
    return src


def _define(row, namespace):
    namespace[f"_torch_{row.name}"] = row.torch_function
    _compile.define(_function_source(row), f"functional.{row.name}", namespace)
    fn = namespace[row.name]
    fn.__doc__ = (row.doc or f"fused_act's {row.name}, as torch.nn.functional's.") + (
        "" if not row.inplace else "  With inplace=True the input is overwritten.")
    fn.__module__ = __name__
    names = [row.name]
    if row.inplace_alias:
        namespace[row.name + "_"].__module__ = __name__
        names.append(row.name + "_")
    return names


_GENERATED = [n for _row in _table.ROWS for n in _define(_row, globals())]


def prelu(input: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if not _dynamo_tracing():
        y = _C.prelu(input, weight)
        if y is not NotImplemented:
            return y
    x, other = _check("prelu", input, lambda: F.prelu(input, weight))
    return other if x is None else _weighted("prelu", "prelu", x, weight)


def swish(input: torch.Tensor, beta: Union[float, torch.Tensor] = 1.0) -> torch.Tensor:
    """x * sigmoid(beta * x).  A tensor ``beta`` (one element, or one per channel along
    dim 1) receives a gradient; a float ``beta`` is a constant."""
    if not _dynamo_tracing():
        y = (_C.swish(input, beta) if type(beta) is float
             else _C.swish_weighted(input, beta))
        if y is not NotImplemented:
            return y
    tensor_beta = isinstance(beta, torch.Tensor)
    b = beta if tensor_beta else _number("swish", "beta", beta)
    x, other = _check("swish", input, lambda: input * torch.sigmoid(beta * input))
    if x is None:
        return other
    if tensor_beta:
        return _weighted("swish_weighted", "swish", x, b)
    return _elementwise("swish", x, b, 0.0, False)


# ---- the gated activations (glu, swiglu, geglu, reglu), from their rows ---------------
# a, b = input.chunk(2, dim); one kernel reads both halves and writes the output, and the
# backward writes the gradient of both halves in one pass from the saved input.

def _gated(op, name, x, dim):
    """Runs gated operator `op` on a checked tensor (the operator checks dim's range)."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(_INT_DIM_ERROR.format(name, type(dim).__name__))
    dim = int(dim)
    if not -(2**63) <= dim < 2**63:
        raise IndexError(f"fused_act::{name}: dim {dim} is out of range for a tensor of "
                         f"{x.dim()} dimension(s)")
    if _ag.needs_function(x):
        return _ag.GATED_FUNCTIONS[op].apply(x, dim)
    return _GATED[op](x, dim)


def _gated_source(row):
    params = "".join(f", {n}={d!r}" for n, d in row.params)
    if isinstance(row.op, tuple):
        fast, op_line = _variant_source(row)
    else:
        fast, op_line = f"_C.{row.op}", f"    op = {row.op!r}\n"
    torch_args = "".join(f", {n}={n}" for n, _ in row.params)
    return (f"def {row.name}(input, dim=-1{params}):\n"
            f"    if not _dynamo_tracing():\n"
            f"        y = {fast}(input, dim)\n"
            f"        if y is not NotImplemented:\n"
            f"            return y\n"
            f"{op_line}"
            f"    x, other = _check({row.name!r}, input, lambda: _torch_{row.name}(input, dim"
            f"{torch_args}))\n"
            f"    return other if x is None else _gated(op, {row.name!r}, x, dim)\n")


def _define_gated(row, namespace):
    namespace[f"_torch_{row.name}"] = row.torch_function
    _compile.define(_gated_source(row), f"functional.{row.name}", namespace)
    fn = namespace[row.name]
    fn.__doc__ = row.doc
    fn.__module__ = __name__
    return row.name


_GENERATED += [_define_gated(_row, globals()) for _row in _table.GATED_ROWS]


_INT_DIM_ERROR = "fused_act.{}(): argument 'dim' must be int, not {}"


def _softmax_dim(name, x, dim, stacklevel=5):
    # nn.Softmax(dim=None) and F.softmax(x) pick a dim for legacy reasons (with a
    # warning); mirror torch's choice exactly.
    if dim is None:
        dim = F._get_softmax_dim(name, x.dim(), stacklevel)
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(_INT_DIM_ERROR.format(name, type(dim).__name__))
    dim = int(dim)
    n = max(x.dim(), 1)
    if not -n <= dim < n:  # also dims beyond int64, which the operator cannot take
        raise IndexError(f"fused_act::{name}: dim {dim} is out of range for a tensor of "
                         f"{x.dim()} dimension(s) (expected in [{-n}, {n - 1}])")
    return dim


def _softmax(name, log, torch_fn, input, dim, stacklevel, dtype):
    """softmax (log=False) or log_softmax (log=True); torch_fn is torch's own, for the
    inputs fused_act leaves to torch.  stacklevel is the caller's _stacklevel, counted as
    torch counts it from F.softmax: the legacy-dim warning names the caller's line.
    softmax() and log_softmax() try the compiled fast path themselves first (one Python
    frame less on the common call); this is the general path."""
    if isinstance(input, torch.Tensor):
        if dtype is None and input.is_cuda and torch.is_autocast_enabled("cuda"):
            # torch's CUDA autocast runs softmax / log_softmax in float32 (dtype set).
            dtype = torch.float32
        if dtype is not None:
            input = input.to(dtype)
    # Frames between the caller and _get_softmax_dim: _softmax, _check and the lambda,
    # _softmax_dim (torch's own count already covers softmax itself).
    x, other = _check(name, input, lambda: torch_fn(input, _softmax_dim(
        name, input, dim, stacklevel + 4)))
    if x is None:
        return other
    d = _softmax_dim(name, x, dim, stacklevel + 2)
    if _ag.needs_function(x):
        return (_ag.LogSoftmaxFunction if log else _ag.SoftmaxFunction).apply(x, d)
    return _SOFTMAX(x, d, log)


def softmax(input: torch.Tensor, dim: Optional[int] = None, _stacklevel: int = 3,
            dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """softmax along ``dim``: exp(x) / sum(exp(x)), computed as exp(x - max) / sum so that
    no input overflows.  ``dtype`` casts the input first, as torch.softmax does.  A row
    that is entirely -inf gives NaN, as in torch."""
    if dtype is None and type(dim) is int and not _dynamo_tracing():
        y = _C.softmax(input, dim, False)
        if y is not NotImplemented:
            return y
    return _softmax("softmax", False, torch.softmax, input, dim, _stacklevel, dtype)


def log_softmax(input: torch.Tensor, dim: Optional[int] = None, _stacklevel: int = 3,
                dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """log(softmax(x)) along ``dim``, computed as (x - max) - log(sum(exp(x - max))).
    ``dtype`` casts the input first, as torch.log_softmax does.  A row that is entirely
    -inf gives NaN, as in torch."""
    if dtype is None and type(dim) is int and not _dynamo_tracing():
        y = _C.softmax(input, dim, True)
        if y is not NotImplemented:
            return y
    return _softmax("log_softmax", True, torch.log_softmax, input, dim, _stacklevel, dtype)


def _maxout_int(name, arg, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"fused_act.{name}(): argument '{arg}' must be int, not "
                        f"{type(value).__name__}")
    return int(value)


_MAXOUT = ops.maxout.default


def maxout(input: torch.Tensor, pieces: int, dim: int = 1) -> torch.Tensor:
    """The max over groups of ``pieces`` consecutive entries along ``dim``:
    ``input.unflatten(dim, (-1, pieces)).amax(dim + 1)`` (NaN propagating, as amax).  The
    size of ``dim`` must be a multiple of ``pieces``.  The gradient is amax's: split evenly
    among tied maxima, NaN for a whole group whose max is NaN.  The backward keeps one bit
    per piece (which pieces attain the max), not the input."""
    # Eager calls on plain float tensors: straight to the operator (its C++ autograd).
    if not _dynamo_tracing():
        y = _C.maxout(input, pieces, dim)
        if y is not NotImplemented:
            return y
    pieces = _maxout_int("maxout", "pieces", pieces)
    dim = _maxout_int("maxout", "dim", dim)
    if pieces < 1:
        raise ValueError(f"fused_act.maxout: pieces must be at least 1, got {pieces}")
    x, _ = _check("maxout", input)
    if _ag.is_transformed(x):
        return _ag.MaxoutFunction.apply(x, pieces, dim)[0]
    return _MAXOUT(x, pieces, dim)


__all__ = _GENERATED + ["prelu", "swish", "softmax", "log_softmax", "maxout"]

# torch.fx.symbolic_trace records these functions as calls (leaves) instead of tracing
# into them with Proxy arguments.
for _name in __all__:
    torch.fx.wrap(_name)
del _name
