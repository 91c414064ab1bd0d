"""Installation: the record of what the library was built against, the clear errors on a
mismatched torch or a missing library, setup.py's early errors, a stripped library, the
wheel's torch pin and `python -m fused_act`."""
import glob
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import fused_act
from fused_act import _build

from test_integration import _elf_section_sizes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INFO = _build.build_info()
needs_info = pytest.mark.skipif(INFO is None, reason="this library was built without setup.py "
                                                     "(no fused_act/_build_info.py)")


def _run(code, cwd, env=None, own_finders=False):
    code = textwrap.dedent(code)
    if own_finders:
        code = _OWN_FINDERS + code
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


# Only Python's own import finders: an editable install adds one that would supply the
# source tree's library for a copy of the package that lacks it.
_OWN_FINDERS = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, "
                "'__module__', '').startswith('_frozen_importlib')]\n")


def _copy_package(dest, with_library=True):
    """A copy of the fused_act package (the .py files, and the library if asked) in dest."""
    pkg = os.path.join(dest, "fused_act")
    os.makedirs(pkg)
    for path in glob.glob(os.path.join(_build.PACKAGE_DIR, "*.py")):
        shutil.copy(path, pkg)
    if with_library:
        for path in glob.glob(os.path.join(_build.PACKAGE_DIR, "_C.*")):
            shutil.copy(path, pkg)
    return pkg


# ---- the record and the check --------------------------------------------------------

@needs_info
def test_build_info_describes_this_library():
    assert _build.mismatch(INFO, torch.__version__, torch.version.cuda) is None
    assert INFO["cuda_built"] == fused_act.built_with_cuda()
    b = fused_act.backends()
    assert b["torch_built_against"] == INFO["torch_build"]
    assert b["torch_running"] == torch.__version__
    assert b["cpu_capability"] in b["cpu_kernels"]
    if b["cuda_built"]:
        assert b["cuda_toolkit"] and re.fullmatch(r"\d+\.\d+", b["cuda_toolkit"])
        # Every build ships PTX for at least one architecture: it runs on newer GPUs.
        assert any(g.startswith("arch=compute_") and "code=compute_" in g
                   for g in b["cuda_gencode"]), b["cuda_gencode"]
    else:
        assert b["cuda_toolkit"] is None and b["cuda_gencode"] == []


@pytest.mark.parametrize("built, running, running_cuda, ok", [
    ("2.15.0+cu132", "2.15.1+cu132", "13.2", True),      # patch releases keep the ABI
    ("2.15.0+cu132", "2.14.1+cu132", "13.2", False),
    ("2.11.0", "2.13.0+cpu", None, False),
    ("2.15.0+cu132", "2.15.0+cpu", None, False),         # CUDA kernels, CPU-only torch
    ("2.15.0+cu132", "2.15.0+cu128", "12.8", False),     # another CUDA major
    ("2.16.0.dev20260101", "2.16.0.dev20260102", None, False),  # nightlies: exactly
])
def test_mismatch_rules(built, running, running_cuda, ok):
    cuda_built = "+cu" in built
    info = {"torch_build": built, "cuda_built": cuda_built,
            "torch_cuda": "13.2" if cuda_built else None}
    why = _build.mismatch(info, running, running_cuda)
    assert (why is None) == ok, why
    if not ok:
        assert built in why and running in why


@needs_info
def test_import_under_another_torch_raises_a_clear_import_error(tmp_path):
    """The recorded torch is faked to another release: the import must stop before the
    library is loaded, naming both versions and how to rebuild."""
    pkg = _copy_package(tmp_path)
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    fake = f"{major}.{minor - 1}.0"
    with open(os.path.join(pkg, "_build_info.py"), "a") as f:
        f.write(f"TORCH_BUILD = {fake!r}\nTORCH_VERSION = {fake!r}\n")
    r = _run("""
        import sys
        try:
            import fused_act
        except ImportError as e:
            print("ImportError:", e)
            print("loaded:", any(m == "fused_act._C" for m in sys.modules))
        else:
            print("imported")
        """, cwd=tmp_path, own_finders=True)
    assert r.returncode == 0, r.stderr
    assert "ImportError: fused_act was compiled against torch " + fake in r.stdout
    assert f"this is torch {torch.__version__}" in r.stdout
    assert "--no-build-isolation" in r.stdout
    assert "loaded: False" in r.stdout


def test_missing_library_says_so(tmp_path):
    """A source folder without the library (as the repository root after a non-editable
    install): a clear message, not "partially initialized module"."""
    _copy_package(tmp_path, with_library=False)
    r = _run("import fused_act", cwd=tmp_path, own_finders=True)
    assert r.returncode != 0
    assert "ImportError: fused_act's compiled library (fused_act/_C*.so) is not in" in r.stderr
    assert "build_ext --inplace" in r.stderr
    assert "partially initialized" not in r.stderr


def test_unloadable_library_is_explained(tmp_path):
    """A library the loader rejects (here a truncated file) gives an ImportError that names
    the running torch and says how to rebuild."""
    pkg = _copy_package(tmp_path, with_library=False)
    suffix = os.path.basename(glob.glob(os.path.join(_build.PACKAGE_DIR, "_C.*"))[0])[2:]
    with open(os.path.join(pkg, "_C" + suffix), "wb") as f:
        f.write(b"\x7fELF" + bytes(60))
    r = _run("import fused_act", cwd=tmp_path, own_finders=True)
    assert r.returncode != 0
    assert "ImportError: fused_act's compiled library" in r.stderr
    assert "--no-build-isolation" in r.stderr


# ---- the library and the package -----------------------------------------------------

@needs_info
def test_release_library_has_no_debug_information():
    sections = _elf_section_sizes(fused_act._ops._C.__file__)
    if INFO["debug"]:
        assert sections.get(".debug_info", 0) > 0
    else:
        assert not [s for s in sections if s.startswith(".debug")], sorted(sections)


def test_python_m_fused_act_reports_the_build(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(_build.PACKAGE_DIR))
    r = subprocess.run([sys.executable, "-m", "fused_act"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"torch {torch.__version__}" in r.stdout
    if INFO:
        assert f"built against  torch {INFO['torch_build']}" in r.stdout
        assert ", ".join(INFO["cpu_kernels"]) + " compiled in" in r.stdout


def _installed_metadata():
    """The metadata of the installed fused_act distribution when it is this source folder
    (pip install -e) or this package (pip install .); None for an in-place build."""
    from importlib import metadata
    try:
        dist = metadata.distribution("fused_act")
    except metadata.PackageNotFoundError:
        return None
    files = [str(f) for f in (dist.files or [])]
    if any(f.endswith("fused_act/_ops.py") for f in files):  # a regular install
        where = os.path.dirname(os.path.abspath(dist.locate_file("fused_act/_ops.py")))
        return dist if where == _build.PACKAGE_DIR else None
    direct = dist.read_text("direct_url.json") or ""
    return dist if ROOT in direct else None                   # an editable install


@needs_info
def test_installed_metadata_pins_the_torch_release_built_against():
    dist = _installed_metadata()
    if dist is None:
        pytest.skip("fused_act is built in place, not installed: no metadata to check")
    pins = [r for r in dist.requires or [] if r.startswith("torch")]
    major, minor = INFO["torch_version"].split(".")[:2]
    assert pins == [f"torch=={major}.{minor}.*"], dist.requires


# ---- setup.py's early errors (run without building anything) ---------------------------

def _run_setup(prelude, argv):
    code = (prelude + f"\nimport sys\nsys.argv = {['setup.py'] + argv!r}\n"
            "exec(compile(open('setup.py').read(), 'setup.py', 'exec'), "
            "{'__name__': '__main__', '__file__': 'setup.py'})\n")
    return _run(code, cwd=ROOT)


def test_setup_without_torch_says_to_install_it_and_skip_isolation():
    r = _run_setup("import sys; sys.modules['torch'] = None", ["egg_info"])
    assert r.returncode != 0
    assert "torch is not installed in this environment" in r.stderr
    assert "python -m pip install --no-build-isolation ." in r.stderr


def test_setup_in_an_isolated_build_env_says_to_skip_isolation():
    r = _run_setup("import sys; sys.modules['torch'] = None; "
                   "sys.path.append('/tmp/pip-build-env-x/overlay/lib/site-packages')",
                   ["egg_info"])
    assert r.returncode != 0
    assert "isolated environment" in r.stderr and "--no-build-isolation" in r.stderr


def test_setup_rejects_a_torch_older_than_supported():
    r = _run_setup("import sys, types; t = types.ModuleType('torch'); t.__version__ = '2.3.1'; "
                   "sys.modules['torch'] = t", ["egg_info"])
    assert r.returncode != 0
    assert "fused_act needs torch >= 2.4; this environment has torch 2.3.1" in r.stderr



def test_oldest_torch_is_declared_the_same_everywhere():
    """requirements.txt, setup.py's MIN_TORCH (which the build enforces), pyproject.toml's
    note and the default release of .ci/check_oldest_torch.sh name one oldest torch."""
    def read(*path):
        with open(os.path.join(ROOT, *path)) as f:
            return f.read()

    (requirement,) = re.findall(r"^torch>=(\d+\.\d+)\s*$", read("requirements.txt"), re.M)
    (setup,) = re.findall(r"^MIN_TORCH = \((\d+), (\d+)\)$", read("setup.py"), re.M)
    (pyproject,) = re.findall(r"any torch >= (\d+\.\d+)", read("pyproject.toml"))
    (check,) = re.findall(r'TORCH_VERSION="\$\{1:-(\d+\.\d+)\.\d+\}"',
                          read(".ci", "check_oldest_torch.sh"))
    assert requirement == ".".join(setup) == pyproject == check

def test_setup_without_bdist_wheel_says_what_to_install():
    """setuptools < 70.1 without `wheel` (a fresh Python 3.11 venv): a clear message instead
    of "invalid command 'bdist_wheel'"."""
    r = _run_setup("import sys; sys.modules['setuptools.command.bdist_wheel'] = None; "
                   "sys.modules['wheel'] = None; sys.modules['wheel.bdist_wheel'] = None",
                   ["dist_info"])
    assert r.returncode != 0
    assert "cannot build a wheel without the 'wheel' package" in r.stderr
    assert "setuptools>=70.1" in r.stderr
