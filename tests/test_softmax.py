"""Tests of fused_act softmax / log_softmax against torch, on every code path.

Row lengths are chosen per kernel path (CPU: vectors of 16 floats in the AVX-512 and AVX2
builds, 8 in the baseline build; CUDA: see csrc/cuda/softmax.cu).
"""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fused_act
from fused_act import functional as FA
from fused_act import table

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LOG = [False, True]
OPS = {False: (FA.softmax, torch.softmax), True: (FA.log_softmax, torch.log_softmax)}

# (row length, the code paths it exercises).  CPU paths (csrc/cpu/softmax_impl.h):
# "registers" for rows of up to 4 vectors (64 floats); above that, float32 softmax runs
# "blocked" (L1-sized blocks, one exp per element) and log_softmax / half / bfloat16 run
# "cached" (three passes, rows <= 4096) or "online" (two passes).
LENGTHS = [
    1,       # CPU: registers, one lane, four rows at a time; CUDA: warp slice of 1 thread
    2,       # CPU: registers; CUDA: warp slice of 2 threads
    31,      # CPU: registers, partial vector; CUDA: one warp, one lane short
    32,      # CPU: two vectors, two rows at a time; CUDA: one full warp, one value per lane
    33,      # CPU: registers, 1-element tail; CUDA: one warp, 64 slots, unaligned rows
    1024,    # CPU: blocked (one block) / cached; CUDA: longest row of the warp kernel
    1025,    # CPU: blocked / cached, with tails; CUDA: block per row, shared-memory cache
    4096,    # CPU: two blocks / longest cached row; CUDA: shared memory, 128-bit accesses
    8193,    # CPU: blocked with a short last block / online; CUDA: shared memory, peeled tail
    70001,   # CPU: 35 blocks / online; CUDA: block per row, partly cached in shared memory
    300000,  # CPU: 64 blocks of 4688 / online (float32 only); CUDA: no shared memory
]
LONGEST = 300000


def _length_params():
    for n in LENGTHS:
        for dtype in DTYPES:
            if n == LONGEST and dtype != torch.float32:
                continue  # the longest row is checked in float32 only (time)
            yield pytest.param(n, dtype, id=f"{n}-{str(dtype)[6:]}")


def _capabilities():
    best = fused_act.cpu_capability()
    order = ["baseline", "avx2", "avx512"]
    return order[: order.index(best) + 1]


CAPS = _capabilities()


@pytest.fixture
def restore_capability():
    saved = fused_act.cpu_capability()
    yield
    fused_act.set_cpu_capability(saved)


def _reference(x, dim, log):
    return OPS[log][1](x.double(), dim)


def _reference_grad(g, y64, dim, log):
    if log:
        return torch._log_softmax_backward_data(g.double(), y64, dim, torch.float64)
    return torch._softmax_backward_data(g.double(), y64, dim, torch.float64)


def _err(a, b):
    """Largest absolute difference, NaN where the two disagree on NaN."""
    a, b = a.double(), b.double()
    both_nan = a.isnan() & b.isnan()
    same = (a == b) | both_nan
    d = torch.where(same, torch.zeros_like(a), (a - b).abs())
    return d.max().item() if d.numel() else 0.0


def _check_close(ours, torch_same_dtype, ref64, best=None):
    """float32/float64: torch's default tolerances against the float64 reference.
    half/bfloat16, and float32 rows so long that torch's own float32 result misses the
    float64 reference (float sums of 300000 terms): our error against the float64
    reference is at most about the error of torch's own kernel in that dtype -- or, when
    given, of `best`: what a kernel saving the output in that dtype, as torch's does, returns
    with exact arithmetic otherwise (torch's own result can beat it by the luck of its
    roundings, by a different amount in each release)."""
    assert ours.dtype == torch_same_dtype.dtype and ours.shape == ref64.shape
    ours_err, torch_err = _err(ours, ref64), _err(torch_same_dtype, ref64)
    if best is not None:
        assert best.dtype == ours.dtype
        torch_err = max(torch_err, _err(best, ref64))
    if ours.dtype in (torch.float32, torch.float64):
        try:
            torch.testing.assert_close(ours.double(), ref64, equal_nan=True,
                                       **_tol(ours.dtype))
            return
        except AssertionError:
            if ours.dtype == torch.float64:
                raise
    assert ours_err <= 1.25 * torch_err + 1e-6, (ours_err, torch_err)


def _tol(dtype):
    return {torch.float32: dict(rtol=1.3e-6, atol=1e-5),
            torch.float64: dict(rtol=1e-7, atol=1e-7)}[dtype]


def _rows_for(n):
    return 1 if n > 10000 else 5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("n,dtype", list(_length_params()))
def test_row_lengths_forward_backward(n, dtype, log, device):
    gen = torch.Generator().manual_seed(n)
    x = (torch.randn(_rows_for(n), n, generator=gen) * 4).to(device=device, dtype=dtype)
    g = torch.randn(x.shape, generator=gen).to(device=device, dtype=dtype)
    ours_f, torch_f = OPS[log]
    xr = x.clone().requires_grad_()
    y = ours_f(xr, -1)
    y.backward(g)
    xt = x.clone().requires_grad_()
    yt = torch_f(xt, -1)
    yt.backward(g)
    ref = _reference(x, -1, log)
    _check_close(y.detach(), yt.detach(), ref)
    # The backward's error is mostly that of the saved output, rounded to the dtype.
    best = _reference_grad(g, ref.to(dtype).double(), -1, log).to(dtype)
    _check_close(xr.grad, xt.grad, _reference_grad(g, ref, -1, log), best=best)


@pytest.mark.parametrize("capability", CAPS)
@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cpu_capabilities(capability, dtype, log, restore_capability):
    fused_act.set_cpu_capability(capability)
    assert fused_act.cpu_capability() == capability
    # registers; registers (one AVX-512 vector); registers (baseline: blocked / cached);
    # blocked / cached; blocked / online
    for n in (7, 16, 50, 1000, 20001):
        x = (torch.randn(3, n) * 5).to(dtype)
        g = torch.randn(3, n).to(dtype)
        y = OPS[log][0](x, -1)
        ref = _reference(x, -1, log)
        _check_close(y, OPS[log][1](x, -1), ref)
        dx = torch.ops.fused_act.softmax_backward(g, y, -1, log)
        y64 = ref
        tdx = (torch._log_softmax_backward_data if log else torch._softmax_backward_data)(
            g, OPS[log][1](x, -1), -1, dtype)
        _check_close(dx, tdx, _reference_grad(g, y64.to(dtype).double(), -1, log))


@pytest.mark.parametrize("capability", CAPS)
@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_short_row_blocks(capability, dtype, log, restore_capability):
    """Rows of up to four vectors go a vector's worth of rows at a time (their sums and
    maxima reduced together): 35 rows = two full blocks of 16 (AVX-512) or four of 8
    (AVX2) and a remainder, each length from 1 to 64 (full and partial last vectors),
    with the extreme rows (overflowing exps, -inf, all -inf, NaN) inside a block;
    forward and backward against float64, and every row as when computed alone."""
    fused_act.set_cpu_capability(capability)
    for n in list(range(1, 18)) + [23, 24, 31, 32, 33, 40, 47, 48, 49, 63, 64]:
        gen = torch.Generator().manual_seed(n)
        x = (torch.randn(35, n, generator=gen, dtype=torch.float64) * 4)
        x[9:15] = _extreme_rows(n, torch.float64, "cpu")
        x = x.to(dtype)
        g = torch.randn(35, n, generator=gen).to(dtype)
        y, yt = OPS[log][0](x, -1), OPS[log][1](x, -1)
        assert torch.equal(y.isnan(), yt.isnan()), n
        assert torch.equal(y.isinf(), yt.isinf()), n
        finite = ~yt.isnan().any(-1)
        ref = _reference(x[finite], -1, log)
        _check_close(y[finite], yt[finite], ref)
        dx = torch.ops.fused_act.softmax_backward(g, y, -1, log)
        tdx = (torch._log_softmax_backward_data if log else torch._softmax_backward_data)(
            g, yt, -1, dtype)
        ok = finite & ~y.isinf().any(-1)
        _check_close(dx[ok], tdx[ok], _reference_grad(g[ok], ref[~y[finite].isinf().any(-1)]
                                                       .to(dtype).double(), -1, log))
        for r in (0, 9, 15, 16, 31, 34):  # a row's bits do not depend on its neighbours
            assert torch.equal(OPS[log][0](x[r:r + 1], -1), y[r:r + 1]), (n, r)
            assert torch.equal(torch.ops.fused_act.softmax_backward(g[r:r + 1], y[r:r + 1], -1, log),
                               dx[r:r + 1]), (n, r)


@pytest.mark.parametrize("capability", CAPS)
@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_nontemporal_stores(capability, dtype, log, restore_capability, nontemporal_everywhere):
    # Rows of a multiple of the vector length take non-temporal stores (other lengths
    # ignore the request): registers (16, 64); float32 blocked with a scratch row / cached
    # (1024, 8192: four blocks / online); unaligned rows, cached stores (33, 1025).
    fused_act.set_cpu_capability(capability)
    for n in (16, 64, 1024, 8192, 33, 1025):
        x = (torch.randn(48, n) * 4).to(dtype)  # 48 rows: split across threads
        g = torch.randn(48, n).to(dtype)
        y = OPS[log][0](x, -1)
        ref = _reference(x, -1, log)
        _check_close(y, OPS[log][1](x, -1), ref)
        dx = torch.ops.fused_act.softmax_backward(g, y, -1, log)
        tdx = (torch._log_softmax_backward_data if log else torch._softmax_backward_data)(
            g, OPS[log][1](x, -1), -1, dtype)
        _check_close(dx, tdx, _reference_grad(g, ref.to(dtype).double(), -1, log))


def test_nontemporal_threshold_setting():
    default = fused_act.nontemporal_threshold()
    assert default > 0
    try:
        fused_act.set_nontemporal_threshold(12345)
        assert fused_act.nontemporal_threshold() == 12345
        assert fused_act.backends()["cpu_nontemporal_threshold"] == 12345
    finally:
        fused_act.set_nontemporal_threshold(None)
    assert fused_act.nontemporal_threshold() == default
    try:
        fused_act.set_nontemporal_threshold(torch.tensor(7))  # anything with __index__
        assert fused_act.nontemporal_threshold() == 7
    finally:
        fused_act.set_nontemporal_threshold(None)
    for bad in (-1, 2**63):
        with pytest.raises(ValueError, match="set_nontemporal_threshold"):
            fused_act.set_nontemporal_threshold(bad)
    for bad in (1.5, True, "1"):
        with pytest.raises(TypeError, match="set_nontemporal_threshold"):
            fused_act.set_nontemporal_threshold(bad)
    assert fused_act.nontemporal_threshold() == default


def test_many_rows_split_across_threads():
    # 5000 short rows: several at::parallel_for tasks (row grain 32768 / n).
    x = torch.randn(5000, 16) * 3
    torch.testing.assert_close(FA.softmax(x, 1), torch.softmax(x, 1))
    torch.testing.assert_close(FA.log_softmax(x, 1), torch.log_softmax(x, 1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_dim_and_layout(dtype, log, device):
    ours_f, torch_f = OPS[log]
    base = torch.randn(4, 5, 6, 7, dtype=dtype, device=device)
    inputs = {
        "contiguous": base,
        "transposed": base.transpose(1, 3),          # non-contiguous, dense
        "sliced": base[:, ::2, 1:, ::3],              # non-contiguous, gaps
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "expanded": torch.randn(1, 5, 1, 7, dtype=dtype, device=device).expand(4, 5, 6, 7),
    }
    for name, x in inputs.items():
        for dim in range(-x.dim(), x.dim()):
            xr = x.detach().clone().requires_grad_() if name != "expanded" else x.detach()
            y = ours_f(x, dim)
            yt = torch_f(x, dim)
            torch.testing.assert_close(y, yt, msg=f"{name} dim={dim}")
            assert y.is_contiguous()
            g = torch.randn_like(yt).transpose(0, 2)
            g = g.contiguous().transpose(0, 2)  # a non-contiguous gradient
            xr = x.detach().clone().requires_grad_()
            ours_f(xr, dim).backward(g)
            xt = x.detach().clone().requires_grad_()
            torch_f(xt, dim).backward(g)
            torch.testing.assert_close(xr.grad, xt.grad, msg=f"{name} dim={dim} grad")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES)
def test_middle_dim_columns(dtype, log, device):
    # CPU column kernels (dim not last): lanes across `inner` columns.
    #   (3, 37, 21) dim 1: inner 21 = one whole vector + a partial one
    #   (2, 50, 3) dim 1: inner 3, a partial vector only
    #   (5, 4, 130) dim 0: inner 520, several 64-column tasks
    ours_f, torch_f = OPS[log]
    for shape, dim in [((3, 37, 21), 1), ((2, 50, 3), 1), ((5, 4, 130), 0)]:
        x = (torch.randn(shape, dtype=torch.float64) * 4)
        x.select(dim, 1).fill_(-math.inf)          # a -inf entry in every column
        x.select(dim, 2).narrow(-1, 0, 1).fill_(1e4)
        x.narrow(-1, 1, 1).fill_(-math.inf)       # whole columns of -inf: NaN, as torch
        x = x.to(device=device, dtype=dtype)
        y, yt = ours_f(x, dim), torch_f(x, dim)
        ref = _reference(x, dim, log)
        # NaN and infinities exactly where float64 math has them.
        assert torch.equal(y.isnan(), ref.isnan()) and torch.equal(y.isinf(), ref.isinf())
        # Accuracy: compared with torch's where torch has float64's NaNs and infinities.
        # (torch 2.4's float16/bfloat16 log_softmax over a middle dim returns NaN or +inf for
        # finite results in columns that hold a -inf.)
        ok = ~ref.isnan() & ((yt.isfinite() & ref.isfinite()) | (yt == ref))
        _check_close(torch.where(ok, y, 0), torch.where(ok, yt, 0), torch.where(ok, ref, 0))
        g = torch.randn(shape, dtype=torch.float64).to(device=device, dtype=dtype)
        # a valid output to differentiate: float64's, rounded (NaN columns: a finite value)
        y_ok = torch.where(ref.isnan(), -5.0 if log else 0.0, ref).to(dtype)
        dx = torch.ops.fused_act.softmax_backward(g, y_ok, dim, log)
        back = torch._log_softmax_backward_data if log else torch._softmax_backward_data
        _check_close(dx, back(g, y_ok, dim, dtype),
                     back(g.double(), y_ok.double(), dim, torch.float64))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("log", LOG)
def test_empty_and_zero_dim(log, device):
    ours_f, torch_f = OPS[log]
    for shape, dim in [((0,), 0), ((2, 0, 3), 1), ((2, 0, 3), -1), ((0, 4), 1)]:
        x = torch.randn(shape, device=device, requires_grad=True)
        y = ours_f(x, dim)
        assert y.shape == shape and y.dtype == x.dtype
        y.sum().backward()
        assert x.grad.shape == shape
    for dim in (0, -1):
        x = torch.tensor(1.5, device=device, requires_grad=True)
        y = ours_f(x, dim)
        torch.testing.assert_close(y, torch_f(x.detach(), dim))
        y.backward()
        torch.testing.assert_close(x.grad, torch.zeros((), device=device))
    with pytest.raises(IndexError):
        ours_f(torch.tensor(1.0, device=device), 1)
    with pytest.raises(IndexError):
        ours_f(torch.randn(2, 3, device=device), 2)


def _extreme_rows(n, dtype, device):
    big = torch.finfo(dtype).max * 0.9 if dtype != torch.float64 else 3e38
    rows = torch.randn(6, n, dtype=torch.float64)
    rows[0, ::2] = 1e4                  # +-1e4: exp(x) overflows without the max shift
    rows[0, 1::2] = -1e4
    rows[1, : max(1, n // 2)] = big     # near the top of the range
    rows[1, n // 2:] = -big
    rows[2, ::3] = -math.inf            # -inf entries get probability 0
    rows[3, :] = -math.inf              # all -inf: NaN, as torch
    rows[4, n // 2] = math.nan          # NaN makes the row NaN, as torch
    rows[5, -1] = big
    if dtype == torch.float16:
        rows[0].clamp_(-6e4, 6e4)
    return rows.to(device=device, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("n", [3, 31, 1024, 1025, 20000])  # registers, blocked/cached/online
def test_extremes(n, dtype, log, device):
    x = _extreme_rows(n, dtype, device)
    ours_f, torch_f = OPS[log]
    y, yt = ours_f(x, -1), torch_f(x, -1)
    # Same NaN pattern as torch, and no inf where torch has none.
    assert torch.equal(y.isnan(), yt.isnan())
    assert torch.equal(y.isinf(), yt.isinf())
    assert y[3].isnan().all()  # the all -inf row
    if not log:
        assert (y[2, ::3] == 0).all()
    else:
        assert (y[2, ::3] == -math.inf).all()
    finite = ~yt.isnan()
    ref = _reference(x, -1, log)
    _check_close(torch.where(finite, y, 0), torch.where(finite, yt, 0),
                 torch.where(finite, ref, 0))


@pytest.mark.parametrize("log", LOG)
def test_gradcheck_and_gradgradcheck(log):
    f = OPS[log][0]
    for shape, dim in [((3, 5), -1), ((2, 3, 4), 0), ((2, 3, 4), 1), ((40,), 0)]:
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: f(t, dim), (x,))
        assert torch.autograd.gradgradcheck(lambda t: f(t, dim), (x,))


def test_gradgradcheck_through_backward_op():
    # The backward operator itself (differentiable through its C++ autograd kernel),
    # with both inputs needing a gradient.
    backward = torch.ops.fused_act.softmax_backward
    for log in LOG:
        g = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
        y = OPS[log][0](torch.randn(3, 6, dtype=torch.float64), -1).requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b: backward(a, b, -1, log), (g, y))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_raw_ops(device):
    ops = torch.ops.fused_act
    cases = [
        (torch.randn(4, 33, device=device), -1),
        (torch.randn(3, 5, 7, device=device).transpose(0, 2), 1),
        (torch.randn(2, 1030, device=device, dtype=torch.float64), 1),
        (torch.randn(5, 6, device=device, dtype=torch.bfloat16), 0),
        (torch.tensor(0.3, device=device), 0),
        (torch.randn(0, 3, device=device), 1),
    ]
    for x, dim in cases:
        for log in LOG:
            torch.library.opcheck(ops.softmax, (x, dim, log))
            y = ops.softmax(x, dim, log)
            torch.library.opcheck(ops.softmax_backward, (torch.randn_like(y), y, dim, log))
            xr = x.detach().clone().requires_grad_()
            torch.library.opcheck(ops.softmax, (xr, dim, log),
                                  test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("log", LOG)
def test_compile_aot_eager(log):
    ours_f, torch_f = OPS[log]

    def fn(x):
        return ours_f(x * 2, 1).sum(0)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    x = torch.randn(6, 40, 3, requires_grad=True)
    y = compiled(x)
    y.backward(torch.ones_like(y))
    xt = x.detach().clone().requires_grad_()
    yt = torch_f(xt * 2, 1).sum(0)
    yt.backward(torch.ones_like(yt))
    torch.testing.assert_close(y, yt)
    torch.testing.assert_close(x.grad, xt.grad)


def test_compile_inductor():
    def fn(x):
        return FA.softmax(x, -1) * 3 + FA.log_softmax(x, 0)

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    x = torch.randn(8, 24, requires_grad=True)
    y = compiled(x)
    y.sum().backward()
    xt = x.detach().clone().requires_grad_()
    yt = torch.softmax(xt, -1) * 3 + torch.log_softmax(xt, 0)
    yt.sum().backward()
    torch.testing.assert_close(y, yt)
    torch.testing.assert_close(x.grad, xt.grad)


def test_convert_and_modules():
    model = nn.Sequential(nn.Linear(4, 6), nn.Softmax(dim=1), nn.Linear(6, 6),
                          nn.LogSoftmax(dim=-1))
    model.eval()
    x = torch.randn(3, 4)
    expected = model(x)
    converted = fused_act.convert(model)
    assert type(converted[1]) is fused_act.Softmax and converted[1].dim == 1
    assert type(converted[3]) is fused_act.LogSoftmax and converted[3].dim == -1
    assert isinstance(converted[1], nn.Softmax) and isinstance(converted[3], nn.LogSoftmax)
    assert not converted[1].training
    assert repr(converted[1]) == repr(nn.Softmax(dim=1))
    torch.testing.assert_close(converted(x), expected)
    assert type(fused_act.convert(nn.Softmax(0))) is fused_act.Softmax


def test_legacy_implicit_dim_matches_torch():
    for shape in [(5,), (3, 4), (2, 3, 4), (2, 3, 4, 5)]:
        x = torch.randn(shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = nn.Softmax()(x)
            expected_log = nn.LogSoftmax()(x)
        with pytest.warns(UserWarning, match="Implicit dimension"):
            got = fused_act.Softmax()(x)
        with pytest.warns(UserWarning, match="Implicit dimension"):
            got_log = fused_act.LogSoftmax()(x)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(got_log, expected_log)


@pytest.mark.parametrize("log", LOG)
def test_dtype_argument(log):
    ours_f, torch_f = OPS[log]
    x = torch.randn(4, 9).to(torch.float16)
    y = ours_f(x, 1, dtype=torch.float32)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, torch_f(x, 1, dtype=torch.float32))
    xi = torch.arange(12).reshape(3, 4)
    torch.testing.assert_close(ours_f(xi, 1, dtype=torch.float64),
                               torch_f(xi, 1, dtype=torch.float64))


@pytest.mark.parametrize("log", LOG)
def test_bad_inputs(log):
    ours_f, torch_f = OPS[log]
    name = "log_softmax" if log else "softmax"
    with pytest.raises(TypeError, match=name):
        ours_f(torch.arange(6).reshape(2, 3), 1)
    with pytest.raises(TypeError, match=name):
        ours_f(torch.ones(3, dtype=torch.bool), 0)
    with pytest.raises(TypeError, match=name):
        ours_f([1.0, 2.0], 0)
    xc = torch.randn(2, 3, dtype=torch.complex64)
    try:
        expected = torch_f(xc, 1)
    except (RuntimeError, NotImplementedError):
        with pytest.raises(TypeError, match=name):
            ours_f(xc, 1)
    else:
        torch.testing.assert_close(ours_f(xc, 1), expected)
    # The raw operators name themselves too.
    with pytest.raises((TypeError, RuntimeError), match=name):
        torch.ops.fused_act.softmax(torch.arange(3), 0, log)
    with pytest.raises(RuntimeError, match="shape"):
        torch.ops.fused_act.softmax_backward(torch.randn(2, 3), torch.randn(3, 2), 0, log)


@pytest.mark.parametrize("act", table.SOFTMAX, ids=lambda a: a.name)
def test_table_rows(act):
    assert act in table.ALL and act not in table.ACTIVATIONS
    x = torch.randn(5, 12, dtype=torch.float64)
    for setting in act.settings:
        kw = setting.kwargs(x)
        torch.testing.assert_close(act.fused(x, **kw), act.reference(x, **kw))
        torch.testing.assert_close(act.composite(x), act.reference(x, **kw))
    module = act.module(**act.module_kwargs)
    assert isinstance(module, act.torch_module)
    torch.testing.assert_close(module(x), act.torch_module(**act.module_kwargs)(x))
    assert act.saves == "output"


def test_legacy_dim_warning_points_at_the_caller():
    # dim=None picks torch's legacy dim with a warning; like torch's, it names the line
    # that called the function (and, for the modules, the same place torch's name).
    x = torch.randn(2, 3)
    for ours, theirs in ((FA.softmax, F.softmax), (FA.log_softmax, F.log_softmax)):
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            ours(x)
            theirs(x)
        assert [w.filename for w in got] == [__file__, __file__]
    for ours, theirs in ((fused_act.Softmax(), nn.Softmax()),
                         (fused_act.LogSoftmax(), nn.LogSoftmax())):
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            ours(x)
            theirs(x)
        assert got[0].filename == got[1].filename
