"""Every elementwise activation of fused_act.table against its torch.nn reference."""
import pytest
import torch

import fused_act
from fused_act.table import ACTIVATIONS

from conftest import DEVICES, DTYPES
from helpers import close, within_rounding

CASES = [pytest.param(a, s, id=f"{a.name}-{s.id}") for a in ACTIVATIONS for s in a.settings]

# One shape per code path of the kernels.
SHAPES = {
    "empty": (0,),            # empty: returns before any kernel runs
    "empty2d": (3, 0),        # empty with a channel dim (PReLU's weight check still applies)
    "scalar": (),             # 0-d: one element, all of it the tail
    "tail": (7,),             # shorter than one vector: padded tail (CPU), scalar tail (CUDA)
    "one_vector": (16,),      # exactly one 512-bit CPU vector, two 128-bit float CUDA vectors
    "ragged": (37, 29),       # 1073 elements: not a multiple of any vector width
    "multi_chunk": (700, 67), # 46900 > 32768: several CPU threads' chunks, many CUDA blocks
    "4d": (2, 6, 5, 7),       # channel dim 1 with inner stride 35 (per-channel weights)
}


def _kwargs(setting, x, dtype=None, requires_grad=False):
    kw = setting.kwargs(x)
    out = {}
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().to(dtype or v.dtype).clone().requires_grad_(requires_grad)
        out[k] = v
    return out


def _input(shape, dtype, device, scale=4.0):
    return (torch.randn(shape, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def _run(fn, x, kw, grad):
    """Forward and backward; returns y, dx and the gradients of tensor kwargs."""
    x = x.detach().clone().requires_grad_(True)
    y = fn(x, **kw)
    tensors = [x] + [v for v in kw.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    grads = torch.autograd.grad(y, tensors, grad, allow_unused=True) if y.numel() else [
        torch.zeros_like(t) for t in tensors]
    return y.detach(), grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("act,setting", CASES)
def test_matches_torch(act, setting, shape, dtype, device):
    x = _input(shape, dtype, device)
    grad = _input(shape, dtype, device, scale=1.0)
    kw = _kwargs(setting, x, requires_grad=True)
    y, grads = _run(act.fused, x, kw, grad)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert all(g.dtype == t.dtype for g, t in zip(grads, [x] + list(kw.values())) if g is not None)

    x64, grad64 = x.double(), grad.double()
    if dtype in (torch.float32, torch.float64):
        # float64: against the float64 truth where torch's own is not one (e.g. its CELU and
        # Hardsigmoid backwards use float32 constants)
        ref = act.truth if dtype == torch.float64 else act.reference
        y_ref, grads_ref = _run(ref, x, _kwargs(setting, x, requires_grad=True), grad)
        close(y, y_ref, msg="forward")
        close(grads[0], grads_ref[0], msg="input gradient")
    else:  # half / bfloat16: against float64 math on the same inputs
        y64, grads64 = _run(act.truth, x64, _kwargs(setting, x, torch.float64, True), grad64)
        within_rounding(y, y64, msg="forward")
        scale = grad64.abs() * (1 + y64.abs()) if act.saves == "output" else None
        within_rounding(grads[0], grads64[0], scale, msg="input gradient")
    if len(grads) > 1:
        # Weight gradients are sums over many elements: compared with float64 sums, within
        # a summation error bound of 16 ULP of the sum of the terms' magnitudes.
        _, grads64 = _run(act.truth, x64, _kwargs(setting, x, torch.float64, True), grad64)
        magnitude = (grad64.abs() * x64.abs() * (1 + x64.abs())).sum().item()
        eps = torch.finfo(dtype).eps
        for g, g64 in zip(grads[1:], grads64[1:]):
            err = (g.double() - g64).abs().max().item() if g.numel() else 0.0
            assert err <= 16 * eps * magnitude + 1e-30, f"weight gradient error {err:.3g}"


LAYOUTS = {
    # dense but not contiguous: the kernels walk storage and the output keeps the strides
    "transposed": lambda t: t.transpose(0, 3),
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    # not dense: computed on a contiguous copy
    "strided": lambda t: t[:, :, ::2],
    # storage offset of one element: not 16-byte aligned (the scalar CUDA path)
    "misaligned": lambda t: t.flatten()[1:],
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS.keys())
@pytest.mark.parametrize("act,setting", CASES)
def test_layouts(act, setting, layout, dtype, device):
    x = LAYOUTS[layout](_input((2, 6, 5, 8), dtype, device))
    grad = LAYOUTS[layout](_input((2, 6, 5, 8), dtype, device, 1.0))
    kw = _kwargs(setting, x, requires_grad=True)
    y, grads = _run(act.fused, x, kw, grad)
    try:
        y_ref, grads_ref = _run(act.reference, x, _kwargs(setting, x, requires_grad=True), grad)
    except RuntimeError:
        # torch's own kernel refuses some layouts (its oneDNN GELU backward on non-dense
        # strides): its result on a contiguous copy is the same function's value
        y_ref, grads_ref = _run(act.reference, x.contiguous(),
                                _kwargs(setting, x, requires_grad=True), grad.contiguous())
    if layout in ("transposed", "channels_last"):
        assert y.stride() == x.stride()  # like torch's preserve_format
    rtol, atol = (1.3e-6, 1e-5) if dtype == torch.float32 else (1.6e-2, 1e-2)
    torch.testing.assert_close(y, y_ref, rtol=rtol, atol=atol)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=rtol, atol=atol * max(1, x.numel() // 8))


EXTREMES = [float("inf"), float("-inf"), float("nan"), 1e4, -1e4, 3e38, -3e38, 1e-40, -1e-40,
            0.0, -0.0, 88.72, -88.72, -103.9, 20.0, -20.0, 1e-7, -1e-7, 6.0, 6.0001, 5.9999,
            0.5, -0.5, 1.0, -1.0]


# torch's gradient at a NaN input for these depends on the dtype and on whether the NaN
# falls in its vectorized loop or its scalar tail (hardtanh / relu6: 0 or the incoming
# gradient in float16; e.g. ELU: NaN in float64, the incoming
# gradient in float16, either in float32; SELU and CELU are torch's ELU kernel too).
# fused_act gives one answer everywhere.
NAN_GRADIENT_VARIES_IN_TORCH = {"relu6": 0.0, "elu": "nan", "selu": "nan", "celu": "nan",
                                "hardswish": "nan", "hardtanh": 0.0}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act,setting", CASES)
def test_extreme_values(act, setting, dtype, device):
    x = torch.tensor(EXTREMES, dtype=torch.float64).to(device=device, dtype=dtype)
    x = torch.cat([x, x.flip(0)])  # each value in the vector body and in the tail
    grad = torch.full_like(x, 0.75)
    y, grads = _run(act.fused, x, _kwargs(setting, x), grad)
    # half/bfloat16: torch's math in float32 on the same inputs, rounded to the dtype
    ref_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    x_ref = x.to(ref_dtype)
    ref = act.truth if dtype == torch.float64 else act.reference
    y_ref, grads_ref = _run(ref, x_ref, _kwargs(setting, x, ref_dtype), grad.to(ref_dtype))
    y_ref = y_ref.to(dtype)
    # Where torch's own result is not finite, fused_act may give torch's value or the
    # float64 truth rounded to the dtype: torch's float32 GELU overflows an intermediate on
    # some instruction sets only (its AVX-512 kernel gives gelu(3e38) = inf, gelu(inf) = nan).
    truth = _run(act.truth, x.double(), _kwargs(setting, x, torch.float64),
                 grad.double())[0].to(dtype)
    same = (y == y_ref) | (y.isnan() & y_ref.isnan())
    y_ref = torch.where(torch.isfinite(y_ref) | same, y_ref, truth)
    close(y, y_ref, msg="forward")
    g, g_ref = grads[0], grads_ref[0].to(dtype)
    if act.saves == "output" and ref_dtype != dtype:
        # The backward reads the output rounded to the dtype, as torch's own does: compare
        # with torch in the same dtype.
        g_ref = _run(act.reference, x, _kwargs(setting, x), grad)[1][0]
    if act.name in NAN_GRADIENT_VARIES_IN_TORCH:
        nan = torch.isnan(x)
        expected = NAN_GRADIENT_VARIES_IN_TORCH[act.name]
        assert (g[nan].isnan().all() if expected == "nan" else (g[nan] == expected).all())
        g, g_ref = g[~nan], g_ref[~nan]
    close(g, g_ref, msg="backward")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("act,setting", CASES)
def test_float32_accuracy_in_ulp(act, setting, device, cpu_capability):
    """float32 forward within 4 ULP of float64 math, over the whole useful range, on every
    CPU instruction set this machine has (and on CUDA) -- or, where torch's own float32
    result is further than that from float64 math (GELU's 1 + erf(x/sqrt(2)) cancels for
    negative x), no further from it than torch's plus a few (4) ULP: the project's
    standard.  (GELU's tanh form rounds its argument 2u to float, an error that |2u|
    multiplies: 5.0 ULP at x = -3.24, where torch's is 2.1.)"""
    x = torch.cat([torch.linspace(-110, 110, 100003), torch.logspace(-38, 1, 2001),
                   -torch.logspace(-38, 1, 2001)]).to(device)
    kw = _kwargs(setting, x)
    with torch.no_grad():
        y = act.fused(x, **kw).double()
        ref = act.truth(x.double(), **_kwargs(setting, x, torch.float64))
    ulp = torch.finfo(torch.float32).eps  # 2^-23
    err = (y - ref).abs()
    # a few subnormal steps, times |x| where a sigmoid below 2^-149 multiplies x
    bound = 4 * ulp * ref.abs() + 2.0 ** -146 * (1 + x.double().abs())
    if act.name == "swish":  # beta*x is rounded to float before the sigmoid
        x64 = x.double()
        z = x64 * kw.get("beta", 1.0) if not isinstance(kw.get("beta"), torch.Tensor) else x64 * kw["beta"].double()
        s = torch.sigmoid(z)
        bound = bound + ulp * (x64 * s * (1 - s) * z).abs()
    with torch.no_grad():
        theirs = act.reference(x, **kw).double()
    torch_bound = (theirs - ref).abs() + 4 * ulp * ref.abs()
    ok = (err <= bound) | (err <= torch_bound)
    assert ok.all(), f"max error {(err / ref.abs().clamp_min(1e-38))[~ok].max().item():.3g} relative"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("act,setting", CASES)
def test_cpu_capabilities_agree(act, setting, dtype, cpu_capability):
    """Each instruction set's kernels (avx512 / avx2 / baseline) match torch."""
    x = _input((1000, 67), dtype, "cpu")
    grad = _input((1000, 67), dtype, "cpu", 1.0)
    y, grads = _run(act.fused, x, _kwargs(setting, x, requires_grad=True), grad)
    y_ref, grads_ref = _run(act.reference, x, _kwargs(setting, x, requires_grad=True), grad)
    rtol, atol = {torch.float32: (1.3e-6, 1e-5), torch.float16: (2e-3, 2e-3),
                  torch.bfloat16: (1.6e-2, 1.6e-2)}[dtype]
    torch.testing.assert_close(y, y_ref, rtol=rtol, atol=atol)
    torch.testing.assert_close(grads[0], grads_ref[0], rtol=rtol, atol=atol)


# Shapes for non-temporal output stores: with two threads, the second thread's chunk
# starts at element 33499, off every vector alignment (a cached head, then non-temporal
# stores, then a tail); one aligned vector; a tail only; PReLU weights repeating every 35
# elements (pattern kernels), every 101 (one kernel call per run, each run starting off
# alignment) and every 4096 (aligned runs).
NT_SHAPES = {"chunks": (7, 9571), "one_vector": (16,), "tail": (7,),
             "short_runs": (8, 6, 5, 7), "unaligned_runs": (4, 3, 101),
             "long_runs": (2, 3, 64, 64)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", NT_SHAPES.values(), ids=NT_SHAPES.keys())
@pytest.mark.parametrize("act,setting", CASES)
def test_nontemporal_stores(act, setting, shape, dtype, cpu_capability):
    """Outputs written with non-temporal stores (forced by a threshold of 0) are the same
    bits as with cached stores (weight gradients included), and match torch."""
    x = _input(shape, dtype, "cpu")
    grad = _input(shape, dtype, "cpu", 1.0)
    assert 3 * x.nbytes < fused_act.nontemporal_threshold()  # the default: cached stores
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        y_cached, grads_cached = _run(act.fused, x, _kwargs(setting, x, requires_grad=True),
                                      grad)
        fused_act.set_nontemporal_threshold(0)
        y, grads = _run(act.fused, x, _kwargs(setting, x, requires_grad=True), grad)
    finally:
        fused_act.set_nontemporal_threshold(None)
        torch.set_num_threads(threads)
    assert torch.equal(y, y_cached)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_cached))
    if dtype == torch.float32:  # (the cached half / bfloat16 paths are checked elsewhere)
        y_ref, grads_ref = _run(act.reference, x, _kwargs(setting, x, requires_grad=True),
                                grad)
        close(y, y_ref, msg="forward")
        close(grads[0], grads_ref[0], msg="input gradient")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("act,setting", CASES)
def test_gradcheck_and_gradgradcheck(act, setting, device):
    x = (torch.randn(3, 4, 5, dtype=torch.float64, device=device) * 2).requires_grad_()
    kw = _kwargs(setting, x, requires_grad=True)
    tensor_kw = {k: v for k, v in kw.items() if isinstance(v, torch.Tensor)}
    names = list(tensor_kw)

    def fn(x, *ts):
        return act.fused(x, **{**kw, **dict(zip(names, ts))})

    inputs = (x, *tensor_kw.values())
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


INPLACE = [c for c in CASES if c.values[0].inplace]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("act,setting", INPLACE)
def test_inplace_on_non_leaf(act, setting, device):
    base = (torch.randn(50, 33, dtype=torch.float64, device=device) * 3).requires_grad_()
    kw = _kwargs(setting, base)
    grad = torch.randn(50, 33, dtype=torch.float64, device=device)

    x = base * 1.5
    ptr = x.data_ptr()
    y = act.fused(x, inplace=True, **kw)
    assert y.data_ptr() == ptr
    y.backward(grad)
    ours = base.grad.clone()

    base.grad = None
    ref = act.truth(base * 1.5, inplace=False, **kw)
    ref.backward(grad)
    close(y.detach(), ref.detach())
    close(ours, base.grad)
    # gradgradcheck through the in-place form
    b = base.detach().clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: act.fused(t * 1.0, inplace=True, **kw), (b,))


@pytest.mark.parametrize("act,setting", INPLACE)
def test_inplace_on_leaf_requiring_grad_raises_like_torch(act, setting):
    x = torch.randn(10, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        act.fused(x, inplace=True, **_kwargs(setting, x))
    with torch.no_grad():  # and works where torch's does
        y = x.detach().clone()
        act.fused(y, inplace=True, **_kwargs(setting, x))
        close(y, act.reference(x.detach(), **_kwargs(setting, x)))


@pytest.mark.parametrize("act,setting", CASES)
def test_backward_saves_the_least_and_keeps_grad_intact(act, setting):
    x = torch.randn(64, 8, requires_grad=True)
    kw = _kwargs(setting, x, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = act.fused(x, **kw)
    param = kw.get("negative_slope", kw.get("alpha", 1.0))
    weights = [v for v in kw.values() if isinstance(v, torch.Tensor)]
    if weights:                           # prelu, swish with a tensor beta: input + weight
        expected = [x] + weights
    elif act.saves == "output" and (not isinstance(param, float) or param >= 0):
        expected = [y]                    # the output only
    else:
        expected = [x]                    # the input only
    assert len(saved) == len(expected)
    for s, e in zip(saved, expected):
        assert s.data_ptr() == e.data_ptr() and s.shape == e.shape

    grad = torch.randn_like(y)
    grad_copy = grad.clone()
    y.backward(grad)
    assert torch.equal(grad, grad_copy)   # the incoming gradient is not written to


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("op", fused_act._ops.ELEMENTWISE_OPS)
def test_saved_tensor_follows_the_saving_rule(op, inplace):
    """What a call saves is what fused_act.autograd.saves_output (the C++ rule, which the
    torch.func path asks too) says, out of place and in place."""
    # (p, q): q >= p, valid bounds for hardtanh (min_val, max_val)
    for p, q in ((-0.5, 0.5), (0.0, 0.0), (0.01, 3.0), (1.0, 20.0), (2.0, 5.0)):
        if op == "celu" and p == 0.0:  # not a valid alpha: torch's error
            with pytest.raises(RuntimeError, match="alpha cannot be 0"):
                getattr(torch.ops.fused_act, op + ("_" if inplace else ""))(torch.randn(3), p, q)
            continue
        leaf = torch.randn(16, requires_grad=True)
        x = leaf * 1.0
        x_before = x.detach().clone()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t,
                                                      lambda t: t):
            if inplace:
                getattr(torch.ops.fused_act, op + "_")(x, p, q)
                y = x
            else:
                y = getattr(torch.ops.fused_act, op)(x, p, q)
        assert len(saved) == 1
        saves_output = torch.equal(saved[0], y.detach()) and saved[0].data_ptr() == y.data_ptr()
        if not saves_output:
            assert torch.equal(saved[0].detach(), x_before), (op, p, inplace)
        assert saves_output == fused_act.autograd.saves_output(op, p, q, inplace), (op, p, q,
                                                                                    inplace)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: a.name)
def test_module_is_a_drop_in(act):
    kwargs = act.module_kwargs
    ours = act.module(**kwargs)
    assert isinstance(ours, torch.nn.Module)
    if act.torch_module is None:  # no torch.nn class (ReLUSquared): the function's module
        x = torch.randn(4, 3, 5)
        close(ours(x), act.reference(x))
        return
    theirs = act.torch_module(**kwargs)
    if act.name != "swish":
        assert isinstance(ours, act.torch_module)
        assert ours.extra_repr() == theirs.extra_repr()
        assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(4, 3, 5)
    theirs.load_state_dict(ours.state_dict())
    close(ours(x), theirs(x))
    if act.inplace:
        assert (act.module(inplace=True, **kwargs).extra_repr()
                == act.torch_module(inplace=True, **kwargs).extra_repr())


def test_swish_module():
    assert repr(fused_act.Swish()) == "Swish(beta=1.0, trainable=False)"
    m = fused_act.Swish(beta=1.5, trainable=True)
    assert isinstance(m.beta, torch.nn.Parameter)
    x = torch.randn(10, 7, dtype=torch.float64)
    m.double()
    y = m(x)
    y.sum().backward()
    b = torch.tensor([1.5], dtype=torch.float64, requires_grad=True)
    (x * torch.sigmoid(b * x)).sum().backward()
    close(m.beta.grad, b.grad)
    close(fused_act.Swish()(x), torch.nn.SiLU()(x))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_hardtanh_bounds_like_torch(dtype):
    """min_val == max_val is a valid call of the function (every output is that value, every
    gradient 0, as torch's); min_val > max_val raises torch's ValueError from the function
    and the operator, and nn.Hardtanh's own check applies to the module."""
    FA = fused_act.functional
    x = torch.tensor([-2.0, 0.25, 0.5, 0.75, 3.0, float("nan")], dtype=dtype)
    for fn in (FA.hardtanh, lambda t, lo, hi: FA.hardtanh(t.clone(), lo, hi, inplace=True)):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        y = fn(xa * 1, 0.5, 0.5)
        y_ref = torch.nn.functional.hardtanh(xb * 1, 0.5, 0.5)
        assert torch.equal(y.isnan(), y_ref.isnan())
        assert torch.equal(y[~y.isnan()], y_ref[~y_ref.isnan()])
        y.sum().backward()
        y_ref.sum().backward()
        assert torch.equal(xa.grad, torch.zeros_like(x)) and torch.equal(xb.grad[:-1], xa.grad[:-1])
    with pytest.raises(ValueError, match="min_val cannot be greater than max_val"):
        FA.hardtanh(x, 1.0, -1.0)
    with pytest.raises(ValueError, match="min_val cannot be greater than max_val"):
        FA.hardtanh_(x.clone(), 1.0, -1.0)
    with pytest.raises(AssertionError, match="must be greater than min_val"):
        fused_act.Hardtanh(1.0, 1.0)


def test_softplus_large_threshold_does_not_overflow():
    """Where torch's float32 log1p(exp(z)) overflows (a threshold above 88), fused_act
    stays finite and accurate: the float64 result, rounded."""
    x = torch.tensor([-100.0, -90.0, 0.0, 50.0, 89.0, 95.0, 150.0], requires_grad=True)
    y = fused_act.functional.softplus(x, threshold=200.0)
    (dx,) = torch.autograd.grad(y.sum(), x)
    x64 = x.detach().double().requires_grad_()
    y64 = torch.nn.functional.softplus(x64, threshold=200.0)
    (dx64,) = torch.autograd.grad(y64.sum(), x64)
    close(y, y64.float(), dtype=torch.float32)
    close(dx, dx64.float(), dtype=torch.float32)
    assert torch.isfinite(y).all() and torch.isfinite(dx).all()


@pytest.mark.parametrize("device", DEVICES)
def test_prelu_weight_gradient_per_channel(device):
    x = torch.randn(8, 5, 9, 11, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.linspace(-0.3, 0.6, 5, dtype=torch.float64, device=device).requires_grad_()
    g = torch.randn_like(x)
    fused_act.functional.prelu(x, w).backward(g)
    expected = (g * torch.where(x > 0, torch.zeros_like(x), x)).sum(dim=(0, 2, 3))
    close(w.grad, expected.detach())
