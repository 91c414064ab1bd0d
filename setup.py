"""Build fused_act's compiled operators (fused_act._C).

CUDA kernels are built whenever a CUDA toolkit (nvcc) and a CUDA-enabled torch are
present -- a GPU is not needed to build them.  Switches (environment variables):

  FUSED_ACT_CUDA=1|0     force (fail if impossible) or skip the CUDA kernels;
                         unset: build them when possible.
  TORCH_CUDA_ARCH_LIST   GPU architectures, e.g. "9.0" or "8.0;9.0+PTX".  When unset and
                         no GPU is visible, fused_act builds for "8.0;9.0+PTX".
  MAX_JOBS               parallel compile jobs (ninja).
  CUDA_HOME              the CUDA toolkit to use (default: the one nvcc is found in).
"""
import os
import platform
import shutil
import sys

from setuptools import setup



def _locate_cuda_home():
    """torch guesses CUDA_HOME from nvcc's folder, which is wrong when nvcc on PATH is a
    wrapper script; pick the toolkit folder that really holds the headers."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    for home in candidates:
        if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")) and os.path.exists(
                os.path.join(home, "bin", "nvcc")):
            os.environ["CUDA_HOME"] = home
            return


_locate_cuda_home()

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _flag(name):
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    sys.exit(f"setup.py: {name}={value!r} is not one of 1/0/true/false/auto")


def _want_cuda():
    forced = _flag("FUSED_ACT_CUDA")
    have_toolkit = cpp_extension.CUDA_HOME is not None and (
        shutil.which("nvcc") or os.path.exists(os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"))
    )
    have_torch_cuda = torch.version.cuda is not None
    if forced is False:
        return False
    if forced is True and not (have_toolkit and have_torch_cuda):
        why = "no CUDA toolkit (nvcc) was found" if not have_toolkit else (
            f"torch {torch.__version__} is a CPU-only build")
        sys.exit(f"setup.py: FUSED_ACT_CUDA=1 but {why}")
    return bool(have_toolkit and have_torch_cuda)


def _sources(with_cuda):
    src = ["csrc/ops.cpp", "csrc/autograd.cpp", "csrc/python_module.cpp",
           "csrc/cpu/elementwise.cpp", "csrc/cpu/softmax.cpp",
           "csrc/cpu/capability_default.cpp"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        src += ["csrc/cpu/capability_avx2.cpp", "csrc/cpu/capability_avx512.cpp"]
    if with_cuda:
        src += ["csrc/cuda/register.cpp", "csrc/cuda/elementwise.cu",
                "csrc/cuda/softmax.cu"]
    return src


def _extension():
    with_cuda = _want_cuda()
    cxx = ["-O3", "-fopenmp", "-Wno-psabi"]
    define_macros = []
    kwargs = dict(extra_link_args=["-fopenmp"])
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
        define_macros.append(("FA_WITH_CUDA", None))
        nvcc = ["-O3", "-lineinfo", "-DFA_WITH_CUDA"]
        print(f"fused_act: building CPU and CUDA kernels "
              f"(CUDA_HOME={cpp_extension.CUDA_HOME}, torch CUDA {torch.version.cuda}, "
              f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST')})")
        return CUDAExtension("fused_act._C", _sources(True), define_macros=define_macros,
                             extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)
    print("fused_act: building CPU kernels only")
    return CppExtension("fused_act._C", _sources(False), define_macros=define_macros,
                        extra_compile_args={"cxx": cxx}, **kwargs)


# Metadata lives in pyproject.toml.
setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
    zip_safe=False,
)
