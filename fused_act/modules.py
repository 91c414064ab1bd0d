"""nn.Module drop-ins.  Each subclasses the torch.nn class it replaces, so constructor
arguments, defaults, attributes, ``extra_repr``, state_dict keys and isinstance checks
are torch's; only ``forward`` runs the fused kernels."""
import torch
from torch import nn

from . import functional as FA


class ReLU(nn.ReLU):
    def forward(self, input):
        return FA.relu(input, inplace=self.inplace)


class ReLU6(nn.ReLU6):
    def forward(self, input):
        return FA.relu6(input, inplace=self.inplace)


class LeakyReLU(nn.LeakyReLU):
    def forward(self, input):
        return FA.leaky_relu(input, self.negative_slope, self.inplace)


class PReLU(nn.PReLU):
    def forward(self, input):
        return FA.prelu(input, self.weight)


class ELU(nn.ELU):
    def forward(self, input):
        return FA.elu(input, self.alpha, self.inplace)


class Sigmoid(nn.Sigmoid):
    def forward(self, input):
        return FA.sigmoid(input)


class Tanh(nn.Tanh):
    def forward(self, input):
        return FA.tanh(input)


class SiLU(nn.SiLU):
    def forward(self, input):
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
        return FA.swish(input, self.beta)

    def extra_repr(self):
        beta = self.beta.item() if isinstance(self.beta, torch.Tensor) else self.beta
        return f"beta={beta}, trainable={self.trainable}"


class Softmax(nn.Softmax):
    def forward(self, input):
        return FA.softmax(input, self.dim, _stacklevel=5)  # as nn.Softmax does


class LogSoftmax(nn.LogSoftmax):
    def forward(self, input):
        return FA.log_softmax(input, self.dim, _stacklevel=5)  # as nn.LogSoftmax does


__all__ = ["ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "Sigmoid", "Tanh", "SiLU", "Swish",
           "Softmax", "LogSoftmax"]
