"""nn.Module drop-ins.  Each subclasses the torch.nn class it replaces, so constructor
arguments, defaults, attributes, ``extra_repr``, state_dict keys and isinstance checks
are torch's; only ``forward`` runs the fused kernels.

Under ``torch.jit.script`` the forward calls the operators (``torch.ops.fused_act``)
directly: TorchScript compiles only that branch, and the operators carry their autograd.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import _compile, _table
from . import functional as FA

_ops = torch.ops.fused_act


# ---- the elementwise activations, generated from their rows (fused_act/_table.py) ----

def _script_call(row, op, inplace):
    p, q = (f"float(self.{v})" if isinstance(v, str) else repr(float(v)) for v in (row.p, row.q))
    if not inplace:
        return [f"return _ops.{op}(input, {p}, {q})"]
    return [f"if self.inplace:", f"    _ops.{op}_(input, {p}, {q})", f"    return input",
            f"return _ops.{op}(input, {p}, {q})"]


def _module_source(row):
    if isinstance(row.op, tuple):
        param, choices = row.op
        script = []
        for value, op in choices.items():
            script += [f"if self.{param} == {value!r}:"]
            script += ["    " + line for line in _script_call(row, op, row.inplace)]
        script += [f"raise RuntimeError('fused_act.{row.name}: {param} must be one of "
                   f"{', '.join(map(repr, choices)).replace(chr(39), '')}')"]
    else:
        script = _script_call(row, row.op, row.inplace)
    args = "".join(f", self.{n}" for n, _ in row.params)
    if row.inplace:
        args += ", self.inplace"
    base = "_Base" if row.torch_module is not None else "nn.Module"
    return (f"class {row.module}({base}):\n"
            f"    def forward(self, input):\n"
            f"        if torch.jit.is_scripting():\n"
            + "".join(f"            {line}\n" for line in script) +
            f"        return FA.{row.name}(input{args})\n")


def _define(row):
    namespace = {"torch": torch, "nn": nn, "FA": FA, "_ops": _ops,
                 "_Base": row.torch_module}
    _compile.define(_module_source(row), f"modules.{row.module}", namespace)
    cls = namespace[row.module]
    cls.__module__ = __name__
    cls.__doc__ = (f"Drop-in for torch.nn.{row.torch_module.__name__}: "
                   if row.torch_module is not None else "") + (
        row.doc or f"fused_act.functional.{row.name} as a module.")
    globals()[row.module] = cls
    return row.module


_GENERATED = [_define(_row) for _row in _table.ROWS]


# ---- the gated activations, generated from their rows (fused_act/_table.py) ----------
# GLU subclasses nn.GLU (its constructor, ``dim`` and repr); the others are new modules
# with a ``dim`` (default -1, the last) and the row's params.

def _gated_module_source(row):
    if isinstance(row.op, tuple):
        param, choices = row.op
        script = []
        for value, op in choices.items():
            script += [f"if self.{param} == {value!r}:", f"    return _ops.{op}(input, self.dim)"]
        script += [f"raise RuntimeError('fused_act.{row.name}: {param} must be one of "
                   f"{', '.join(map(repr, choices)).replace(chr(39), '')}')"]
    else:
        script = [f"return _ops.{row.op}(input, self.dim)"]
    args = "".join(f", self.{n}" for n, _ in row.params)
    src = f"class {row.module}({'_Base' if row.torch_module is not None else 'nn.Module'}):\n"
    if row.torch_module is None:
        params = "".join(f", {n}: {type(d).__name__} = {d!r}" for n, d in row.params)
        src += (f"    def __init__(self, dim: int = -1{params}):\n"
                f"        super().__init__()\n"
                f"        self.dim = dim\n"
                + "".join(f"        self.{n} = {n}\n" for n, _ in row.params) +
                f"\n    def extra_repr(self):\n"
                f"        return f'dim={{self.dim}}"
                + "".join(f", {n}={{self.{n}!r}}" for n, _ in row.params) + "'\n\n")
    src += (f"    def forward(self, input):\n"
            f"        if torch.jit.is_scripting():\n"
            + "".join(f"            {line}\n" for line in script) +
            f"        return FA.{row.name}(input, self.dim{args})\n")
    return src


def _define_gated(row):
    namespace = {"torch": torch, "nn": nn, "FA": FA, "_ops": _ops, "_Base": row.torch_module}
    _compile.define(_gated_module_source(row), f"modules.{row.module}", namespace)
    cls = namespace[row.module]
    cls.__module__ = __name__
    cls.__doc__ = (f"Drop-in for torch.nn.{row.torch_module.__name__}: "
                   if row.torch_module is not None else "") + row.doc
    globals()[row.module] = cls
    return row.module


_GENERATED += [_define_gated(_row) for _row in _table.GATED_ROWS]


class PReLU(nn.PReLU):
    def forward(self, input):
        if torch.jit.is_scripting():
            return _ops.prelu(input, self.weight)
        return FA.prelu(input, self.weight)


class Swish(nn.Module):
    """x * sigmoid(beta * x).  With ``trainable=True``, ``beta`` is an nn.Parameter (one
    element) that receives a gradient; otherwise a constant.  ``Swish()`` computes what
    ``nn.SiLU()`` does."""

    def __init__(self, beta: float = 1.0, trainable: bool = False, device=None, dtype=None):
        super().__init__()
        self.trainable = trainable
        if trainable:
            self.beta = nn.Parameter(torch.full((1,), float(beta), device=device, dtype=dtype))
        else:
            self.beta = float(beta)

    def forward(self, input):
        if torch.jit.is_scripting():
            beta = self.beta
            if isinstance(beta, torch.Tensor):
                return _ops.swish_weighted(input, beta)
            return _ops.swish(input, beta, 0.0)
        return FA.swish(input, self.beta)

    def extra_repr(self):
        beta = self.beta.item() if isinstance(self.beta, torch.Tensor) else self.beta
        return f"beta={beta}, trainable={self.trainable}"


def _scripted_softmax_dim(name: str, dim: Optional[int], ndim: int) -> int:
    if dim is None:
        return F._get_softmax_dim(name, ndim, 5)
    return dim


class Softmax(nn.Softmax):
    def forward(self, input):
        if torch.jit.is_scripting():
            return _ops.softmax(input, _scripted_softmax_dim("softmax", self.dim, input.dim()),
                                False)
        return FA.softmax(input, self.dim, _stacklevel=5)  # as nn.Softmax does


class LogSoftmax(nn.LogSoftmax):
    def forward(self, input):
        if torch.jit.is_scripting():
            return _ops.softmax(input, _scripted_softmax_dim("log_softmax", self.dim,
                                                             input.dim()), True)
        return FA.log_softmax(input, self.dim, _stacklevel=5)  # as nn.LogSoftmax does


class Maxout(nn.Module):
    """The max over groups of ``pieces`` consecutive entries along ``dim`` (default 1, the
    channels of NCHW): ``fused_act.functional.maxout`` as a module.  torch.nn has no
    Maxout; the torch equivalent is ``x.unflatten(dim, (-1, pieces)).amax(dim + 1)``."""

    pieces: int
    dim: int

    def __init__(self, pieces: int, dim: int = 1):
        super().__init__()
        if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 1:
            raise ValueError(f"fused_act.Maxout: pieces must be an int of at least 1, got "
                             f"{pieces!r}")
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"fused_act.Maxout: dim must be an int, got {type(dim).__name__}")
        self.pieces = pieces
        self.dim = dim

    def forward(self, input):
        if torch.jit.is_scripting():
            return _ops.maxout(input, self.pieces, self.dim)
        return FA.maxout(input, self.pieces, self.dim)

    def extra_repr(self):
        return f"pieces={self.pieces}, dim={self.dim}"


__all__ = _GENERATED + ["PReLU", "Swish", "Softmax", "LogSoftmax", "Maxout"]
