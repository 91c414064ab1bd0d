"""What fused_act._C was compiled against, and the check made before loading it.

setup.py writes fused_act/_build_info.py beside the library when it builds it.  The library
links against torch's C++ libraries, whose ABI changes between torch releases: loaded under
another torch it fails with an undefined symbol, or worse.  So before loading it, fused_act
compares the torch it was built against with the torch that is running and raises an
ImportError that names both and says how to rebuild.
"""
import glob
import os
import re
from typing import Optional

import torch

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

REBUILD = ("Rebuild fused_act against the torch you run, from its source folder:\n"
           "    python -m pip install --no-build-isolation --no-deps --force-reinstall .\n"
           "(add -e for an editable install, or build in place with "
           "`python setup.py build_ext --inplace`).")


def build_info() -> Optional[dict]:
    """The contents of _build_info.py (keys in lower case), or None where the library was
    built some other way (or copied without it)."""
    try:
        from . import _build_info
    except ImportError:
        return None
    return {k.lower(): v for k, v in vars(_build_info).items() if k.isupper()}


def _release(version: str):
    """(major, minor) of a torch version string such as '2.15.0+cu132'."""
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _is_prerelease(version: str) -> bool:
    return re.search(r"(a|b|rc|dev)\d*", version.split("+")[0]) is not None


def mismatch(info: Optional[dict], torch_version: str, torch_cuda: Optional[str]) -> Optional[str]:
    """Why a library built as `info` says cannot run with this torch; None if it can."""
    if not info:
        return None
    built = info["torch_build"]
    if _is_prerelease(built) or _is_prerelease(torch_version):
        same = built.split("+")[0] == torch_version.split("+")[0]  # nightlies: exactly
    else:
        same = _release(built) == _release(torch_version)
    if not same:
        return (f"fused_act was compiled against torch {built}, but this is torch "
                f"{torch_version}: the compiled library only runs with the torch release "
                f"it was built for.")
    if info.get("cuda_built"):
        if torch_cuda is None:
            return (f"fused_act was compiled with CUDA kernels against torch {built} "
                    f"(CUDA {info.get('torch_cuda')}), but this torch {torch_version} is a "
                    f"CPU-only build.")
        if str(info.get("torch_cuda")).split(".")[0] != torch_cuda.split(".")[0]:
            return (f"fused_act was compiled against torch {built} with CUDA "
                    f"{info.get('torch_cuda')}, but this torch {torch_version} uses CUDA "
                    f"{torch_cuda}.")
    return None


def check_torch(info: Optional[dict] = None) -> None:
    """Raise ImportError when the compiled library was built for another torch."""
    if info is None:
        info = build_info()
    why = mismatch(info, torch.__version__, torch.version.cuda)
    if why:
        raise ImportError(f"{why}\n{REBUILD}")


def explain_load_error(error: BaseException) -> ImportError:
    """An ImportError that says what to do, for a failure to import fused_act._C."""
    libraries = glob.glob(os.path.join(PACKAGE_DIR, "_C.*"))
    if not libraries:
        # Python's own message here ("partially initialized module ... circular import")
        # points the wrong way: it is left out.
        err = ImportError(
            f"fused_act's compiled library (fused_act/_C*.so) is not in {PACKAGE_DIR}.  If "
            f"that is a source folder (a fused_act installed elsewhere is shadowed when Python "
            f"starts in the folder that holds the source), start Python in another folder, "
            f"or build the library in place: `python setup.py build_ext --inplace`, or "
            f"`python -m pip install --no-build-isolation --no-deps -e .`.")
        err.__suppress_context__ = True
        return err
    err = _explain_library_error(error, libraries[0])
    err.__cause__ = error
    return err


def _explain_library_error(error, library):
    info = build_info()
    built = f"torch {info['torch_build']}" if info else "another torch"
    if "undefined symbol" in str(error) or "cannot open shared object" in str(error):
        return ImportError(
            f"fused_act's compiled library {os.path.basename(library)} does not load "
            f"with torch {torch.__version__}: it was compiled against {built}.\n{REBUILD}\n"
            f"(The loader said: {error})")
    return ImportError(f"fused_act's compiled library could not be loaded: {error}\n{REBUILD}")
