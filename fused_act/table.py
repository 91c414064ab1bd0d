"""The table of activations as the tests (their parametrization) and bench/run.py (their
rows) see it.  The elementwise activations come from their rows in fused_act/_table.py (a new
activation appears here, and so in the tests and the benchmark, as soon as it has one); the
weighted ones and the softmax are listed here by hand.  The gated ones (GATED: glu, swiglu,
geglu, reglu) come from their rows too, apart from ALL: their output is half their input."""
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import _table
from . import functional as FA
from . import modules as M
from ._ops import ops
from ._table import Setting


@dataclass(frozen=True)
class Activation:
    name: str
    fused: Callable          # fused_act.functional.<name>
    reference: Callable      # what torch users call today
    module: type             # fused_act module
    torch_module: type       # the torch.nn module it replaces
    settings: Tuple[Setting, ...]
    composite: Callable      # the hand-written composition a tutorial would use
    saves: str               # what the backward keeps: "output" or "input"
    inplace: bool = False    # has an ``inplace`` flag
    module_kwargs: Dict = field(default_factory=dict)  # a non-default module config
    # The float64 truth for accuracy tests (torch's own float64 result where None).
    exact: Optional[Callable] = None
    ops: Tuple[str, ...] = ()  # the C++ operators it calls
    # A gated activation (GATED below): the input is split in two halves along ``dim``
    # (default -1), so its output is half the input's size.
    gated: bool = False

    @property
    def truth(self) -> Callable:
        """The float64 reference for accuracy checks."""
        return self.exact or self.reference


def _slopes(x, n):
    return torch.linspace(-0.2, 0.5, n, dtype=x.dtype, device=x.device)


def _swish_reference(x, beta=1.0):
    if isinstance(beta, torch.Tensor) and beta.numel() == 1:
        beta = beta.reshape(())  # one shared beta: the output keeps x's shape
    return x * torch.sigmoid(beta * x)


def _channels(x):
    return x.shape[1] if x.dim() >= 2 else 1


def _saves(op):
    """What the backward keeps at the operator's default parameter: the C++ rule."""
    return "output" if ops.saves_output(op, 0.0, 0.0, False) else "input"


def _from_row(row):
    op = row.ops[0]
    return Activation(row.name, getattr(FA, row.name), row.torch_function,
                      getattr(M, row.module), row.torch_module, row.settings, row.composite,
                      _saves(op), inplace=row.inplace, module_kwargs=row.module_kwargs,
                      exact=row.exact, ops=row.ops)


_ROWS = {row.name: _from_row(row) for row in _table.ROWS}

# The elementwise rows in the table's order, with prelu after leaky_relu and swish after silu.
ACTIVATIONS = tuple(
    [_ROWS[n] for n in ("relu", "relu6", "leaky_relu")] + [
    Activation("prelu", FA.prelu, F.prelu, M.PReLU, nn.PReLU,
               (Setting("shared", lambda x: {"weight": torch.full((1,), 0.25, dtype=x.dtype,
                                                                  device=x.device)}),
                Setting("per_channel", lambda x: {"weight": _slopes(x, _channels(x))})),
               lambda x: torch.where(x > 0, x, 0.25 * x), "input",
               module_kwargs={"num_parameters": 1, "init": 0.1}, ops=("prelu",)),
] + [_ROWS[n] for n in ("elu", "sigmoid", "tanh", "silu")] + [
    Activation("swish", FA.swish, _swish_reference, M.Swish,
               nn.SiLU,
               (Setting("default"), Setting("beta1.7", lambda x: {"beta": 1.7}),
                Setting("beta_tensor", lambda x: {"beta": torch.full((1,), 0.8, dtype=x.dtype,
                                                                     device=x.device)})),
               lambda x: x * torch.sigmoid(x), "input", ops=("swish", "swish_weighted")),
] + [r for n, r in _ROWS.items()
         if n not in ("relu", "relu6", "leaky_relu", "elu", "sigmoid", "tanh", "silu")])

BY_NAME = {a.name: a for a in ACTIVATIONS}

# Softmax rows: reductions along a dim, not elementwise, so they live apart from
# ACTIVATIONS (which the elementwise tests iterate); ALL has both.
SOFTMAX = (
    Activation("softmax", FA.softmax, torch.softmax, M.Softmax, nn.Softmax,
               (Setting("dim-1", lambda x: {"dim": -1}),),
               lambda x: torch.exp(x) / torch.exp(x).sum(-1, keepdim=True), "output",
               module_kwargs={"dim": -1}, ops=("softmax",)),
    Activation("log_softmax", FA.log_softmax, torch.log_softmax, M.LogSoftmax, nn.LogSoftmax,
               (Setting("dim-1", lambda x: {"dim": -1}),),
               lambda x: x - torch.log(torch.exp(x).sum(-1, keepdim=True)), "output",
               module_kwargs={"dim": -1}, ops=("softmax",)),
)

ALL = ACTIVATIONS + SOFTMAX


def maxout_reference(x, pieces, dim=1):
    """torch's maxout: the max over groups of `pieces` consecutive entries along dim."""
    d = dim % x.dim()
    return x.unflatten(d, (-1, pieces)).amax(d + 1)


def _maxout_composite(x, pieces, dim=1):
    """A tutorial's maxout: torch.max over the pieces (values and indices)."""
    d = dim % x.dim()
    return x.unflatten(d, (-1, pieces)).max(d + 1).values


# Maxout changes the shape (dim shrinks by `pieces`) and replaces no torch.nn class, so it
# lives apart from ALL (whose tests compare same-shape outputs and convert() entries);
# its own tests (tests/test_maxout.py) and bench rows use this.  Settings: the benchmark's
# layouts, dim 1 of an NCHW tensor and the last dim, 2 and 4 pieces.
MAXOUT = (
    Activation("maxout", FA.maxout, maxout_reference, M.Maxout, None,
               tuple(Setting(f"pieces{p}_{where}", (lambda p, d: lambda x: {"pieces": p, "dim": d})(p, d))
                     for where, d in (("dim1", 1), ("last", -1)) for p in (2, 4)),
               _maxout_composite, "mask", module_kwargs={"pieces": 2}, ops=("maxout",)),
)
# The gated activations (fused_act/_table.py's GATED_ROWS): a, b = input.chunk(2, dim).
# Their backward keeps the input.  reference: torch's composition (F.glu, F.silu(a) * b,
# ...), the torch side of the tests and the benchmark.
GATED = tuple(
    Activation(row.name, getattr(FA, row.name), row.torch_function, getattr(M, row.module),
               row.torch_module, row.settings, row.composite, "input",
               module_kwargs=row.module_kwargs, exact=row.exact, ops=row.ops, gated=True)
    for row in _table.GATED_ROWS)

GATED_BY_NAME = {a.name: a for a in GATED}
