"""fused_act.convert / unconvert: swap the torch.nn activation modules of a model for fused
ones, and back."""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Type

from torch import nn

from . import _table, _thirdparty
from . import modules as M

def _rebuild(cls, row, first=()):
    """A function building `cls` from a module of the row's other class, same settings (the
    settings are `first`, the row's params, plus inplace: attributes of the same names on
    both)."""
    names = (list(first) + [n for n, _ in row.params]
             + (["inplace"] if getattr(row, "inplace", False) else []))

    def build(m):
        return cls(**{n: getattr(m, n) for n in names})
    return build


# torch.nn class -> function building the fused module from the torch one, same settings;
# the table's rows (fused_act/_table.py), then the hand-written operators.
_CONVERTERS = {row.torch_module: _rebuild(getattr(M, row.module), row)
               for row in _table.ROWS if row.torch_module is not None}
# The gated rows (nn.GLU): the settings are ``dim`` and the row's params.
_CONVERTERS.update({row.torch_module: _rebuild(getattr(M, row.module), row, ("dim",))
                    for row in _table.GATED_ROWS if row.torch_module is not None})
_CONVERTERS.update({
    nn.PReLU: lambda m: _convert_prelu(m, M.PReLU),
    nn.Softmax: lambda m: M.Softmax(m.dim),
    nn.LogSoftmax: lambda m: M.LogSoftmax(m.dim),
})

# fused_act class -> function building the torch.nn module (the inverse of _CONVERTERS).
_UNCONVERTERS = {getattr(M, row.module): _rebuild(row.torch_module, row)
                 for row in _table.ROWS if row.torch_module is not None}
_UNCONVERTERS.update({getattr(M, row.module): _rebuild(row.torch_module, row, ("dim",))
                      for row in _table.GATED_ROWS if row.torch_module is not None})
_UNCONVERTERS.update({
    M.PReLU: lambda m: _convert_prelu(m, nn.PReLU),
    M.Softmax: lambda m: nn.Softmax(m.dim),
    M.LogSoftmax: lambda m: nn.LogSoftmax(m.dim),
    M.Swish: lambda m: nn.SiLU(),  # only Swish(1.0, trainable=False): see _unconvert_lookup
})

# The hooks of nn.Module: the new module takes the old one's (the same dictionaries, so hook
# handles taken on the old module still remove their hook).
_HOOK_ATTRS = ("_is_full_backward_hook", "_forward_hooks", "_forward_hooks_with_kwargs",
               "_forward_hooks_always_called", "_forward_pre_hooks",
               "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_state_dict_pre_hooks",
               "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def _convert_prelu(m, cls):
    new = cls(m.num_parameters, m.init, device=m.weight.device, dtype=m.weight.dtype)
    new.weight = m.weight  # the same Parameter: optimizer state and sharing are kept
    return new


def _swish_is_silu(m):
    return not m.trainable and float(m.beta) == 1.0


def register_converter(torch_cls, build):
    """Teach convert() another module class: build(old_module) -> new module.  Takes
    precedence over the built-in entries of third-party classes."""
    _CONVERTERS[torch_cls] = build


def _name(cls):
    module = cls.__module__
    if module.startswith("torch.nn"):
        return f"nn.{cls.__qualname__}"
    if module.startswith("fused_act"):
        return f"fused_act.{cls.__qualname__}"
    return f"{module}.{cls.__qualname__}"


@dataclass
class Replaced:
    """One module instance that was replaced, at every place (``paths``) it occupied."""
    old: Type[nn.Module]
    new: Type[nn.Module]
    paths: List[str] = field(default_factory=list)


@dataclass
class Kept:
    """One activation-like module instance left as it was, and why."""
    cls: Type[nn.Module]
    reason: str
    paths: List[str] = field(default_factory=list)


@dataclass
class ConversionReport:
    """What convert() or unconvert() did.  ``replaced`` and ``kept`` have one entry per
    module instance (a module used at several places is one entry with several paths;
    the model itself has the path "")."""
    replaced: List[Replaced] = field(default_factory=list)
    kept: List[Kept] = field(default_factory=list)

    def counts(self) -> Dict[Tuple[str, str], int]:
        """(old class, new class) -> number of module instances replaced."""
        out: Dict[Tuple[str, str], int] = {}
        for r in self.replaced:
            key = (_name(r.old), _name(r.new))
            out[key] = out.get(key, 0) + 1
        return out

    def __str__(self):
        lines = []
        for (old, new), n in sorted(self.counts().items()):
            places = sum(len(r.paths) for r in self.replaced
                         if (_name(r.old), _name(r.new)) == (old, new))
            lines.append(f"replaced {old} -> {new}: {n} module(s) at {places} place(s)")
        for k in self.kept:
            where = ", ".join(p or "<model>" for p in k.paths)
            lines.append(f"kept {_name(k.cls)} at {where}: {k.reason}")
        return "\n".join(lines) if lines else "nothing to replace"


def _transform(model: nn.Module, lookup: Callable) -> Tuple[nn.Module, ConversionReport]:
    """Replaces every module ``m`` for which ``lookup(m)`` gives a builder, at every place it
    occupies (every ``_modules`` slot of every module, not just the first one
    ``named_children`` lists); a module used at several places becomes one new module used
    at all of them."""
    report = ConversionReport()
    done: Dict[int, Tuple[nn.Module, nn.Module, Optional[object]]] = {}  # id -> old, new, entry
    walked = set()

    def replace(module, path):
        key = id(module)
        if key in done:
            _, new, entry = done[key]
            if entry is not None:
                entry.paths.append(path)
            return new
        build, reason = lookup(module)
        new, entry = module, None
        if build is not None:
            new = build(module)
            new.train(module.training)
            for attr in _HOOK_ATTRS:
                if hasattr(module, attr) and hasattr(new, attr):
                    setattr(new, attr, getattr(module, attr))
            entry = Replaced(type(module), type(new), [path])
            report.replaced.append(entry)
        elif reason is not None:
            entry = Kept(type(module), reason, [path])
            report.kept.append(entry)
        done[key] = (module, new, entry)  # keeps the old module alive: ids stay unique
        return new

    def walk(module, prefix):
        if id(module) in walked:  # a shared container: its slots are already done
            return
        walked.add(id(module))
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            path = prefix + name
            new = replace(child, path)
            if new is not child:
                module._modules[name] = new
            walk(new, path + ".")

    root = replace(model, "")
    walk(root, "")
    return root, report


_FUSED_CLASSES = tuple(getattr(M, name) for name in M.__all__)


def _convert_lookup(tables):
    """The lookup of convert(): torch.nn's classes and register_converter's first, then
    the third-party classes of ``tables`` (fused_act._thirdparty)."""
    rules = {}
    kept = {}
    for table in tables:
        rules.update(table.rules)
        kept.update(table.kept)
    known = set(_CONVERTERS) | set(rules)

    def lookup(module):
        cls = type(module)
        build = _CONVERTERS.get(cls)
        if build is not None:
            return build, None
        if cls in _FUSED_CLASSES:
            return None, None  # already fused
        rule = rules.get(cls)
        if rule is not None:
            reason = rule.check(module) if rule.check is not None else None
            return (rule.build, None) if reason is None else (None, reason)
        if cls in kept:
            return None, kept[cls]
        for known_cls in cls.__mro__[1:]:  # the nearest known base class
            if known_cls in known and not isinstance(module, _FUSED_CLASSES):
                return None, (f"a subclass of {_name(known_cls)}, not {_name(known_cls)} "
                              "itself: its behaviour may differ, so it is left to the user "
                              "(fused_act.register_converter teaches convert() a class)")
        if cls.__module__ == "torch.nn.modules.activation" and cls is not nn.MultiheadAttention:
            return None, "fused_act has no fused version of this activation"
        return None, None
    return lookup


def _unconvert_lookup(module):
    cls = type(module)
    build = _UNCONVERTERS.get(cls)
    if build is not None:
        if cls is M.Swish and not _swish_is_silu(module):
            beta = module.beta.item() if module.trainable else module.beta
            return None, (f"Swish(beta={beta}, trainable={module.trainable}) has no torch.nn "
                          "equivalent (only Swish(beta=1.0, trainable=False), nn.SiLU)")
        return build, None
    if cls in _FUSED_CLASSES:
        return None, f"{_name(cls)} has no torch.nn equivalent"
    if isinstance(module, _FUSED_CLASSES):
        return None, ("a subclass of a fused_act module, not the fused_act module itself: "
                      "left to the user")
    return None, None


def convert(model: nn.Module, *, report: bool = False):
    """Replaces every module whose class is exactly one of torch.nn's activations that
    fused_act has (ReLU, ReLU6, LeakyReLU, PReLU, ELU, Sigmoid, Tanh, SiLU, GELU, Mish,
    Hardswish, Hardsigmoid, SELU, CELU, Softplus, Hardtanh, Softmax, LogSoftmax, GLU, and the
    classes given to register_converter) with its fused_act equivalent, keeping its
    settings, its training mode, its hooks and (PReLU) its very weight Parameter.  Classes
    are matched exactly: nn.ReLU6, a subclass of nn.Hardtanh, becomes the fused ReLU6.

    Third-party activation classes that compute the same function are converted too, when
    their package is already imported (fused_act never imports it): transformers'
    (transformers.activations: GELUActivation -> GELU; NewGELUActivation,
    FastGELUActivation, AccurateGELUActivation, GELUTanh -> GELU('tanh');
    QuickGELUActivation -> Swish(1.702); SiLUActivation -> SiLU; MishActivation -> Mish;
    ReLUSquaredActivation -> ReLUSquared) and timm's (timm.layers: Swish, SwishMe -> SiLU;
    Mish, MishMe -> Mish; Sigmoid, Tanh (not in-place ones); HardSwish(Me) -> Hardswish;
    HardSigmoid(Me) -> Hardsigmoid; PReLU (its weight kept); GELU; GELUTanh -> GELU('tanh');
    QuickGELU -> Swish(1.702)), with their ``inplace``.  Their other activation classes
    (ClippedGELUActivation, HardMish, ...) are left alone and reported.  A class given to
    register_converter takes precedence.

    Every place a module occupies is converted: a module instance used several times (the
    same ``nn.ReLU()`` in several Sequential slots, or an attribute that a submodule also
    holds) becomes one fused module used at all those places, so sharing is kept.  Modules
    are changed in place; the model itself is replaced when it is an activation, so use the
    return value: ``model = fused_act.convert(model)``.  Converting twice changes nothing.

    Left alone: subclasses of the classes above (their forward may differ; teach
    convert() with register_converter), torch.nn activations without a fused version
    (nn.Softsign, nn.LogSigmoid, ...), and modules kept outside ``nn.Module``'s registry (plain
    lists or dicts of modules).

    With ``report=True`` returns ``(model, report)``: a ConversionReport whose ``replaced``
    lists each replaced module instance (old class, new class, every path where it sat),
    ``kept`` each activation-like module left alone with the reason, ``counts()`` the
    number per (old class, new class); ``print(report)`` gives a summary.
    """
    new, rep = _transform(model, _convert_lookup(_thirdparty.tables()))
    return (new, rep) if report else new


def unconvert(model: nn.Module, *, report: bool = False):
    """The inverse of convert(): every fused_act module becomes the torch.nn module with the
    same settings (fused_act.ReLU -> nn.ReLU, ..., PReLU keeping its weight Parameter,
    Swish(beta=1.0, trainable=False) -> nn.SiLU), at every place it occupies, with sharing,
    training mode and hooks kept.  A Swish with another beta, or a trainable one, has no
    torch.nn equivalent and stays (listed in the report's ``kept``), as does ReLUSquared.
    Third-party classes that convert() replaced come back as their torch.nn equivalent
    (transformers' GELUActivation as nn.GELU, timm's HardSwish as nn.Hardswish, ...): the
    same function, not the original class; QuickGELU's Swish(1.702) and ReLUSquared stay
    fused.  For a model of torch.nn activations, convert() followed by unconvert() gives a
    model with the original classes, outputs and state_dict.

    Changes the model in place and returns it (or the new module when the model itself is
    a fused activation); ``report=True`` returns ``(model, report)`` as convert() does."""
    new, rep = _transform(model, _unconvert_lookup)
    return (new, rep) if report else new


__all__ = ["convert", "unconvert", "register_converter", "ConversionReport"]
