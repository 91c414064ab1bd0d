"""The gated activations of fused_act.table.GATED (glu, swiglu, geglu, reglu) against torch's
compositions (F.glu, F.silu(a) * b, F.gelu(a) * b, F.relu(a) * b, a, b = x.chunk(2, dim)):
values and gradients in every dtype and along every kind of dim, accuracy against float64,
NaN and infinities, double backward, forward-mode AD, torch.func, torch.compile, opcheck,
the argument errors, the modules and convert()."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fused_act
import fused_act.functional as FA
from fused_act.table import GATED

from conftest import DEVICES, DTYPES
from helpers import close, within_rounding

CASES = [pytest.param(a, s, id=f"{a.name}-{s.id}") for a in GATED for s in a.settings]
OPS = [pytest.param(a, id=a.name) for a in GATED]

# (input shape, dim): one per layout of the kernel (x viewed as [outer, 2, L]).
DIMS = {
    "last": ((6, 10), -1),               # the common case: L = 5 per row, 6 rows
    "last_long": ((3, 2 * 67), -1),      # L = 67: vector body plus a tail in every row
    "one_row": ((2 * 37,), 0),           # outer = 1: the work is split by element
    "dim0": ((4, 3, 5), 0),              # outer = 1, L = 2 * 15
    "middle": ((3, 6, 5), 1),            # outer = 3, L = 3 * 5
    "negative_middle": ((2, 3, 8, 7), -2),
    "multi_chunk": ((700, 2 * 67), 1),   # 46900 outputs > 32768: several threads' ranges
    "empty": ((0, 4), -1),               # no element: no kernel runs
    "empty_dim": ((3, 0), 1),            # a size-0 dim is even: an empty result
}


def _input(shape, dtype, device, scale=4.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device=device,
                                                                              dtype=dtype)


def _run(fn, x, grad, **kw):
    """Forward and input gradient."""
    x = x.detach().clone().requires_grad_(True)
    y = fn(x, **kw)
    if y.numel() == 0:
        return y.detach(), torch.zeros_like(x)
    (dx,) = torch.autograd.grad(y, x, grad)
    return y.detach(), dx


def _halved(shape, dim):
    shape = list(shape)
    shape[dim] //= 2
    return tuple(shape)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,dim", DIMS.values(), ids=DIMS.keys())
@pytest.mark.parametrize("act,setting", CASES)
def test_matches_torch(act, setting, shape, dim, dtype, device):
    x = _input(shape, dtype, device)
    grad = _input(_halved(shape, dim), dtype, device, scale=1.0, seed=1)
    kw = setting.kwargs(x)
    y, dx = _run(act.fused, x, grad, dim=dim, **kw)
    assert y.shape == _halved(shape, dim) and y.dtype == dtype and y.device == x.device
    assert y.is_contiguous() and dx.shape == x.shape and dx.dtype == dtype
    if dtype in (torch.float32, torch.float64):
        # As close to torch's composition as the project's tolerance for the dtype, or, where
        # torch's is further from float64 math than that (geglu's tanh form: its
        # 1 + tanh(u) cancels for a < -4, where the gradient times b exceeds the absolute
        # tolerance), no further from float64 math than torch's is.
        y_ref, dx_ref = _run(act.reference, x, grad, dim=dim, **kw)
        y64, dx64 = _run(act.truth, x.double(), grad.double(), dim=dim, **kw)
        if dtype == torch.float64:
            close(y, y64, msg="forward vs float64 truth")
            close(dx, dx64, msg="input gradient vs float64 truth")
        _near_torch_or_no_worse(y, y_ref, y64, "forward")
        _near_torch_or_no_worse(dx, dx_ref, dx64, "gradient")
    else:
        # half / bfloat16: the float math rounded once, against float64 math on the same
        # inputs (torch's composition rounds act(a) to the dtype before the product).
        y64, dx64 = _run(act.truth, x.double(), grad.double(), dim=dim, **kw)
        within_rounding(y, y64, msg="forward")
        within_rounding(dx, dx64, msg="input gradient")
        # ... and no further from it than torch's composition in the same dtype (whose
        # half-precision glu gradient, for one, is off by up to 30% where 1 - sigmoid(b)
        # cancels), plus one ULP.
        y_ref, dx_ref = _run(act.reference, x, grad, dim=dim, **kw)
        eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps
        for ours, theirs, ref in ((y, y_ref, y64), (dx, dx_ref, dx64)):
            err = (ours.double() - ref).abs()
            assert (err <= (theirs.double() - ref).abs() + eps * ref.abs() + tiny).all()


def _near_torch_or_no_worse(ours, theirs, ref, what):
    """Within the dtype's tolerance of torch's result in the same dtype, or no further from
    the float64 truth `ref` than torch's is (plus that relative tolerance)."""
    from helpers import TOLERANCES
    rtol, atol = TOLERANCES[ours.dtype]
    o, t = ours.double(), theirs.double()
    err = (o - ref).abs()
    ok = ((o - t).abs() <= atol + rtol * t.abs()) | (err <= (t - ref).abs() + rtol * ref.abs())
    assert ok.all(), f"{what}: {int((~ok).sum())} elements off, worst {err[~ok].max()}"


LAYOUTS = {
    "transposed": lambda t: t.transpose(0, 2),       # dense, not contiguous
    "strided": lambda t: t[:, ::2],                  # not dense
    "misaligned": lambda t: t.flatten()[1:1 + 6 * 8 * 10].view(6, 8, 10),  # storage offset 1
    "expanded": lambda t: t[:1].expand(t.shape),     # stride 0
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS.keys())
@pytest.mark.parametrize("dim", [-1, 0, 1])
@pytest.mark.parametrize("act,setting", CASES)
def test_noncontiguous_inputs(act, setting, dim, layout, dtype, device):
    x = LAYOUTS[layout](_input((6, 8, 12), dtype, device))
    kw = setting.kwargs(x)
    grad = _input(_halved(x.shape, dim), dtype, device, 1.0, seed=2).transpose(0, -1)
    grad = grad.contiguous().transpose(0, -1)  # a non-contiguous gradient too
    y, dx = _run(act.fused, x, grad, dim=dim, **kw)
    # the layout changes nothing: the same bits as from contiguous tensors
    y_c, dx_c = _run(act.fused, x.contiguous(), grad.contiguous(), dim=dim, **kw)
    assert torch.equal(y, y_c) and torch.equal(dx, dx_c)
    # and torch's composition, computed in float32
    y_ref, dx_ref = _run(act.reference, x.float(), grad.float(), dim=dim, **kw)
    rtol, atol = (1.3e-6, 1e-5) if dtype == torch.float32 else (1.6e-2, 1e-2)
    torch.testing.assert_close(y.float(), y_ref, rtol=rtol, atol=atol)
    torch.testing.assert_close(dx.float(), dx_ref, rtol=rtol, atol=atol)


def _sweep_halves(sweep, other):
    """Both ways round: the sweep in the first half, then in the second (the activated
    half is the first for swiglu/geglu/reglu and the second for glu)."""
    return [torch.stack([sweep, other]), torch.stack([other, sweep])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("act,setting", CASES)
def test_float32_accuracy_in_ulp(act, setting, device, cpu_capability):
    """float32 forward and gradient within a few ULP of float64 math over the whole useful
    range, on every CPU instruction set of this machine (the project's rule for the
    elementwise ops: 4 ULP of the activation -- 5 for GELU's tanh form, which rounds its
    argument 2u to float (tests/test_activations.py) -- here plus the product's rounding), or no
    further from it than torch's composition plus as much, where torch's is further.
    Where act' changes sign (silu' at -1.28, gelu' at -0.75) its value cancels: there the
    gradient may also be off by a few ULP of |u * act''(u)| * |g * v|, the change of
    act'(u) * g * v for a relative change of u of one ULP (from float64 autograd)."""
    sweep = torch.cat([torch.linspace(-110, 110, 50003), torch.logspace(-38, 1, 1001),
                       -torch.logspace(-38, 1, 1001)])
    other = _input(sweep.shape, torch.float32, "cpu", scale=2.0, seed=3)
    grad = _input(sweep.shape, torch.float32, "cpu", scale=1.0, seed=4)
    kw = setting.kwargs(sweep)
    ulp = torch.finfo(torch.float32).eps
    for x in _sweep_halves(sweep, other):
        x = x.to(device)
        g = grad.to(device)[None]
        y, dx = _run(act.fused, x, g, dim=0, **kw)
        y64, dx64 = _run(act.truth, x.double(), g.double(), dim=0, **kw)
        y32, dx32 = _run(act.reference, x, g, dim=0, **kw)
        # per half j: d(dx_j)/dx_j * x_j, which is g * v * u * act''(u) in the activated half
        # and 0 in the other (dv = g * act(u) does not depend on v)
        x64 = x.double().requires_grad_()
        (d,) = torch.autograd.grad(act.truth(x64, dim=0, **kw), x64, g.double(), create_graph=True)
        sens = torch.stack([torch.autograd.grad(d[j].dot(x64[j].detach()), x64, retain_graph=True)[0][j]
                            for j in range(2)]).detach().abs()
        for ours, ref, theirs, what, k, extra in ((y, y64, y32, "forward", 6, 0),
                                                  (dx, dx64, dx32, "gradient", 8, sens)):
            ours, theirs = ours.double(), theirs.double()
            err = (ours - ref).abs()
            # a few subnormal steps, times the other factors where a tiny term multiplies them
            bound = (k * ulp * (ref.abs() + extra)
                     + 2.0 ** -146 * (1 + x.double().abs().amax(0)))
            torch_bound = (theirs - ref).abs() + k * ulp * ref.abs()
            ok = (err <= bound) | (err <= torch_bound)
            assert ok.all(), (f"{what}: {int((~ok).sum())} elements beyond {k} ULP, worst "
                              f"{(err / ref.abs().clamp_min(1e-38))[~ok].max().item():.3g} "
                              "relative")


EXTREMES = [float("inf"), float("-inf"), float("nan"), 1e4, -1e4, 3e38, -3e38, 1e-40, -1e-40,
            0.0, -0.0, 88.72, -88.72, -103.9, 20.0, -20.0, 1e-7, -1e-7, 6.0, 0.5, -0.5, 1.0,
            -1.0]


def _agree(ours, ref, dtype):
    """Elementwise: the same NaN, the same infinity, or within the dtype's tolerance."""
    from helpers import TOLERANCES
    rtol, atol = TOLERANCES[dtype]
    ours, ref = ours.double(), ref.to(dtype).double()
    both_nan = ours.isnan() & ref.isnan()
    with torch.no_grad():
        near = (ours - ref).abs() <= atol + rtol * ref.abs()
    return both_nan | (ours == ref) | (near & ref.isfinite())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act,setting", CASES)
def test_extreme_values_and_nan(act, setting, dtype, device):
    """Every pair of extreme values (NaN, infinities, overflow, subnormals, signed zeros),
    in the vector body and in the tail: each value and gradient is torch's composition's
    (computed in float32 for half and bfloat16) or float64 math's on the same inputs.
    So NaN propagates as in both (a NaN input gives NaN wherever both give NaN).  They
    differ where torch's composition multiplies an underflowed 0 by an infinity or by
    3e38: glu(inf, -103.9) is inf (sigmoid(-103.9) is a float32 subnormal, which torch
    flushes to 0, giving NaN); and where float64 autograd of the truth does (the
    gradient of geglu at a = 1e4, b = inf is inf, as torch's composition gives).  Where
    both give NaN from inputs without a NaN (0 * inf or inf - inf inside their
    evaluation: the gradient of geglu's tanh form at a = -20, b = inf, whose exact value
    is -inf), ours must be NaN or infinite; where ours is finite and neither agrees, it
    must be no further from float64 math than torch's composition (silu(-103.9), a
    float32 subnormal, times b = 3e38)."""
    e = torch.tensor(EXTREMES, dtype=torch.float64)
    a, b = torch.cartesian_prod(e, e).unbind(1)
    x = torch.stack([a, b]).to(device=device, dtype=dtype)
    grad = torch.full((1, a.numel()), 0.75, dtype=dtype, device=device)
    kw = setting.kwargs(x)
    y, dx = _run(act.fused, x, grad, dim=0, **kw)
    ref_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    y_t, dx_t = _run(act.reference, x.to(ref_dtype), grad.to(ref_dtype), dim=0, **kw)
    y64, dx64 = _run(act.truth, x.double(), grad.double(), dim=0, **kw)
    no_nan_input = ~(a.isnan() | b.isnan()).to(device)
    for ours, theirs, truth, what in ((y, y_t, y64, "forward"), (dx, dx_t, dx64, "gradient")):
        ok = _agree(ours, theirs, dtype) | _agree(ours, truth, dtype)
        o, t = ours.double(), theirs.double()
        ok |= truth.isfinite() & o.isfinite() & ((o - truth).abs() <= (t - truth).abs())
        ok |= no_nan_input & truth.isnan() & t.isnan() & (o.isnan() | o.isinf())
        bad = (~ok).nonzero().tolist()
        assert not bad, (f"{what}: {len(bad)} elements, e.g. (a, b) = "
                         f"{[(a[c].item(), b[c].item(), ours[r, c].item(), theirs[r, c].item(), truth[r, c].item()) for r, c in bad[:3]]}")
    # NaN in, NaN out: every output of a pair with a NaN input is NaN (as in torch)
    nan_pair = a.isnan() | b.isnan()
    assert y[0, nan_pair.to(device)].isnan().all()


@pytest.mark.parametrize("dim", [-1, 0, 1])
@pytest.mark.parametrize("act,setting", CASES)
def test_gradcheck_and_gradgradcheck(act, setting, dim):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 6, 4, generator=g, dtype=torch.float64) * 2
    x = torch.where(x.abs() < 0.05, x + 0.1, x)  # away from relu's kink
    x.requires_grad_()
    kw = setting.kwargs(x)
    fn = lambda t: act.fused(t, dim=dim, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    # the Function class of torch.func's path too
    cls = fused_act.autograd.GATED_FUNCTIONS[_op(act, kw)]
    assert torch.autograd.gradcheck(lambda t: cls.apply(t, dim), (x,))
    assert torch.autograd.gradgradcheck(lambda t: cls.apply(t, dim), (x,))


def _op(act, kw):
    """The operator the call runs (GeGLU's approximate picks one of two)."""
    if len(act.ops) == 1:
        return act.ops[0]
    return {"none": "geglu", "tanh": "geglu_tanh"}[kw.get("approximate", "none")]


@pytest.mark.parametrize("act,setting", CASES)
def test_double_backward_matches_torch(act, setting):
    x = _input((3, 8), torch.float64, "cpu", 2.0).requires_grad_()
    kw = setting.kwargs(x)
    grad = _input((3, 4), torch.float64, "cpu", 1.0, seed=6).requires_grad_()
    out = []
    for fn in (act.fused, act.truth):
        (dx,) = torch.autograd.grad(fn(x, dim=-1, **kw), x, grad, create_graph=True)
        w = torch.linspace(-1, 1, dx.numel(), dtype=dx.dtype).view_as(dx)
        out.append(torch.autograd.grad((dx * w).sum(), (x, grad)))
    for ours, theirs in zip(*out):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dim", [-1, 0])
@pytest.mark.parametrize("act,setting", CASES)
def test_forward_ad(act, setting, dim):
    import torch.autograd.forward_ad as fwAD

    x = _input((4, 6), torch.float64, "cpu", 2.0)
    t = _input((4, 6), torch.float64, "cpu", 1.0, seed=7)
    kw = setting.kwargs(x)
    results = []
    for fn in (act.fused, act.truth):
        with fwAD.dual_level():
            y = fn(fwAD.make_dual(x, t), dim=dim, **kw)
            results.append(fwAD.unpack_dual(y).tangent)
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=1e-12)

    # forward over reverse: the tangent of the gradient (the backward's own tangent)
    grad = _input(_halved((4, 6), dim), torch.float64, "cpu", 1.0, seed=8)
    tangents = []
    for fn in (act.fused, act.truth):
        with fwAD.dual_level():
            xd = fwAD.make_dual(x.clone().requires_grad_(), t)
            (dx,) = torch.autograd.grad(fn(xd, dim=dim, **kw), xd, grad, create_graph=True)
            tangents.append(fwAD.unpack_dual(dx).tangent)
    torch.testing.assert_close(tangents[0], tangents[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("act,setting", CASES)
def test_torch_func_transforms(act, setting):
    x = _input((5, 6), torch.float64, "cpu", 2.0)
    kw = setting.kwargs(x)
    ours = lambda t: act.fused(t, dim=-1, **kw)  # noqa: E731
    theirs = lambda t: act.truth(t, dim=-1, **kw)  # noqa: E731
    tol = dict(rtol=1e-10, atol=1e-12)
    scalar = lambda f: (lambda t: (f(t) ** 2).sum())  # noqa: E731
    torch.testing.assert_close(torch.func.grad(scalar(ours))(x),
                               torch.func.grad(scalar(theirs))(x), **tol)
    torch.testing.assert_close(torch.func.jacfwd(ours)(x[0]), torch.func.jacfwd(theirs)(x[0]),
                               **tol)
    torch.testing.assert_close(torch.func.jacrev(ours)(x[0]), torch.func.jacrev(theirs)(x[0]),
                               **tol)
    torch.testing.assert_close(torch.func.hessian(scalar(ours))(x[0]),
                               torch.func.hessian(scalar(theirs))(x[0]), **tol)
    # vmap over a batch dim, each sample split along its own last dim and its dim 0
    for dim in (-1, 0):
        f = lambda t: act.fused(t, dim=dim, **kw)  # noqa: E731
        r = lambda t: act.truth(t, dim=dim, **kw)  # noqa: E731
        xb = _input((4, 4, 6), torch.float64, "cpu", 2.0)
        torch.testing.assert_close(torch.func.vmap(f)(xb), torch.stack([r(s) for s in xb]),
                                   **tol)
        torch.testing.assert_close(torch.func.vmap(f, in_dims=1)(xb),
                                   torch.stack([r(xb[:, i]) for i in range(4)]), **tol)
        # per-sample gradients: vmap(grad)
        torch.testing.assert_close(torch.func.vmap(torch.func.grad(scalar(f)))(xb),
                                   torch.func.vmap(torch.func.grad(scalar(r)))(xb), **tol)


@pytest.mark.parametrize("act,setting", CASES)
def test_compile_fullgraph(act, setting):
    torch._dynamo.reset()
    x = torch.randn(6, 4, 8)
    kw = setting.kwargs(x)

    def f(t):
        return act.fused(t * 1.0, dim=1, **kw).sum(dim=0)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    ya, yb = compiled(a), f(b)
    close(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    close(a.grad, b.grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("act", OPS)
def test_opcheck(act, device):
    ops = torch.ops.fused_act
    for op in act.ops:
        for shape, dim in (((5, 4, 6), -1), ((4, 6, 3), 1), ((6, 5), 0)):
            x = torch.randn(shape, device=device)
            g = torch.randn(_halved(shape, dim), device=device)
            torch.library.opcheck(getattr(ops, op), (x, dim))
            torch.library.opcheck(getattr(ops, op + "_backward"), (g, x, dim))
        xt = torch.randn(4, 6, 5, device=device).transpose(0, 2)  # non-contiguous
        torch.library.opcheck(getattr(ops, op), (xt, 1))


@pytest.mark.parametrize("act", OPS)
def test_saves_only_the_input(act):
    """The backward keeps the input (2N elements for N outputs) and nothing else; torch's
    composition keeps more (checked, as the README's figures say)."""
    x = torch.randn(64, 256, requires_grad=True)

    def saved(fn):
        storages = {}

        def pack(t):
            s = t.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(x)
        return storages

    ours = saved(lambda t: act.fused(t))
    assert ours == {x.untyped_storage().data_ptr(): x.nbytes}
    if act.name != "glu":  # torch's glu saves its input too
        assert sum(saved(lambda t: act.reference(t)).values()) > x.nbytes


@pytest.mark.parametrize("act", OPS)
def test_bad_inputs_are_errors_naming_the_operator(act):
    f = act.fused
    name = act.name
    with pytest.raises(RuntimeError, match=rf"fused_act::{name}.*Halving dimension must be "
                                           r"even, but dimension 1 is size 5"):
        f(torch.randn(3, 5))
    with pytest.raises(RuntimeError, match=rf"fused_act::{name}.*Halving dimension must be even"):
        f(torch.randn(3, 4), dim=0)
    with pytest.raises(IndexError, match=rf"fused_act::{name}: dim 2 is out of range"):
        f(torch.randn(3, 4), dim=2)
    with pytest.raises(IndexError, match=rf"fused_act::{name}: dim -3 is out of range"):
        f(torch.randn(3, 4), dim=-3)
    with pytest.raises(RuntimeError, match=rf"fused_act::{name}: a 0-dim input"):
        f(torch.tensor(1.0))
    with pytest.raises(TypeError, match=rf"fused_act.{name}\(\): argument 'dim' must be int"):
        f(torch.randn(3, 4), dim=1.0)
    with pytest.raises(TypeError, match=rf"fused_act.{name}\(\): argument 'dim' must be int"):
        f(torch.randn(3, 4), dim=True)
    if name in ("glu", "swiglu", "geglu"):  # torch has no integer kernel for these
        with pytest.raises(TypeError, match=rf"fused_act.{name}: unsupported dtype torch.int32"):
            f(torch.ones(3, 4, dtype=torch.int32))
    else:  # torch's relu(a) * b is defined on integers: its result
        xi = torch.arange(12, dtype=torch.int32).view(3, 4) - 6
        assert torch.equal(f(xi), act.reference(xi))
    # The operators themselves, and their fake kernels, say the same.
    op = getattr(torch.ops.fused_act, act.ops[0])
    with pytest.raises(RuntimeError, match="Halving dimension must be even"):
        op(torch.randn(3, 5), -1)
    with pytest.raises(TypeError, match=rf"fused_act::{act.ops[0]}: input has dtype Int"):
        op(torch.ones(3, 4, dtype=torch.int32), -1)
    with torch._subclasses.fake_tensor.FakeTensorMode():
        with pytest.raises(RuntimeError, match="Halving dimension must be even"):
            op(torch.empty(3, 5), -1)
    with pytest.raises(RuntimeError, match=rf"fused_act::{act.ops[0]}_backward: grad has shape"):
        getattr(torch.ops.fused_act, act.ops[0] + "_backward")(torch.randn(3, 4), torch.randn(3, 4), -1)


@pytest.mark.parametrize("act", OPS)
def test_module_repr_state_and_torchscript(act):
    m = act.module(**act.module_kwargs)
    default = act.module()
    assert default.dim == -1 and m.dim == act.module_kwargs["dim"]
    if act.torch_module is not None:
        assert isinstance(m, act.torch_module)
        assert repr(m) == repr(act.torch_module(**act.module_kwargs)).replace(
            act.torch_module.__name__, type(m).__name__)
    else:
        assert repr(default).startswith(f"{type(default).__name__}(dim=-1")
    assert m.state_dict() == {} and list(m.parameters()) == []
    x = torch.randn(4, 6, dtype=torch.float64)
    kw = {k: v for k, v in act.module_kwargs.items() if k != "dim"}
    close(m(x), act.fused(x, dim=m.dim, **kw))
    close(m(x), act.reference(x, dim=m.dim, **kw))
    scripted = torch.jit.script(m)
    close(scripted(x), m(x))


def test_convert_replaces_nn_glu_and_back():
    model = nn.Sequential(nn.Linear(8, 16), nn.GLU(dim=1), nn.Linear(8, 4), nn.GLU())
    x = torch.randn(5, 8)
    expected = model(x)
    fused, report = fused_act.convert(model, report=True)
    assert type(fused[1]) is fused_act.GLU and fused[1].dim == 1
    assert type(fused[3]) is fused_act.GLU and fused[3].dim == -1
    assert report.counts()[("nn.GLU", "fused_act.GLU")] == 2
    close(fused(x), expected)
    back = fused_act.unconvert(fused)
    assert type(back[1]) is nn.GLU and back[1].dim == 1
    # the modules torch.nn has no class for stay fused, and say so
    _, rep = fused_act.unconvert(nn.Sequential(fused_act.SwiGLU()), report=True)
    assert rep.kept and "no torch.nn equivalent" in rep.kept[0].reason


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(5, 2 * 8192), (7, 2 * 5001), (3, 2 * 9)],
                         ids=["aligned_halves", "unaligned_halves", "short_rows"])
@pytest.mark.parametrize("act,setting", CASES)
def test_nontemporal_stores_and_threads(act, setting, shape, dtype, cpu_capability):
    """Outputs written with non-temporal stores (threshold 0), on 2 threads, are the same
    bits as with cached stores on 1 thread; the halves of a row share a vector alignment
    (aligned_halves: both halves streamed) or not (unaligned_halves: cached)."""
    x = _input(shape, dtype, "cpu")
    grad = _input(_halved(shape, -1), dtype, "cpu", 1.0, seed=9)
    kw = setting.kwargs(x)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1, dx1 = _run(act.fused, x, grad, **kw)
        torch.set_num_threads(2)
        fused_act.set_nontemporal_threshold(0)
        y2, dx2 = _run(act.fused, x, grad, **kw)
    finally:
        fused_act.set_nontemporal_threshold(None)
        torch.set_num_threads(threads)
    assert torch.equal(y1, y2) and torch.equal(dx1, dx2)
    if dtype == torch.float32:
        y_ref, dx_ref = _run(act.reference, x, grad, **kw)
        y64, dx64 = _run(act.truth, x.double(), grad.double(), **kw)
        _near_torch_or_no_worse(y2, y_ref, y64, "forward")
        _near_torch_or_no_worse(dx2, dx_ref, dx64, "gradient")


class _Gated(nn.Module):
    def __init__(self, fn, dim, kwargs):
        super().__init__()
        self.fn, self.dim, self.kwargs = fn, dim, kwargs

    def forward(self, x):
        return self.fn(x * 1.0, dim=self.dim, **self.kwargs)


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
@pytest.mark.parametrize("act,setting", CASES)
def test_onnx_export_runs_in_onnxruntime(act, setting, exporter):
    """Exported (both exporters) to standard ONNX operators (Split and the activation's),
    along the last and a middle dim, and run in onnxruntime against torch's composition."""
    import io
    import re
    import warnings

    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    if exporter == "dynamo" and tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2]) < (2, 6):
        pytest.skip("the dynamo exporter's custom_translation_table needs torch 2.6")
    from fused_act.onnx import LEGACY_OPSET, register_legacy_symbolics

    x = torch.randn(3, 6, 8) * 4
    kw = setting.kwargs(x)
    for dim in (-1, 1):
        model = _Gated(act.fused, dim, kw).eval()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                proto = torch.onnx.export(
                    model, (x,), dynamo=True, verbose=False,
                    custom_translation_table=fused_act.onnx_translation_table()).model_proto
            else:
                register_legacy_symbolics()
                buffer = io.BytesIO()
                torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=LEGACY_OPSET)
                proto = onnx.load_from_string(buffer.getvalue())
        onnx.checker.check_model(proto)
        assert all(node.domain in ("", "ai.onnx") for node in proto.graph.node)
        assert not proto.functions
        assert "Split" in {node.op_type for node in proto.graph.node}
        session = ort.InferenceSession(proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        close(torch.from_numpy(out), act.reference(x, dim=dim, **kw), msg=f"dim {dim}")
