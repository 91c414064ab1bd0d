"""The elementwise activations, one row each: the single Python source of each one.

From a row, fused_act builds the functional form (``functional.py``: torch's signature and
defaults, the fast eager entry point, the fallback to torch for other dtypes and layouts),
the ``nn.Module`` (``modules.py``: a subclass of the torch.nn class it replaces, with a
TorchScript branch), the ``convert()`` / ``unconvert()`` entries (``convert.py``), and the
tests' and benchmark's parametrization (``table.py``).  The math of each operator, and what
its backward saves, lives once in ``csrc/activations.h``.  Adding an activation there and a
row here is all it takes.

Every operator of the table takes two scalar parameters (p, q) (its schema:
``NAME(Tensor x, float p, float q)``); a row says what each one is: the name of one of
torch's arguments, or a constant (the one-parameter activations leave q at 0.0).

The operators with a learnable tensor (prelu, swish with a tensor beta) and the softmax are
written by hand: their signatures are not this shape.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Setting:
    """One way to call an activation in the tests and the benchmark: its id and a function
    of the input giving the keyword arguments (tensors such as PReLU's weight are built to
    match the input)."""

    id: str
    kwargs: Callable[[torch.Tensor], Dict] = field(default=lambda x: {})


@dataclass(frozen=True)
class Row:
    name: str                         # fused_act.functional.<name>
    module: str                       # fused_act.<module>
    # The C++ operator (csrc/activations.h), or (param, {value: operator}) when a string
    # parameter picks one (GELU's approximate).
    op: Union[str, Tuple[str, Dict[str, str]]]
    torch_function: Callable          # torch's own: fallback for other inputs, and reference
    torch_module: Optional[type]      # the torch.nn class the module subclasses and replaces
    params: Tuple[Tuple[str, object], ...] = ()  # (name, default) after `input`, as torch's
    p: Union[str, float] = 0.0        # the operator's parameter: a param's name or a constant
    q: Union[str, float] = 0.0        # its second parameter (softplus, hardtanh): the same
    inplace: bool = False             # has an ``inplace`` flag
    inplace_alias: bool = False       # has a NAME_ function (as torch.nn.functional)
    promote_integers: bool = False    # integer inputs run in the default float dtype (torch's)
    doc: str = ""
    # For the tests and the benchmark:
    settings: Tuple[Setting, ...] = (Setting("default"),)
    composite: Optional[Callable] = None  # the composition a tutorial would write
    # The float64 truth, where torch's own float64 result is not one (it cancels).
    exact: Optional[Callable] = None
    module_kwargs: Dict = field(default_factory=dict)  # a non-default module config

    @property
    def ops(self) -> Tuple[str, ...]:
        """Every C++ operator the row can call."""
        return tuple(self.op[1].values()) if isinstance(self.op, tuple) else (self.op,)


def _relu_squared(input: torch.Tensor) -> torch.Tensor:
    return F.relu(input) ** 2


def _gelu_exact(x, approximate="none"):
    if approximate == "tanh":  # x * sigmoid(2u) does not cancel where 1 + tanh(u) does
        return x * torch.sigmoid(2 * 0.7978845608028654 * (x + 0.044715 * x ** 3))
    return x * 0.5 * torch.special.erfc(-x * 0.7071067811865476)


def _hardsigmoid_exact(x, inplace=False):
    # torch's float64 backward multiplies by float32's 1/6
    inside = (x > -3) & (x < 3)
    outside = torch.where(x.isnan(), x.detach(), (x >= 3).to(x.dtype))  # NaN: NaN, gradient 0
    return torch.where(inside, (x + 3) / 6, outside)


class _EluExact(torch.autograd.Function):
    """alpha * (exp(x * s) - 1) for x <= 0 (ELU: s = 1, CELU: s = 1/alpha) in float64, with
    an accurate derivative, as the truth the tests measure against: torch 2.4's float64 ELU
    computes exp(x) - 1 (ELU(-1e-20) = 0), torch's float64 CELU backward takes 1/alpha in
    float32, and autograd's expm1 backward, grad * (expm1(z) + 1), cancels for large
    negative z."""

    @staticmethod
    def forward(x, alpha, s):
        return torch.where(x > 0, x, alpha * torch.expm1(x * s))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, alpha, s = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        ctx.alpha, ctx.s = alpha, s

    @staticmethod
    def jvp(ctx, x_t, *_):
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, x_t, x_t * (ctx.alpha * ctx.s) * torch.exp(x * ctx.s))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        d = grad * (ctx.alpha * ctx.s) * torch.exp(x * ctx.s)
        return torch.where(x > 0, grad, d), None, None


def _elu_exact(x, alpha=1.0, inplace=False):
    return _EluExact.apply(x, alpha, 1.0)


def _celu_exact(x, alpha=1.0, inplace=False):
    return _EluExact.apply(x, alpha, 1.0 / alpha)


def _tanh_composite(x):
    return (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x))


ROWS = (
    Row("relu", "ReLU", "relu", F.relu, nn.ReLU, inplace=True, inplace_alias=True,
        composite=lambda x: x * (x > 0).to(x.dtype)),
    Row("relu6", "ReLU6", "relu6", F.relu6, nn.ReLU6, inplace=True,
        composite=lambda x: torch.minimum(torch.maximum(x, torch.zeros_like(x)),
                                          torch.full_like(x, 6.0))),
    Row("leaky_relu", "LeakyReLU", "leaky_relu", F.leaky_relu, nn.LeakyReLU,
        params=(("negative_slope", 0.01),), p="negative_slope", inplace=True,
        inplace_alias=True,
        settings=(Setting("default"), Setting("slope0.2", lambda x: {"negative_slope": 0.2}),
                  Setting("slope-0.3", lambda x: {"negative_slope": -0.3})),
        composite=lambda x: torch.where(x > 0, x, 0.01 * x),
        module_kwargs={"negative_slope": 0.2}),
    Row("elu", "ELU", "elu", F.elu, nn.ELU, params=(("alpha", 1.0),), p="alpha",
        inplace=True, inplace_alias=True,
        settings=(Setting("default"), Setting("alpha0.5", lambda x: {"alpha": 0.5}),
                  Setting("alpha-0.7", lambda x: {"alpha": -0.7})),
        composite=lambda x: torch.where(x > 0, x, torch.exp(x) - 1), exact=_elu_exact,
        module_kwargs={"alpha": 0.5}),
    Row("sigmoid", "Sigmoid", "sigmoid", torch.sigmoid, nn.Sigmoid, promote_integers=True,
        composite=lambda x: 1 / (1 + torch.exp(-x))),
    Row("tanh", "Tanh", "tanh", torch.tanh, nn.Tanh, promote_integers=True,
        composite=_tanh_composite),
    Row("silu", "SiLU", "swish", F.silu, nn.SiLU, p=1.0, inplace=True,
        composite=lambda x: x * torch.sigmoid(x)),
    Row("gelu", "GELU", ("approximate", {"none": "gelu", "tanh": "gelu_tanh"}), F.gelu,
        nn.GELU, params=(("approximate", "none"),),
        doc="x * Phi(x), Phi the standard normal CDF (approximate='none'), or "
            "x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) / 2 (approximate='tanh').",
        settings=(Setting("default"), Setting("tanh", lambda x: {"approximate": "tanh"})),
        composite=lambda x: x * 0.5 * (1 + torch.erf(x * 0.7071067811865476)),
        exact=_gelu_exact, module_kwargs={"approximate": "tanh"}),
    Row("mish", "Mish", "mish", F.mish, nn.Mish, inplace=True,
        doc="x * tanh(softplus(x)).",
        composite=lambda x: x * torch.tanh(torch.log1p(torch.exp(x)))),
    Row("hardswish", "Hardswish", "hardswish", F.hardswish, nn.Hardswish, inplace=True,
        doc="x * relu6(x + 3) / 6.",
        composite=lambda x: x * torch.clamp(x + 3, 0, 6) / 6),
    Row("hardsigmoid", "Hardsigmoid", "hardsigmoid", F.hardsigmoid, nn.Hardsigmoid,
        inplace=True, doc="relu6(x + 3) / 6.",
        composite=lambda x: torch.clamp(x + 3, 0, 6) / 6, exact=_hardsigmoid_exact),
    Row("selu", "SELU", "selu", F.selu, nn.SELU, inplace=True, inplace_alias=True,
        doc="scale * (x > 0 ? x : alpha * (exp(x) - 1)), torch's alpha and scale.",
        composite=lambda x: 1.0507009873554805 * torch.where(
            x > 0, x, 1.6732632423543772 * (torch.exp(x) - 1))),
    Row("celu", "CELU", "celu", F.celu, nn.CELU, params=(("alpha", 1.0),), p="alpha",
        inplace=True, inplace_alias=True,
        doc="x > 0 ? x : alpha * (exp(x / alpha) - 1).",
        settings=(Setting("default"), Setting("alpha0.5", lambda x: {"alpha": 0.5}),
                  Setting("alpha-0.7", lambda x: {"alpha": -0.7})),
        composite=lambda x: torch.where(x > 0, x, torch.exp(x) - 1), exact=_celu_exact,
        module_kwargs={"alpha": 0.5}),
    Row("relu_squared", "ReLUSquared", "relu_squared", _relu_squared, None,
        doc="relu(x) ** 2 (squared ReLU: Primer, Nemotron).",
        composite=lambda x: torch.where(x > 0, x * x, torch.zeros_like(x))),
    Row("softplus", "Softplus", "softplus", F.softplus, nn.Softplus,
        params=(("beta", 1.0), ("threshold", 20.0)), p="beta", q="threshold",
        doc="x * beta > threshold ? x : log(1 + exp(x * beta)) / beta.",
        settings=(Setting("default"),
                  Setting("beta2_threshold5", lambda x: {"beta": 2.0, "threshold": 5.0}),
                  Setting("beta0.5", lambda x: {"beta": 0.5})),
        composite=lambda x: torch.log1p(torch.exp(x)),
        module_kwargs={"beta": 2.0, "threshold": 5.0}),
    Row("hardtanh", "Hardtanh", "hardtanh", F.hardtanh, nn.Hardtanh,
        params=(("min_val", -1.0), ("max_val", 1.0)), p="min_val", q="max_val", inplace=True,
        inplace_alias=True, doc="min(max(x, min_val), max_val).",
        settings=(Setting("default"),
                  Setting("min-2_max3", lambda x: {"min_val": -2.0, "max_val": 3.0}),
                  Setting("min0.25_max0.5", lambda x: {"min_val": 0.25, "max_val": 0.5})),
        composite=lambda x: torch.clamp(x, -1.0, 1.0),
        module_kwargs={"min_val": -2.0, "max_val": 3.0}),
)

BY_NAME = {r.name: r for r in ROWS}


# ---- gated activations: a, b = input.chunk(2, dim); out = act(a) * b (glu: a * sigmoid(b))
# Their operators (csrc/gated.h, FA_FOR_EACH_GATED) take (x, dim): from a row, fused_act
# builds the functional form NAME(input, dim=-1, <params>), the module (with ``dim`` and
# the params), the converter entry (nn.GLU) and the tests' and benchmark's rows.

@dataclass(frozen=True)
class GatedRow:
    name: str                         # fused_act.functional.<name>
    module: str                       # fused_act.<module>
    op: Union[str, Tuple[str, Dict[str, str]]]  # as Row.op
    # torch's own: torch_function(input, dim, **params): fallback and reference
    torch_function: Callable
    torch_module: Optional[type]      # the torch.nn class it subclasses and replaces (nn.GLU)
    params: Tuple[Tuple[str, object], ...] = ()  # (name, default) after `dim`
    doc: str = ""
    settings: Tuple[Setting, ...] = (Setting("default"),)
    composite: Optional[Callable] = None  # the composition a tutorial would write (x -> y)
    exact: Optional[Callable] = None      # the float64 truth where torch's cancels
    module_kwargs: Dict = field(default_factory=dict)  # a non-default module config

    @property
    def ops(self) -> Tuple[str, ...]:
        return tuple(self.op[1].values()) if isinstance(self.op, tuple) else (self.op,)


def _glu(input, dim=-1):
    return F.glu(input, dim)


def _glu_exact(input, dim=-1):
    # sigmoid(b) = exp(-softplus(-b)): its autograd derivative, exp(-softplus(-b)) *
    # sigmoid(-b), keeps its precision where sigmoid(b) rounds to 1 (torch's float64 glu
    # gives 0 for b > 36.7, where the answer is about exp(-b))
    a, b = input.chunk(2, dim)
    return a * torch.exp(-F.softplus(-b))


def _swiglu(input, dim=-1):
    a, b = input.chunk(2, dim)
    return F.silu(a) * b


def _geglu(input, dim=-1, approximate="none"):
    a, b = input.chunk(2, dim)
    return F.gelu(a, approximate=approximate) * b


def _geglu_exact(input, dim=-1, approximate="none"):
    a, b = input.chunk(2, dim)
    return _gelu_exact(a, approximate) * b


def _reglu(input, dim=-1):
    a, b = input.chunk(2, dim)
    return F.relu(a) * b


def _halves(x):
    return x.chunk(2, -1)


GATED_ROWS = (
    GatedRow("glu", "GLU", "glu", _glu, nn.GLU,
             doc="a * sigmoid(b), where a, b = input.chunk(2, dim) (torch.nn.functional.glu).",
             composite=lambda x: _halves(x)[0] * torch.sigmoid(_halves(x)[1]),
             exact=_glu_exact, module_kwargs={"dim": 0}),
    GatedRow("swiglu", "SwiGLU", "swiglu", _swiglu, None,
             doc="silu(a) * b, where a, b = input.chunk(2, dim).",
             composite=lambda x: _halves(x)[0] * torch.sigmoid(_halves(x)[0]) * _halves(x)[1],
             module_kwargs={"dim": 0}),
    GatedRow("geglu", "GeGLU", ("approximate", {"none": "geglu", "tanh": "geglu_tanh"}), _geglu,
             None, params=(("approximate", "none"),),
             doc="gelu(a, approximate) * b, where a, b = input.chunk(2, dim).",
             settings=(Setting("default"), Setting("tanh", lambda x: {"approximate": "tanh"})),
             composite=lambda x: (_halves(x)[0] * 0.5 * (1 + torch.erf(_halves(x)[0]
                                                                       * 0.7071067811865476))
                                  * _halves(x)[1]),
             exact=_geglu_exact, module_kwargs={"dim": 0, "approximate": "tanh"}),
    GatedRow("reglu", "ReGLU", "reglu", _reglu, None,
             doc="relu(a) * b, where a, b = input.chunk(2, dim).",
             composite=lambda x: torch.clamp(_halves(x)[0], min=0) * _halves(x)[1],
             module_kwargs={"dim": 0}),
)

GATED_BY_NAME = {r.name: r for r in GATED_ROWS}
