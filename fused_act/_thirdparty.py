"""The activation classes of other packages that compute exactly one of fused_act's
functions, for convert().

fused_act never imports these packages: a table is built only when convert() finds the
package's module already in ``sys.modules`` (a model holding transformers' or timm's
activation modules has imported it), and is rebuilt if the module object changes.

Each class was checked against its source (formula and constants):

transformers.activations
    GELUActivation (``F.gelu`` or ``_gelu_python``, x/2 (1 + erf(x/sqrt 2)))  -> GELU()
    NewGELUActivation, AccurateGELUActivation (sqrt(2/pi) as its constant),
    GELUTanh / PytorchGELUTanh (``F.gelu(approximate='tanh')`` or its Python form)
        -> GELU(approximate='tanh')
    FastGELUActivation (x (1 + 0.044715 x^2) times 0.7978845608, sqrt(2/pi) to 10 digits:
        3.6e-12 relative, far below float32 rounding)                       -> GELU('tanh')
    QuickGELUActivation (x sigmoid(1.702 x))                                 -> Swish(1.702)
    SiLUActivation                                                            -> SiLU()
    MishActivation (``F.mish`` or ``_mish_python``)                           -> Mish()
    ReLUSquaredActivation (relu(x)^2)                                         -> ReLUSquared()
timm.layers.activations
    Swish(inplace) -> SiLU(inplace); Mish -> Mish() (timm's never works in place);
    Sigmoid, Tanh -> Sigmoid(), Tanh() (not in-place ones: the fused modules have no
    in-place form); HardSwish(inplace), HardSigmoid(inplace) -> Hardswish, Hardsigmoid
    (same inplace); PReLU -> PReLU (its weight Parameter kept); GELU -> GELU();
    GELUTanh -> GELU('tanh'); QuickGELU -> Swish(1.702)
timm.layers.activations_me (the memory-efficient autograd versions)
    SwishMe -> SiLU(); MishMe -> Mish(); HardSwishMe -> Hardswish();
    HardSigmoidMe -> Hardsigmoid()

The gradients are the same, the kinks of the hard functions included, except at x = -3
and 3 for timm's HardSwishMe and HardSigmoidMe: their hand-written backward takes the
other one-sided derivative there (-0.5 and 1.5; 1/6) than torch's and fused_act's (0 and
1; 0).  The other module classes of these modules are reported as kept, with the reason.
"""
import functools
import math
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch.nn.functional as F
from torch import nn

from . import modules as M


@dataclass(frozen=True)
class Rule:
    """How to convert one third-party class: ``build(module)`` gives the fused module;
    ``check(module)``, when given, returns a reason to leave this instance alone (its
    settings make it another function) or None."""
    build: Callable[[nn.Module], nn.Module]
    check: Optional[Callable[[nn.Module], Optional[str]]] = None


@dataclass
class Table:
    rules: Dict[type, Rule]
    kept: Dict[type, str]  # classes of the package with no fused equivalent -> why


def _module_classes(mod):
    """The nn.Module classes defined in module ``mod`` (aliases of other modules' classes
    excluded)."""
    out = {}
    for name in dir(mod):
        obj = getattr(mod, name, None)
        if (isinstance(obj, type) and issubclass(obj, nn.Module)
                and obj.__module__ == mod.__name__):
            out[name] = obj
    return out


def _table(mod, rules: Dict[str, Rule], kept: Dict[str, str]) -> Table:
    """Rules and reasons by class name, for the classes ``mod`` has (versions differ);
    every other nn.Module class of ``mod`` is kept with a general reason."""
    classes = _module_classes(mod)
    table = Table({}, {})
    for name, rule in rules.items():
        if name in classes:
            table.rules[classes[name]] = rule
    for name, cls in classes.items():
        if cls not in table.rules:
            table.kept[cls] = kept.get(
                name, f"not one of the classes of {mod.__name__} that fused_act knows to "
                "compute the same function as one of its modules")
    return table


def _act_check(cls_name: str, accepted: Callable, methods: Tuple[str, ...], expected: str):
    """A check for transformers' classes that pick their function at construction and keep
    it as ``self.act``: the instance must hold one the class itself sets (``accepted(act)``
    or one of its own ``methods``); an instance without ``act`` runs the class's forward."""

    def check(m):
        if "act" not in vars(m):
            return None
        act = m.act
        if accepted(act):
            return None
        func = getattr(act, "__func__", None)
        if getattr(act, "__self__", None) is m and any(
                func is vars(cls).get(name) for cls in type(m).__mro__ for name in methods):
            return None
        return (f"its act is {act!r}, not {expected} that {cls_name} sets: "
                "another function, left alone")
    return check


def _is_gelu_tanh(act):
    return (isinstance(act, functools.partial) and act.func is F.gelu and not act.args
            and act.keywords == {"approximate": "tanh"})


def _accurate_gelu_check(m):
    c = getattr(m, "precomputed_constant", None)
    if c == math.sqrt(2 / math.pi):
        return None
    return f"its precomputed_constant is {c!r}, not sqrt(2/pi): another function, left alone"


def _transformers(mod) -> Table:
    gelu_tanh = Rule(lambda m: M.GELU(approximate="tanh"))
    return _table(mod, {
        "GELUActivation": Rule(lambda m: M.GELU(), _act_check(
            "GELUActivation", lambda a: a is F.gelu, ("_gelu_python",),
            "F.gelu or _gelu_python")),
        "NewGELUActivation": gelu_tanh,
        "FastGELUActivation": gelu_tanh,
        "AccurateGELUActivation": Rule(lambda m: M.GELU(approximate="tanh"),
                                       _accurate_gelu_check),
        "GELUTanh": Rule(lambda m: M.GELU(approximate="tanh"), _act_check(
            "GELUTanh", _is_gelu_tanh, ("_gelu_tanh_python",),
            "F.gelu(approximate='tanh') or _gelu_tanh_python")),
        "PytorchGELUTanh": Rule(lambda m: M.GELU(approximate="tanh"), _act_check(
            "PytorchGELUTanh", _is_gelu_tanh, ("_gelu_tanh_python",),
            "F.gelu(approximate='tanh') or _gelu_tanh_python")),
        "QuickGELUActivation": Rule(lambda m: M.Swish(1.702)),
        "SiLUActivation": Rule(lambda m: M.SiLU()),
        "MishActivation": Rule(lambda m: M.Mish(), _act_check(
            "MishActivation", lambda a: a is F.mish, ("_mish_python",),
            "F.mish or _mish_python")),
        "ReLUSquaredActivation": Rule(lambda m: M.ReLUSquared()),
    }, {
        "ClippedGELUActivation": "GELU clipped to [min, max]: fused_act has no fused version",
        "LinearActivation": "the identity: nothing to fuse",
        "LaplaceActivation": "fused_act has no fused version of this activation",
        "SqrtSoftplusActivation": "sqrt(softplus(x)): fused_act has no fused version",
        "XIELUActivation": "xIELU (learned alphas): fused_act has no fused version",
    })


def _not_inplace(name):
    def check(m):
        if getattr(m, "inplace", False):
            return (f"inplace=True: fused_act.{name} has no in-place form, and this module "
                    "overwrites its input")
        return None
    return check


def _prelu(m):
    from .convert import _convert_prelu  # convert imports this module
    return _convert_prelu(m, M.PReLU)


def _timm(mod) -> Table:
    no_fused = "fused_act has no fused version of this activation"
    return _table(mod, {
        "Swish": Rule(lambda m: M.SiLU(inplace=m.inplace)),
        "Mish": Rule(lambda m: M.Mish()),
        "Sigmoid": Rule(lambda m: M.Sigmoid(), _not_inplace("Sigmoid")),
        "Tanh": Rule(lambda m: M.Tanh(), _not_inplace("Tanh")),
        "HardSwish": Rule(lambda m: M.Hardswish(inplace=m.inplace)),
        "HardSigmoid": Rule(lambda m: M.Hardsigmoid(inplace=m.inplace)),
        "PReLU": Rule(_prelu),
        "GELU": Rule(lambda m: M.GELU()),
        "GELUTanh": Rule(lambda m: M.GELU(approximate="tanh")),
        "QuickGELU": Rule(lambda m: M.Swish(1.702)),
    }, {"HardMish": no_fused})


def _timm_me(mod) -> Table:
    return _table(mod, {
        "SwishMe": Rule(lambda m: M.SiLU()),
        "MishMe": Rule(lambda m: M.Mish()),
        "HardSwishMe": Rule(lambda m: M.Hardswish()),
        "HardSigmoidMe": Rule(lambda m: M.Hardsigmoid()),
    }, {"HardMishMe": "fused_act has no fused version of this activation"})


# Module name in sys.modules -> function building its table.
PACKAGES = {
    "transformers.activations": _transformers,
    "timm.layers.activations": _timm,
    "timm.layers.activations_me": _timm_me,
}

_cache: Dict[str, Tuple[object, Table]] = {}


def tables() -> List[Table]:
    """The tables of the modules of PACKAGES that are imported now (none is imported
    here)."""
    out = []
    for name, make in PACKAGES.items():
        mod = sys.modules.get(name)
        if mod is None:
            continue
        cached = _cache.get(name)
        if cached is None or cached[0] is not mod:
            cached = _cache[name] = (mod, make(mod))
        out.append(cached[1])
    return out
