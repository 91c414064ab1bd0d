"""CUDA-only tests: the paths of csrc/cuda/ that the device-generic tests (test_activations,
test_softmax, test_integration, which also run on CUDA when a GPU is present) do not
reach.  They run whenever torch.cuda.is_available(); without a GPU they are skipped.

Every result is compared with torch or with float64 math on the same inputs.
"""
import os
import re
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import fused_act
from fused_act import functional as FA
from fused_act.table import BY_NAME

from helpers import close, within_rounding
from test_activations import CASES, _kwargs, _run
from test_softmax import OPS, _check_close, _reference, _reference_grad

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LOG = [False, True]


def _props(device=0):
    return torch.cuda.get_device_properties(device)


def _vec(dtype):
    """Elements per 128-bit access."""
    return 16 // torch.empty((), dtype=dtype).element_size()


def _wave_elements(dtype):
    """Elements the elementwise grid covers in one grid-stride step: at most
    SMs x 16 blocks x 256 threads x 4 vectors (csrc/cuda/elementwise.cu)."""
    return _props().multi_processor_count * 16 * 256 * 4 * _vec(dtype)


def _rand(shape, dtype, device="cuda", scale=4.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(device=device,
                                                                                 dtype=dtype)


def _offset(t, k):
    """t's values in a tensor whose storage starts k elements into a buffer: contiguous,
    same shape, but not 16-byte aligned for k % (16 / itemsize) != 0."""
    buf = torch.empty(t.numel() + k, dtype=t.dtype, device=t.device)
    view = buf[k:].view(t.shape)
    view.copy_(t)
    return view


def _run_fused(act, x, kw, grad, k):
    """fused forward and gradients, the input stored k elements into its buffer (a view
    with a storage offset, which the kernels see as is)."""
    if k == 0:
        return _run(act.fused, x, kw, grad)
    buf = torch.cat([torch.zeros(k, dtype=x.dtype, device=x.device), x.reshape(-1)])
    buf = buf.detach().requires_grad_(True)
    xo = buf[k:].view(x.shape)
    assert xo.storage_offset() == k and xo.is_contiguous()
    y = act.fused(xo, **kw)
    tensors = [buf] + [v for v in kw.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    grads = torch.autograd.grad(y, tensors, grad)
    return y.detach(), [grads[0][k:].view(x.shape)] + list(grads[1:])


def _check_activation(act, setting, x, grad, k=0):
    """Forward, input gradient and weight gradient against torch (float32/float64) or
    float64 math (half/bfloat16), as test_activations.test_matches_torch does; with k > 0
    fused_act's input has a storage offset of k elements."""
    dtype = x.dtype
    kw = _kwargs(setting, x, requires_grad=True)
    y, grads = _run_fused(act, x, kw, grad, k)
    x64, grad64 = x.double(), grad.double()
    y64, grads64 = _run(act.truth, x64, _kwargs(setting, x, torch.float64, True), grad64)
    if dtype in (torch.float32, torch.float64):
        y_ref, grads_ref = _run(act.reference, x, _kwargs(setting, x, requires_grad=True), grad)
        close(y, y_ref, msg=f"{act.name} forward")
        close(grads[0], grads_ref[0], msg=f"{act.name} input gradient")
    else:
        within_rounding(y, y64, msg=f"{act.name} forward")
        scale = grad64.abs() * (1 + y64.abs()) if act.saves == "output" else None
        within_rounding(grads[0], grads64[0], scale, msg=f"{act.name} input gradient")
    if len(grads) > 1:
        magnitude = (grad64.abs() * x64.abs() * (1 + x64.abs())).sum().item()
        eps = torch.finfo(dtype).eps
        for g, g64 in zip(grads[1:], grads64[1:]):
            err = (g.double() - g64).abs().max().item()
            assert err <= 16 * eps * magnitude + 1e-30, f"{act.name} weight gradient error {err:.3g}"


def _check_softmax(x, log, dim=-1, seed=1):
    """Forward and backward of fused_act's (log_)softmax along dim against float64 math,
    within the error of torch's own kernel in the dtype (test_softmax._check_close)."""
    g = _rand(x.shape, x.dtype, x.device, scale=1.0, seed=seed)
    ours_f, torch_f = OPS[log]
    y = ours_f(x, dim)
    yt = torch_f(x, dim)
    ref = _reference(x, dim, log)
    _check_close(y, yt, ref)
    dx = torch.ops.fused_act.softmax_backward(g, y, dim, log)
    tdx = (torch._log_softmax_backward_data if log else torch._softmax_backward_data)(
        g, yt, dim, x.dtype)
    _check_close(dx, tdx, _reference_grad(g, y.double(), dim, log))


# ---- the binary -------------------------------------------------------------------------

def _cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    candidates = [os.path.join(os.environ.get("CUDA_HOME") or "/usr/local/cuda", "bin", "cuobjdump")]
    try:  # triton ships one with torch's CUDA builds
        import triton
        candidates.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia",
                                       "bin", "cuobjdump"))
    except ImportError:
        pass
    return next((p for p in candidates if os.access(p, os.X_OK)), None)


def test_binary_has_code_for_this_gpu():
    assert fused_act.built_with_cuda(), "a GPU is present but fused_act was built without CUDA"
    major, minor = torch.cuda.get_device_capability()
    # Every kernel family runs (a missing image fails here with the GPU and the build named).
    x = torch.randn(1000, device="cuda")
    torch.testing.assert_close(FA.relu(x), torch.relu(x))
    torch.testing.assert_close(FA.softmax(x.view(10, 100), -1), torch.softmax(x.view(10, 100), -1))
    tool = _cuobjdump()
    if tool is None:
        return  # the launches above are the check
    lib = fused_act._C.__file__
    listing = subprocess.run([tool, "--list-elf", "--list-ptx", lib], capture_output=True,
                             text=True, timeout=120).stdout
    # lines such as "ELF file    1: _C.1.sm_90.cubin" and "PTX file    1: _C.2.sm_90.ptx"
    sass = {int(a) for a in re.findall(r"ELF file.*?sm_(\d+)", listing)}
    ptx = {int(a) for a in re.findall(r"PTX file.*?(?:sm|compute)_(\d+)", listing)}
    assert sass or ptx, f"cuobjdump lists no device code in {lib}:\n{listing}"
    cc = major * 10 + minor
    # SASS runs on the same major and an equal or lower minor; PTX JITs for any newer GPU.
    assert any(s // 10 == major and s <= cc for s in sass) or any(p <= cc for p in ptx), (
        f"no code for compute capability {major}.{minor} in {lib}: SASS {sorted(sass)}, "
        f"PTX {sorted(ptx)}")


# ---- elementwise ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act,setting", CASES)
def test_second_grid_stride_pass(act, setting, dtype):
    # More elements than one grid covers, plus a ragged tail: the grid-stride loops of the
    # vector and weighted kernels run twice or more.  Shape (rows, 5, inner) so that a
    # per-channel weight has 5 channels.
    m = (2 * _wave_elements(dtype)) // 15 + 1
    x = _rand((m, 5, 3), dtype)
    grad = _rand(x.shape, dtype, scale=1.0, seed=1)
    _check_activation(act, setting, x, grad)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act,setting", CASES)
def test_storage_offsets_and_mixed_alignment(act, setting, dtype):
    # Offsets 0..kVec of the input and of the gradient (same offset: vector body after a
    # peeled head; different offsets: the lead stream on vectors, the others element by
    # element; tensors shorter than a head plus a vector: all head and tail), several
    # lengths around the vector width.
    v = _vec(dtype)
    for n in (v - 1, v, v + 1, 3 * v + 2, 4099):
        base = _rand((3, n), dtype, seed=n)
        gbase = _rand((3, n), dtype, scale=1.0, seed=n + 1)
        for kx in range(v + 1):
            for kg in {kx, (kx + 1) % v}:
                _check_activation(act, setting, base, _offset(gbase, kg), k=kx)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_inplace_with_storage_offset(dtype):
    # In place, input and output share the offset: head, vector body and tail.
    for k in range(_vec(dtype)):
        x = _offset(_rand((1000 * 3 + 1,), dtype), k)
        expected = torch.relu(x)
        FA.relu_(x)
        torch.testing.assert_close(x, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["prelu", "swish"])
@pytest.mark.parametrize("shape,layout", [
    ((64, 3, 4096), "contiguous"),       # long runs of one channel: register sums
    ((257, 64, 7), "contiguous"),        # runs of 7: a channel change inside most vectors
    ((33, 5000), "contiguous"),          # inner 1, 5000 channels: shared-memory totals
    ((9, 20000), "contiguous"),          # 20000 channels: past the shared-memory totals
    ((8, 24, 9, 11), "channels_last"),   # inner = stride(1) = 1 on a permuted layout
    ((5, 3, 1), "contiguous"),           # fewer elements than a vector per channel
])
def test_weighted_channel_index_and_weight_gradient(name, shape, layout, dtype):
    act = BY_NAME[name]
    setting = next(s for s in act.settings if s.id in ("per_channel", "beta_tensor"))
    x = _rand(shape, dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    grad = _rand(shape, dtype, scale=1.0, seed=2)
    if name == "swish":  # one beta per channel
        c = shape[1]
        w = torch.linspace(0.3, 1.9, c, dtype=torch.float64).to("cuda", dtype)
        wr = w.detach().clone().requires_grad_()
        xr = x.detach().clone().requires_grad_()
        y = FA.swish(xr, wr)
        dx, dw = torch.autograd.grad(y, (xr, wr), grad)
        x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
        bshape = [1, c] + [1] * (x.dim() - 2)
        y64 = x64 * torch.sigmoid(w64.view(bshape) * x64)
        dx64, dw64 = torch.autograd.grad(y64, (x64, w64), grad.double())
        if dtype in (torch.float16, torch.bfloat16):
            within_rounding(y, y64.detach(), msg="forward")
            within_rounding(dx, dx64, msg="input gradient")
        else:
            close(y, y64.detach().to(dtype), msg="forward")
            close(dx, dx64.to(dtype), msg="input gradient")
        magnitude = (grad.double().abs() * x64.detach().abs() ** 2).sum().item()
        err = (dw.double() - dw64).abs().max().item()
        assert err <= 16 * torch.finfo(dtype).eps * magnitude + 1e-30, err
    else:
        _check_activation(act, setting, x, grad)


# Backward ops with their own first argument (the incoming gradient) and saved tensor, and
# the parameter the activation's rule passes; saves: what the tensor `saved` holds.
_BACKWARD_OPS = [("relu", (0.0, 0.0)), ("relu6", (0.0, 0.0)), ("leaky_relu", (0.2, 0.0)),
                 ("elu", (1.0, 0.0)), ("sigmoid", (0.0, 0.0)), ("tanh", (0.0, 0.0)),
                 ("swish", (1.0, 0.0)), ("softplus", (2.0, 5.0)), ("hardtanh", (-0.5, 0.75))]


def _same_values(actual, expected, msg):
    """Two runs of the same kernel math on the same values at different addresses: equal
    up to the last rounding of the result (one ULP)."""
    if actual.dtype in (torch.float32, torch.float64):
        close(actual, expected, msg=msg)
    else:
        within_rounding(actual, expected.double(), msg=msg)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,p", _BACKWARD_OPS, ids=[n for n, _ in _BACKWARD_OPS])
def test_backward_streams_out_of_phase(name, p, dtype):
    # dx (a fresh, aligned tensor) against grad and saved at offsets kg, ks from 16 bytes:
    # (k, k): grad and saved lead, dx stored element by element; (0, k): grad and dx lead,
    # saved read element by element; (k, 0): saved and dx lead, grad element by element;
    # (1, 2): three phases, grad leads.  Lengths around the vector width and with a
    # second grid-stride pass.
    v = _vec(dtype)
    saves_output = BY_NAME[name].saves == "output"
    op = getattr(torch.ops.fused_act, f"{name}_backward")
    phases = {(k, k) for k in range(1, v)} | {(0, k) for k in range(1, v)} | {
        (k, 0) for k in range(1, v)} | ({(1, 2)} if v > 2 else set())
    for n in (2 * v + 1, 4099, _wave_elements(dtype) + 3):
        g = _rand((n,), dtype, scale=1.0, seed=n)
        x = _rand((n,), dtype, seed=n + 1)
        saved = torch.sigmoid(x) if saves_output else x
        expected = op(g, saved, *p, saves_output)
        for kg, ks in sorted(phases):
            dx = op(_offset(g, kg), _offset(saved, ks), *p, saves_output)
            assert dx.data_ptr() % 16 == 0
            _same_values(dx, expected, f"{name} n={n} grad offset {kg} saved offset {ks}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["prelu", "swish_weighted"])
def test_weighted_backward_streams_out_of_phase(name, dtype):
    # The weighted kernels peel the head of the lead stream too: grad and x at offsets
    # (k, k) (dx out of phase), (0, k), (k, 0) and (1, 2); 5 channels of 7 (runs that
    # cross vectors).  dw is summed in another order, so it is compared within rounding
    # of the sum's magnitude.
    v = _vec(dtype)
    op = getattr(torch.ops.fused_act, f"{name}_backward")
    phases = {(k, k) for k in range(1, v)} | {(0, k) for k in range(1, v)} | {
        (k, 0) for k in range(1, v)} | ({(1, 2)} if v > 2 else set())
    shape = (301, 5, 7)
    g = _rand(shape, dtype, scale=1.0, seed=11)
    x = _rand(shape, dtype, seed=12)
    w = torch.linspace(-0.5, 1.5, 5, dtype=torch.float64).to("cuda", dtype)
    dx_ref, dw_ref = op(g, x, w, True)
    magnitude = (g.double().abs() * x.double().abs() * (1 + x.double().abs())).sum().item()
    for kg, kx in sorted(phases):
        dx, dw = op(_offset(g, kg), _offset(x, kx), w, True)
        _same_values(dx, dx_ref, f"{name} dx, grad offset {kg}, x offset {kx}")
        err = (dw.double() - dw_ref.double()).abs().max().item()
        # each run within 16 eps x magnitude of the exact sum (_check_activation): 32 apart
        assert err <= 32 * torch.finfo(dtype).eps * magnitude, (kg, kx, err)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["prelu", "swish_weighted"])
def test_shared_weight_gradient_is_deterministic(name, dtype):
    # One weight (inner = numel, one channel): each block's total goes to its own slot
    # and one block sums the slots in a fixed order, so repeated runs give the same bits
    # (with atomics, thousands of blocks adding in scheduling order, float32/float64
    # results differ in their last bits between runs).  Shapes: a few blocks; more
    # blocks than one grid wave with a ragged tail; an input with a storage offset (a
    # peeled head done by block 0).
    op = getattr(torch.ops.fused_act, f"{name}_backward")
    w = torch.tensor([0.25], dtype=dtype, device="cuda")
    for shape, k in [((3, 1000), 0), ((_wave_elements(dtype) // 7 + 5, 7), 0), ((999, 37), 1)]:
        g = _offset(_rand(shape, dtype, scale=1.0, seed=21), k)
        x = _offset(_rand(shape, dtype, seed=22), k)
        dws = [op(g, x, w, True)[1] for _ in range(4)]
        for dw in dws[1:]:
            assert torch.equal(dw, dws[0]), (shape, k, dw.item(), dws[0].item())
        x64 = x.double()
        w64 = w.double().requires_grad_()
        y64 = (torch.nn.functional.prelu(x64, w64) if name == "prelu"
               else x64 * torch.sigmoid(w64 * x64))
        (dw64,) = torch.autograd.grad(y64, (w64,), g.double())
        magnitude = (g.double().abs() * x64.abs() * (1 + x64.abs())).sum().item()
        err = (dws[0].double() - dw64).abs().max().item()
        assert err <= 16 * torch.finfo(dtype).eps * magnitude, (shape, k, err)


def test_weighted_offsets_past_32_bits():
    # More than 2^32 elements: the weighted kernels' 64-bit channel index.
    m = (2 ** 32 + 4099) // 3 + 1
    need = m * 3 * 2 * 2 + (2 << 30)
    if torch.cuda.mem_get_info()[0] < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of free GPU memory")
    x = torch.empty(m, 3, dtype=torch.float16, device="cuda").uniform_(-4, 4)
    w = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float16, device="cuda")
    y = FA.prelu(x, w)
    for sl in (slice(0, 4096), slice(m // 2, m // 2 + 4096), slice(m - 4096, m)):
        ref = torch.nn.functional.prelu(x[sl].double(), w.double())
        within_rounding(y[sl], ref, msg=f"prelu past 2^32, rows {sl}")


def test_float16_past_2_31_elements():
    n = 2 ** 31 + 2 ** 20 + 3  # offsets past int32, and a ragged tail
    need = n * 2 * 4 + (2 << 30)
    if torch.cuda.mem_get_info()[0] < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of free GPU memory")
    x = torch.empty(n, dtype=torch.float16, device="cuda").uniform_(-8, 8)
    y = FA.sigmoid(x)
    for sl in (slice(0, 1 << 16), slice(2 ** 31 - 100, 2 ** 31 + 1000), slice(n - (1 << 16), n)):
        within_rounding(y[sl], torch.sigmoid(x[sl].double()), msg=f"sigmoid {sl}")
    g = torch.ones_like(x)
    dx = torch.ops.fused_act.sigmoid_backward(g, y, 0.0, 0.0, True)
    sl = slice(n - (1 << 16), n)
    y64 = y[sl].double()
    within_rounding(dx[sl], y64 * (1 - y64), scale=1 + y64.abs(), msg="sigmoid backward")
    del dx, g, y
    # softmax over rows of 1024 past 2^31 elements (warp tier, 64-bit row offsets)
    rows = n // 1024
    xs = x[: rows * 1024].view(rows, 1024)
    ys = FA.softmax(xs, -1)
    for r in (slice(0, 4), slice(rows - 4, rows)):
        _check_close(ys[r], torch.softmax(xs[r], -1), torch.softmax(xs[r].double(), -1))


# ---- softmax ------------------------------------------------------------------------------

def _static_smem(dtype, arrays):
    """The block kernels' static shared memory: block_merge's 2 x 32 and block_sum's 32
    values of the math type (float for half/bfloat16)."""
    size = 8 if dtype == torch.float64 else 4
    return (2 * 32 if arrays == 1 else 32) * size


def _tier_lengths(dtype):
    """Row lengths at every tier boundary of csrc/cuda/softmax.cu for one dtype."""
    v, size = _vec(dtype), torch.empty((), dtype=dtype).element_size()
    warp_max = 512 if dtype == torch.float64 else 1024
    out = {1, 31, 32, 33, warp_max - 1, warp_max, warp_max + 1, warp_max + v, warp_max + v + 1}
    optin = _props().shared_memory_per_block_optin
    for arrays in (1, 2):  # forward caches x; backward caches dy and y
        # the 48 KiB windows of the old launch failure (static + dynamic > 48 KiB with
        # dynamic <= 48 KiB): rows just below 48 KiB / (arrays x size)
        w = 48 * 1024 // (arrays * size)
        out |= {w - 64 // size - 1, w - v, w - 1, w, w + 1}
        # the largest fully cached row, and the first partly cached one
        fit = (optin - _static_smem(dtype, arrays)) // (arrays * size) // v * v
        out |= {fit - 2 * v - 1, fit - v, fit - v + 1, fit - 1, fit, fit + 1, fit + v + 3}
    return sorted(out)


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_softmax_tier_boundaries(dtype, log):
    for n in _tier_lengths(dtype):
        rows = 3 if n < 100000 else 2
        _check_softmax(_rand((rows, n), dtype, seed=n), log)


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [50257, 32001, 1025, 4097])
def test_softmax_odd_rows_and_storage_offsets(n, dtype, log):
    # Rows not a multiple of the vector width start at every offset from 16 bytes (peeled
    # head and tail per row), with the input at offsets 0..kVec too (x and y out of phase).
    for k in range(_vec(dtype) + 1):
        _check_softmax(_offset(_rand((4, n), dtype, seed=n + k), k), log)


@pytest.mark.parametrize("log", LOG)
def test_softmax_gradient_out_of_phase(log):
    # dy and y at different offsets from 16 bytes: the one not leading is read element by
    # element (block tier).
    for n in (1025, 50257):
        y = FA.softmax(_rand((3, n), torch.float32), -1)
        g = _rand((3, n), torch.float32, scale=1.0, seed=5)
        for kg, ky in ((1, 0), (0, 3), (2, 1)):
            gg, yy = _offset(g, kg), _offset(y, ky)
            dx = torch.ops.fused_act.softmax_backward(gg, yy, -1, log)
            tdx = (torch._log_softmax_backward_data if log else torch._softmax_backward_data)(
                g, y, -1, torch.float32)
            _check_close(dx, tdx, _reference_grad(g, y.double(), -1, log))


def _warp_odd_lengths(dtype):
    """Row lengths of the warp tier (up to 1024, float64 512) that are not a multiple of
    the vector width, one or two per power-of-two layout whose lanes hold a vector."""
    top = 512 if dtype == torch.float64 else 1024
    return [n for n in (33, 47, 63, 65, 99, 127, 129, 201, 255, 257, 383, 511, 513, 777, 1023)
            if n <= top]


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_softmax_warp_odd_rows_every_phase(dtype, log):
    # Odd row lengths: consecutive rows start at every offset from a vector boundary
    # (2 x kVec + 1 rows), each with its own peeled head and tail in the lanes' edge
    # register; the input also at offsets 1..kVec - 1 (y, a fresh tensor, then out of
    # x's phase: stored element by element).
    v = _vec(dtype)
    for n in _warp_odd_lengths(dtype):
        for k in range(v):
            _check_softmax(_offset(_rand((2 * v + 1, n), dtype, seed=n + k), k), log)


def _softmax_backward_phases(g, y, kg, ky, log):
    dx = torch.ops.fused_act.softmax_backward(_offset(g, kg), _offset(y, ky), -1, log)
    assert dx.data_ptr() % 16 == 0
    tdx = (torch._log_softmax_backward_data if log else torch._softmax_backward_data)(
        g, y, -1, g.dtype)
    _check_close(dx, tdx, _reference_grad(g, y.double(), -1, log))


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_softmax_backward_dx_out_of_phase(dtype, log):
    # Backward with dy and y at offsets (kg, ky) from 16 bytes and dx fresh (aligned):
    # (k, k): dy and y lead, dx stored element by element; (0, k): dy and dx lead, y read
    # element by element; (k, 0): y and dx lead; (1, 2): three phases.  Warp tier (odd
    # lengths: every row phase) and block tier (cached and, for float32, partly cached).
    v = _vec(dtype)
    phases = {(k, k) for k in range(1, v)} | {(0, k) for k in range(1, v)} | {
        (k, 0) for k in range(1, v)} | ({(1, 2)} if v > 2 else set())
    lengths = [_warp_odd_lengths(dtype)[0], _warp_odd_lengths(dtype)[-1], 1025, 4097]
    if dtype == torch.float32:
        lengths.append(_props().shared_memory_per_block_optin // 8 + 5)  # past the cache
    for n in lengths:
        y = FA.log_softmax(_rand((2 * v + 1, n), dtype), -1) if log else FA.softmax(
            _rand((2 * v + 1, n), dtype), -1)
        g = _rand(y.shape, dtype, scale=1.0, seed=n)
        for kg, ky in sorted(phases):
            _softmax_backward_phases(g, y, kg, ky, log)


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_softmax_partly_cached_long_rows(dtype, log):
    # Rows of several times the shared memory: cached head of the row, the rest re-read.
    n = 3 * _props().shared_memory_per_block_optin // 2 + 7
    _check_softmax(_offset(_rand((2, n), dtype, seed=3), 1), log)
    _check_softmax(_rand((3, 1 << 20), dtype, seed=4), log)


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,dim", [
    ((3, 1025, 5), 1),      # a middle dim, inner 5
    ((2, 7, 33), 1),        # fewer rows than threads splitting a column
    ((4096, 3), 0),         # one outer, 3 columns: 16 threads per column
    ((2, 50257, 1, 2), 1),  # long column
    ((70, 40, 64), 0),      # many columns
    ((5, 3, 2, 9), 2),
])
def test_softmax_along_a_middle_dim(shape, dim, dtype, log):
    _check_softmax(_rand(shape, dtype, seed=sum(shape)), log, dim=dim)


@pytest.mark.parametrize("log", LOG)
def test_softmax_special_values_in_block_rows(log):
    # -inf entries, a NaN row, an all -inf row and huge values in the block tier (chunk
    # max, then one exp per element) and along a middle dim.
    n = 5000
    x = _rand((5, n), torch.float32)
    x[0, ::7] = float("-inf")
    x[1, 1234] = float("nan")
    x[2] = float("-inf")
    x[3, :100] = 3e38
    x[4, -1] = 1e4
    _check_softmax(x, log)
    _check_softmax(x.t().contiguous(), log, dim=0)


# ---- streams, threads, devices ---------------------------------------------------------

def test_non_default_stream():
    # The side stream is held up by a sleep before the input is written on it: a kernel
    # launched on another stream would read the input before it is written.
    src = _rand((64, 3000), torch.float32)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        x = torch.zeros_like(src)
        torch.cuda._sleep(100_000_000)
        x.copy_(src)
        outs = [FA.sigmoid(x), FA.softmax(x, -1), FA.log_softmax(x.view(64, 1000, 3), 1),
                FA.prelu(x, torch.full((3000,), 0.2, device="cuda"))]
    s.synchronize()
    refs = [torch.sigmoid(src), torch.softmax(src, -1), torch.log_softmax(src.view(64, 1000, 3), 1),
            torch.nn.functional.prelu(src, torch.full((3000,), 0.2, device="cuda"))]
    for o, r in zip(outs, refs):
        torch.testing.assert_close(o, r)


def test_many_threads_at_once():
    # The GIL is released in the kernels' entry points: threads launch concurrently on one
    # GPU, each with rows that need a different shared-memory size (the 48 KiB windows and
    # the largest cached rows), and elementwise ops, the first use on this device included.
    lengths = [n for n in _tier_lengths(torch.float32) if n > 1024] + [50257, 32001]
    inputs = {n: _rand((2, n), torch.float32, seed=n) for n in lengths}
    expected = {n: (torch.softmax(x, -1), torch.log_softmax(x, -1)) for n, x in inputs.items()}
    torch.cuda.synchronize()  # the threads' own streams read these
    errors = []
    barrier = threading.Barrier(8)

    def work(t):
        try:
            barrier.wait()
            stream = torch.cuda.Stream()
            with torch.cuda.stream(stream):
                for i in range(20):
                    n = lengths[(t + i) % len(lengths)]
                    y = FA.softmax(inputs[n], -1)
                    yl = FA.log_softmax(inputs[n], -1)
                    dx = torch.ops.fused_act.softmax_backward(y, y, -1, False)
                    stream.synchronize()
                    torch.testing.assert_close(y, expected[n][0])
                    torch.testing.assert_close(yl, expected[n][1])
                    assert torch.isfinite(dx).all()
                    torch.testing.assert_close(FA.tanh(inputs[n]), torch.tanh(inputs[n]))
        except Exception as e:  # reported below with the thread's id
            errors.append((t, repr(e)))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert not errors, errors


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second GPU")
def test_second_device():
    # Per-device caches and shared-memory limits: a tensor on cuda:1 while cuda:0 is current.
    with torch.cuda.device(0):
        for n in (12288, 50257, 500):
            x = _rand((3, n), torch.float32, device="cuda:1", seed=n)
            for log in LOG:
                _check_softmax(x, log)
        for act, setting in [(c.values[0], c.values[1]) for c in CASES]:
            x = _rand((4099,), torch.float16, device="cuda:1")
            _check_activation(act, setting, x.view(1, -1), _rand((1, 4099), torch.float16, "cuda:1", 1.0, 3))
