"""Performance regression guard (pytest-benchmark), outside the default test run.

Generated from fused_act.table: for every activation (its first setting), forward and
backward, at a cache-resident size (2^14 elements) and a large one (2^22), fused_act and
torch's reference side by side in one benchmark group.  Save a baseline, change the code,
compare (see bench/README.md):

    python -m pytest bench/test_perf.py --benchmark-autosave
    python -m pytest bench/test_perf.py --benchmark-compare --benchmark-compare-fail=median:10%

One CPU thread by default (steadier); FUSED_ACT_BENCH_THREADS=N sets another count.
"""
import os

import pytest

pytest.importorskip("pytest_benchmark", reason="pip install pytest-benchmark")

import torch  # noqa: E402

import fused_act  # noqa: E402
from fused_act import table  # noqa: E402

SIZES = {"cached": 2**14, "large": 2**22}
ROW = 1024
THREADS = int(os.environ.get("FUSED_ACT_BENCH_THREADS", "1"))


@pytest.fixture(autouse=True, scope="module")
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def _inputs(n):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n // ROW, ROW, generator=gen, requires_grad=True)
    g = torch.randn(n // ROW, ROW, generator=gen)
    return x, g


@pytest.mark.parametrize("impl", ["fused_act", "torch"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("phase", ["forward", "backward"])
@pytest.mark.parametrize("act", table.ALL, ids=lambda a: a.name)
def test_perf(benchmark, act, phase, size, impl):
    n = SIZES[size]
    x, g = _inputs(n)
    kwargs = act.settings[0].kwargs(x)
    fn = act.fused if impl == "fused_act" else act.reference
    benchmark.group = f"{act.name} {phase} 2^{n.bit_length() - 1}"
    benchmark.extra_info.update({"elements": n, "threads": THREADS,
                                 "cpu_capability": fused_act.cpu_capability()})
    if phase == "forward":
        y = benchmark(fn, x, **kwargs)
    else:
        # The graph is built once; every round runs its whole backward again.
        y = fn(x, **kwargs)
        (dx,) = benchmark(torch.autograd.grad, y, x, g, retain_graph=True)
        (dx_ref,) = torch.autograd.grad(act.reference(x, **kwargs), x, g)
        torch.testing.assert_close(dx, dx_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y, act.reference(x, **kwargs), rtol=1e-4, atol=1e-5)
