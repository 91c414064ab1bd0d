import os

import pytest
import torch

import fused_act

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _supported_capabilities():
    """CPU instruction sets this machine can run, best first."""
    original = fused_act.cpu_capability()
    found = []
    for name in ("avx512", "avx2", "baseline"):
        try:
            fused_act.set_cpu_capability(name)
            found.append(name)
        except RuntimeError:
            pass
    fused_act.set_cpu_capability(original)
    return found


CPU_CAPABILITIES = _supported_capabilities()


@pytest.fixture(params=CPU_CAPABILITIES)
def cpu_capability(request):
    original = fused_act.cpu_capability()
    fused_act.set_cpu_capability(request.param)
    yield request.param
    fused_act.set_cpu_capability(original)


@pytest.fixture
def nontemporal_everywhere():
    """Every CPU call writes float outputs with non-temporal stores (threshold 0 bytes)."""
    fused_act.set_nontemporal_threshold(0)
    yield
    fused_act.set_nontemporal_threshold(None)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_report_header(config):
    return (f"torch {torch.__version__}; fused_act backends: {fused_act.backends()}; "
            f"FUSED_ACT_EXPECT_CUDA={os.environ.get('FUSED_ACT_EXPECT_CUDA', '')}")
