"""fused_act: fused forward/backward activation kernels for PyTorch (CPU SIMD and CUDA).

    import fused_act
    model = fused_act.convert(model)        # swap nn.ReLU, nn.SiLU, nn.Softmax, ... for fused ones
    y = fused_act.functional.silu(x)        # or call the functions directly
"""
from . import autograd, functional
from ._ops import built_with_cuda, ops
from .convert import convert, register_converter
from .modules import (ELU, LeakyReLU, LogSoftmax, PReLU, ReLU, ReLU6, SiLU, Sigmoid, Softmax,
                      Swish, Tanh)

__version__ = "0.1.0"


def cpu_capability() -> str:
    """The instruction set of the CPU kernels in use: 'avx512', 'avx2' or 'baseline'."""
    return ops.cpu_capability()


def set_cpu_capability(name: str) -> None:
    """Use the CPU kernels of a lower instruction set ('avx2', 'baseline') or go back to
    'avx512'; the environment variable FUSED_ACT_CPU_CAPABILITY sets it at start."""
    ops.set_cpu_capability(name)


def backends() -> dict:
    """What this build of fused_act can run on."""
    import torch

    return {
        "cpu": True,
        "cpu_capability": cpu_capability(),
        "cuda_built": built_with_cuda(),
        "cuda_available": built_with_cuda() and torch.cuda.is_available(),
    }


__all__ = [
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "Sigmoid", "Tanh", "SiLU", "Swish",
    "Softmax", "LogSoftmax",
    "autograd", "functional", "convert", "register_converter", "backends", "cpu_capability",
    "set_cpu_capability", "built_with_cuda", "__version__",
]
