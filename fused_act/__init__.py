"""fused_act: fused forward/backward activation kernels for PyTorch (CPU SIMD and CUDA).

    import fused_act
    model = fused_act.convert(model)        # swap nn.ReLU, nn.SiLU, nn.Softmax, ... for fused ones
    y = fused_act.functional.silu(x)        # or call the functions directly
"""
import operator
from typing import Optional

from . import autograd, functional
from ._ops import built_with_cuda, ops
from .convert import convert, register_converter, unconvert
from .onnx import onnx_translation_table
from . import modules as _modules
from .modules import *  # noqa: F401,F403  (ReLU, GELU, ..., Softmax: modules.__all__)

__version__ = "0.1.0"


def cpu_capability() -> str:
    """The instruction set of the CPU kernels in use: 'avx512', 'avx2' or 'baseline'."""
    return ops.cpu_capability()


def set_cpu_capability(name: str) -> None:
    """Use the CPU kernels of a lower instruction set ('avx2', 'baseline') or go back to
    'avx512'; the environment variable FUSED_ACT_CPU_CAPABILITY sets it at start."""
    ops.set_cpu_capability(name)


def nontemporal_threshold() -> int:
    """Bytes of traffic (read and written by one call) above which the CPU kernels write
    outputs with non-temporal stores, which skip reading each output line first.
    The default is 3/4 of the cache the call's threads get (each cache level's size times
    the share of the CPUs sharing it that the threads use): above it the output would leave
    the cache before it is read again."""
    return ops.nontemporal_threshold()


def set_nontemporal_threshold(nbytes: Optional[int]) -> None:
    """Set the threshold of nontemporal_threshold(); None restores the default."""
    if nbytes is None:
        ops.set_nontemporal_threshold(-1)
        return
    if isinstance(nbytes, bool):
        raise TypeError("fused_act.set_nontemporal_threshold: expected an integer number of "
                        "bytes or None, got a bool")
    try:
        value = operator.index(nbytes)
    except TypeError:
        raise TypeError(f"fused_act.set_nontemporal_threshold: expected an integer number of "
                        f"bytes or None, got {type(nbytes).__name__}") from None
    if not 0 <= value < 2**63:
        raise ValueError(f"fused_act.set_nontemporal_threshold: the number of bytes must be in "
                         f"[0, 2**63), got {value}")
    ops.set_nontemporal_threshold(value)


def backends() -> dict:
    """What this build of fused_act can run on, and what it was built with: the torch it
    was compiled against, the CUDA toolkit and GPU architectures compiled in (None where
    the build has no CUDA kernels), the CPU kernels compiled in.  Build facts are None
    where the library was built without setup.py's record of them."""
    import torch

    from ._build import build_info

    info = build_info() or {}
    return {
        "cpu": True,
        "cpu_capability": cpu_capability(),
        "cpu_kernels": info.get("cpu_kernels"),
        "cpu_nontemporal_threshold": nontemporal_threshold(),
        "cuda_built": built_with_cuda(),
        "cuda_available": built_with_cuda() and torch.cuda.is_available(),
        "cuda_toolkit": info.get("cuda_toolkit"),
        "cuda_arch_list": info.get("cuda_arch_list"),
        "cuda_gencode": info.get("cuda_gencode"),
        "torch_built_against": info.get("torch_build"),
        "torch_running": torch.__version__,
        "debug_build": info.get("debug"),
    }


__all__ = list(_modules.__all__) + [
    "autograd", "functional", "convert", "unconvert", "register_converter",
    "onnx_translation_table", "backends", "cpu_capability",
    "set_cpu_capability", "nontemporal_threshold", "set_nontemporal_threshold", "built_with_cuda",
    "__version__",
]
