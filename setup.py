"""Build fused_act's compiled operators (fused_act._C).

fused_act compiles against the torch it will run with, so build it in the environment that
has that torch, without pip's build isolation:

    python -m pip install --no-build-isolation .        # or -e . for development

CUDA kernels are built whenever a CUDA toolkit (nvcc) and a CUDA-enabled torch are
present -- a GPU is not needed to build them.  Switches (environment variables):

  FUSED_ACT_CUDA=1|0     force (fail if impossible) or skip the CUDA kernels;
                         unset: build them when possible.
  TORCH_CUDA_ARCH_LIST   GPU architectures, e.g. "9.0+PTX" or "8.0;9.0+PTX".  When unset:
                         the visible GPUs' (torch adds PTX for the newest), or "8.0;9.0+PTX"
                         when no GPU is visible.
  FUSED_ACT_DEBUG=1      keep debug information (host -g, device -lineinfo); release
                         builds are stripped.
  MAX_JOBS               parallel compile jobs (ninja).
  CUDA_HOME              the CUDA toolkit to use (default: the one nvcc is found in).

The wheel requires the torch release it was compiled against (torch==X.Y.*), and the
build writes fused_act/_build_info.py, which fused_act checks before loading the library.
"""
import os
import platform
import re
import shutil
import subprocess
import sys

from setuptools import setup

# The oldest torch fused_act builds and runs with: torch.library.register_fake and
# torch.library.opcheck (Python side) first appear in 2.4.
MIN_TORCH = (2, 4)

_REBUILD_HINT = ("install the torch you want to run fused_act with first, then build "
                 "fused_act in that environment without build isolation:\n"
                 "    python -m pip install --no-build-isolation .\n"
                 "(see the README, 'Two commands on a fresh machine').")


def _fail(message):
    sys.exit(f"\nfused_act setup.py: {message}\n")


def _building_wheel_or_metadata():
    # A plain `python setup.py build_ext --inplace` needs no wheel machinery.
    return not set(sys.argv[1:]) <= {"build", "build_ext", "--inplace", "-i", "clean",
                                     "develop", "--force", "-f"}


def _check_bdist_wheel():
    """setuptools before 70.1 builds wheels (and pip's metadata) only with the separate
    `wheel` package; a Python 3.11 venv comes with setuptools 65.5 and no `wheel`, where
    --no-build-isolation would fail with "invalid command 'bdist_wheel'"."""
    for module in ("setuptools.command.bdist_wheel", "wheel.bdist_wheel"):
        try:
            __import__(module)
            return
        except ImportError:
            pass
    import setuptools
    _fail(f"setuptools {setuptools.__version__} cannot build a wheel without the 'wheel' "
          f"package, which this environment lacks.  Run\n"
          f"    python -m pip install 'setuptools>=70.1'\n"
          f"and repeat the command (with --no-build-isolation, pip does not install the "
          f"build requirements of pyproject.toml itself).")


def _in_isolated_build_env():
    # pip's isolated environments live in pip-build-env-*, those of `python -m build`
    # in build-env-*.
    return any("build-env-" in p for p in sys.path)


def _import_torch():
    try:
        import torch
    except ImportError as e:
        if _in_isolated_build_env():
            _fail("pip is building fused_act in an isolated environment, which has no torch "
                  "(or would get a different one from the torch you run): fused_act must be "
                  "compiled against the torch it will run with.  Instead, " + _REBUILD_HINT)
        _fail(f"torch is not installed in this environment ({e}).  To build fused_act, "
              + _REBUILD_HINT)
    release = tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2])
    if release < MIN_TORCH:
        _fail(f"fused_act needs torch >= {'.'.join(map(str, MIN_TORCH))}; this environment "
              f"has torch {torch.__version__}.")
    return torch


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


if __name__ == "__main__" and _building_wheel_or_metadata():
    _check_bdist_wheel()
_locate_cuda_home()
torch = _import_torch()

from torch.utils import cpp_extension  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"
X86 = platform.machine().lower() in ("x86_64", "amd64")
CPU_KERNELS = ["avx512", "avx2", "baseline"] if X86 else ["baseline"]


def _flag(name):
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    _fail(f"{name}={value!r} is not one of 1/0/true/false/auto")


def _nvcc():
    home = cpp_extension.CUDA_HOME
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def _want_cuda():
    forced = _flag("FUSED_ACT_CUDA")
    have_toolkit = cpp_extension.CUDA_HOME is not None and _nvcc() is not None
    have_torch_cuda = torch.version.cuda is not None
    if forced is False:
        return False
    if forced is True and not (have_toolkit and have_torch_cuda):
        why = "no CUDA toolkit (nvcc) was found" if not have_toolkit else (
            f"torch {torch.__version__} is a CPU-only build")
        _fail(f"FUSED_ACT_CUDA=1 but {why}")
    return bool(have_toolkit and have_torch_cuda)


def _cuda_toolkit_version():
    try:
        out = subprocess.check_output([_nvcc(), "--version"], text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def _sources(with_cuda):
    src = ["csrc/ops.cpp", "csrc/gated.cpp", "csrc/autograd.cpp", "csrc/python_module.cpp",
           "csrc/maxout_ops.cpp",
           "csrc/cpu/elementwise.cpp", "csrc/cpu/softmax.cpp", "csrc/cpu/maxout.cpp",
           "csrc/cpu/gated.cpp",
           "csrc/cpu/capability_default.cpp"]
    if X86:
        src += ["csrc/cpu/capability_avx2.cpp", "csrc/cpu/capability_avx512.cpp"]
    if with_cuda:
        src += ["csrc/cuda/register.cpp", "csrc/cuda/elementwise.cu",
                "csrc/cuda/softmax.cu", "csrc/cuda/maxout.cu"]
    return src


def _torch_requirement():
    """The torch release this build runs with: its C++ ABI changes between releases, so
    the wheel pins the release it was compiled against (patch releases keep the ABI)."""
    m = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return f"torch=={m.group(1)}.{m.group(2)}.*"


DEBUG = bool(_flag("FUSED_ACT_DEBUG"))
WITH_CUDA = _want_cuda()
BUILD_INFO = {
    "torch_version": torch.__version__.split("+")[0],
    "torch_build": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "cxx11_abi": bool(torch._C._GLIBCXX_USE_CXX11_ABI),
    "cuda_built": WITH_CUDA,
    "cuda_toolkit": None,
    "cuda_arch_list": None,
    "cuda_gencode": [],
    "cpu_kernels": CPU_KERNELS,
    "debug": DEBUG,
}


def _extension():
    # Python's own CFLAGS carry -g: release builds drop debug information (-g0 comes after
    # them) and strip what the objects still hold at link time.
    cxx = ["-O3", "-fopenmp", "-Wno-psabi"] + (["-g"] if DEBUG else ["-g0"])
    link = ["-fopenmp"] + ([] if DEBUG else ["-Wl,--strip-debug"])
    define_macros = []
    if WITH_CUDA:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
        BUILD_INFO["cuda_toolkit"] = _cuda_toolkit_version()
        BUILD_INFO["cuda_arch_list"] = os.environ.get("TORCH_CUDA_ARCH_LIST")
        BUILD_INFO["cuda_gencode"] = [f.split("=", 1)[1] for f in
                                      cpp_extension._get_cuda_arch_flags()]
        define_macros.append(("FA_WITH_CUDA", None))
        nvcc = ["-O3", "-DFA_WITH_CUDA"] + (["-g", "-lineinfo"] if DEBUG else [])
        print(f"fused_act: building CPU and CUDA kernels "
              f"(CUDA_HOME={cpp_extension.CUDA_HOME}, torch {torch.__version__}, "
              f"TORCH_CUDA_ARCH_LIST={BUILD_INFO['cuda_arch_list']}"
              f"{', debug' if DEBUG else ''})")
        return CUDAExtension("fused_act._C", _sources(True), define_macros=define_macros,
                             extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                             extra_link_args=link)
    print(f"fused_act: building CPU kernels only (torch {torch.__version__}"
          f"{', debug' if DEBUG else ''})")
    return CppExtension("fused_act._C", _sources(False), define_macros=define_macros,
                        extra_compile_args={"cxx": cxx}, extra_link_args=link)


class BuildExt(BuildExtension):
    """torch's BuildExtension, which also writes fused_act/_build_info.py beside the
    library: what it was compiled against, read by fused_act before loading it."""

    def run(self):
        inplace = self.inplace
        super().run()
        folders = {os.path.join(self.build_lib, "fused_act")}
        if inplace:
            folders.add(self.get_finalized_command("build_py").get_package_dir("fused_act"))
        for folder in folders:
            self._write_build_info(folder)

    def _write_build_info(self, folder):
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "_build_info.py")
        lines = ["# Written by setup.py when fused_act._C was built: what it was compiled",
                 "# against.  fused_act checks it before loading the library.",
                 ""]
        lines += [f"{key.upper()} = {value!r}" for key, value in BUILD_INFO.items()]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"fused_act: wrote {os.path.relpath(path, HERE)}")


if __name__ == "__main__":
    # Metadata lives in pyproject.toml, except the torch pin, which depends on the build.
    setup(
        ext_modules=[_extension()],
        cmdclass={"build_ext": BuildExt},
        install_requires=[_torch_requirement()],
        zip_safe=False,
    )
