"""fused_act.convert: swap the torch.nn activation modules of a model for fused ones."""
from torch import nn

from . import modules as M

# torch.nn class -> function building the fused module from the torch one, same settings.
_CONVERTERS = {
    nn.ReLU: lambda m: M.ReLU(inplace=m.inplace),
    nn.ReLU6: lambda m: M.ReLU6(inplace=m.inplace),
    nn.LeakyReLU: lambda m: M.LeakyReLU(m.negative_slope, inplace=m.inplace),
    nn.ELU: lambda m: M.ELU(m.alpha, inplace=m.inplace),
    nn.Sigmoid: lambda m: M.Sigmoid(),
    nn.Tanh: lambda m: M.Tanh(),
    nn.SiLU: lambda m: M.SiLU(inplace=m.inplace),
    nn.PReLU: lambda m: _convert_prelu(m),
    nn.Softmax: lambda m: M.Softmax(m.dim),
    nn.LogSoftmax: lambda m: M.LogSoftmax(m.dim),
}


def _convert_prelu(m):
    new = M.PReLU(m.num_parameters, m.init, device=m.weight.device, dtype=m.weight.dtype)
    new.weight = m.weight  # the same Parameter: optimizer state and sharing are kept
    return new


def register_converter(torch_cls, build):
    """Teach convert() another module class: build(old_module) -> new module."""
    _CONVERTERS[torch_cls] = build


def convert(model: nn.Module) -> nn.Module:
    """Replaces, in place, every module whose class is exactly one of torch.nn's
    activations (ReLU, ReLU6, LeakyReLU, PReLU, ELU, Sigmoid, Tanh, SiLU, Softmax,
    LogSoftmax, ...) with its
    fused_act equivalent, keeping settings, parameters and training mode.  Returns the
    model (or the converted module, when ``model`` itself is an activation)."""
    build = _CONVERTERS.get(type(model))
    if build is not None:
        new = build(model)
        new.train(model.training)
        return new
    for name, child in list(model.named_children()):
        new = convert(child)
        if new is not child:
            setattr(model, name, new)
    return model
