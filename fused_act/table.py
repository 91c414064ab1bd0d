"""The table of activations: one row per public activation, used by the tests (their
parametrization) and by bench/run.py (their rows).  A new activation appears in both as
soon as it has a row here."""
from dataclasses import dataclass, field
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import functional as FA
from . import modules as M


@dataclass(frozen=True)
class Setting:
    """One way to call an activation: its id and a function of the input giving the
    keyword arguments (tensors such as PReLU's weight are built to match the input)."""

    id: str
    kwargs: Callable[[torch.Tensor], Dict] = field(default=lambda x: {})


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


def _slopes(x, n):
    return torch.linspace(-0.2, 0.5, n, dtype=x.dtype, device=x.device)


def _swish_reference(x, beta=1.0):
    if isinstance(beta, torch.Tensor) and beta.numel() == 1:
        beta = beta.reshape(())  # one shared beta: the output keeps x's shape
    return x * torch.sigmoid(beta * x)


def _channels(x):
    return x.shape[1] if x.dim() >= 2 else 1


ACTIVATIONS = (
    Activation("relu", FA.relu, F.relu, M.ReLU, nn.ReLU, (Setting("default"),),
               lambda x: x * (x > 0).to(x.dtype), "output", inplace=True),
    Activation("relu6", FA.relu6, F.relu6, M.ReLU6, nn.ReLU6, (Setting("default"),),
               lambda x: torch.minimum(torch.maximum(x, torch.zeros_like(x)),
                                       torch.full_like(x, 6.0)), "output", inplace=True),
    Activation("leaky_relu", FA.leaky_relu, F.leaky_relu, M.LeakyReLU, nn.LeakyReLU,
               (Setting("default"), Setting("slope0.2", lambda x: {"negative_slope": 0.2}),
                Setting("slope-0.3", lambda x: {"negative_slope": -0.3})),
               lambda x: torch.where(x > 0, x, 0.01 * x), "output", inplace=True,
               module_kwargs={"negative_slope": 0.2}),
    Activation("prelu", FA.prelu, F.prelu, M.PReLU, nn.PReLU,
               (Setting("shared", lambda x: {"weight": torch.full((1,), 0.25, dtype=x.dtype,
                                                                  device=x.device)}),
                Setting("per_channel", lambda x: {"weight": _slopes(x, _channels(x))})),
               lambda x: torch.where(x > 0, x, 0.25 * x), "input",
               module_kwargs={"num_parameters": 1, "init": 0.1}),
    Activation("elu", FA.elu, F.elu, M.ELU, nn.ELU,
               (Setting("default"), Setting("alpha0.5", lambda x: {"alpha": 0.5}),
                Setting("alpha-0.7", lambda x: {"alpha": -0.7})),
               lambda x: torch.where(x > 0, x, torch.exp(x) - 1), "input", inplace=True,
               module_kwargs={"alpha": 0.5}),
    Activation("sigmoid", FA.sigmoid, torch.sigmoid, M.Sigmoid, nn.Sigmoid,
               (Setting("default"),), lambda x: 1 / (1 + torch.exp(-x)), "output"),
    Activation("tanh", FA.tanh, torch.tanh, M.Tanh, nn.Tanh, (Setting("default"),),
               lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
               "output"),
    Activation("silu", FA.silu, F.silu, M.SiLU, nn.SiLU, (Setting("default"),),
               lambda x: x * torch.sigmoid(x), "input", inplace=True),
    Activation("swish", FA.swish, _swish_reference, M.Swish,
               nn.SiLU,
               (Setting("default"), Setting("beta1.7", lambda x: {"beta": 1.7}),
                Setting("beta_tensor", lambda x: {"beta": torch.full((1,), 0.8, dtype=x.dtype,
                                                                     device=x.device)})),
               lambda x: x * torch.sigmoid(x), "input"),
)

BY_NAME = {a.name: a for a in ACTIVATIONS}

# Softmax rows: reductions along a dim, not elementwise, so they live apart from
# ACTIVATIONS (which the elementwise tests iterate); ALL has both.
SOFTMAX = (
    Activation("softmax", FA.softmax, torch.softmax, M.Softmax, nn.Softmax,
               (Setting("dim-1", lambda x: {"dim": -1}),),
               lambda x: torch.exp(x) / torch.exp(x).sum(-1, keepdim=True), "output",
               module_kwargs={"dim": -1}),
    Activation("log_softmax", FA.log_softmax, torch.log_softmax, M.LogSoftmax, nn.LogSoftmax,
               (Setting("dim-1", lambda x: {"dim": -1}),),
               lambda x: x - torch.log(torch.exp(x).sum(-1, keepdim=True)), "output",
               module_kwargs={"dim": -1}),
)

ALL = ACTIVATIONS + SOFTMAX
