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

from . import functional as FA

_ops = torch.ops.fused_act


class ReLU(nn.ReLU):
    def forward(self, input):
        if torch.jit.is_scripting():
            if self.inplace:
                _ops.relu_(input, 0.0)
                return input
            return _ops.relu(input, 0.0)
        return FA.relu(input, inplace=self.inplace)


class ReLU6(nn.ReLU6):
    def forward(self, input):
        if torch.jit.is_scripting():
            if self.inplace:
                _ops.relu6_(input, 0.0)
                return input
            return _ops.relu6(input, 0.0)
        return FA.relu6(input, inplace=self.inplace)


class LeakyReLU(nn.LeakyReLU):
    def forward(self, input):
        if torch.jit.is_scripting():
            if self.inplace:
                _ops.leaky_relu_(input, self.negative_slope)
                return input
            return _ops.leaky_relu(input, self.negative_slope)
        return FA.leaky_relu(input, self.negative_slope, self.inplace)


class PReLU(nn.PReLU):
    def forward(self, input):
        if torch.jit.is_scripting():
            return _ops.prelu(input, self.weight)
        return FA.prelu(input, self.weight)


class ELU(nn.ELU):
    def forward(self, input):
        if torch.jit.is_scripting():
            if self.inplace:
                _ops.elu_(input, self.alpha)
                return input
            return _ops.elu(input, self.alpha)
        return FA.elu(input, self.alpha, self.inplace)


class Sigmoid(nn.Sigmoid):
    def forward(self, input):
        if torch.jit.is_scripting():
            return _ops.sigmoid(input, 0.0)
        return FA.sigmoid(input)


class Tanh(nn.Tanh):
    def forward(self, input):
        if torch.jit.is_scripting():
            return _ops.tanh(input, 0.0)
        return FA.tanh(input)


class SiLU(nn.SiLU):
    def forward(self, input):
        if torch.jit.is_scripting():
            if self.inplace:
                _ops.swish_(input, 1.0)
                return input
            return _ops.swish(input, 1.0)
        return FA.silu(input, inplace=self.inplace)


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
            return _ops.swish(input, beta)
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


__all__ = ["ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "Sigmoid", "Tanh", "SiLU", "Swish",
           "Softmax", "LogSoftmax"]
