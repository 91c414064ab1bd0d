"""Every autograd path PyTorch offers, for every activation of fused_act.table, against
torch's own operator: in-place safety (version counter, views, inference tensors),
forward-mode AD, torch.func transforms, autocast, other layouts, FX, TorchScript and the
argument errors."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fused_act
import fused_act.functional as FA
from fused_act.table import ACTIVATIONS, ALL

from conftest import DEVICES

CASES = [pytest.param(a, s, id=f"{a.name}-{s.id}") for a in ALL for s in a.settings]
INPLACE = [pytest.param(a, s, id=f"{a.name}-{s.id}") for a in ACTIVATIONS if a.inplace
           for s in a.settings]


def _fns(act, setting, x):
    """(fused, torch) as functions of x alone (tensor settings become constants)."""
    kw = setting.kwargs(x)
    return (lambda t: act.fused(t, **kw)), (lambda t: act.reference(t, **kw))


def _torch_or_truth(act, setting, x, run, theirs):
    """run(theirs), or, where torch's own operator has no forward-mode formula for its
    backward (hardsigmoid_backward), run() of the row's float64 truth (a composite)."""
    try:
        return run(theirs)
    except NotImplementedError as err:
        assert "forward AD" in str(err) and act.exact is not None, err
        kw = setting.kwargs(x)
        return run(lambda t: act.exact(t, **kw))


def _input(shape=(3, 4, 5), dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    # Away from the kinks (0 and 6) so that finite pieces agree exactly between the two.
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    x = torch.where(x.abs() < 0.05, x + 0.1, x)
    x = torch.where((x - 6).abs() < 0.05, x + 0.1, x)
    return x.to(device=device, dtype=dtype)


# torch's float64 Hardsigmoid and CELU backwards multiply by float32 constants (1/6 and
# 1/alpha), so its float64 results for them are only float32-accurate: compared with torch
# in float64 at that accuracy.  (tests/test_activations.py checks fused_act's
# float64 results for them against float64 math.)
TORCH_FLOAT64_AT_FLOAT32_ACCURACY = {"hardsigmoid", "celu"}
_float64_tol = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(autouse=True)
def _torch_float64_accuracy(request):
    global _float64_tol
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    act = params.get("act")
    name = getattr(act, "name", None) or str(params.get("name", ""))
    loose = name in TORCH_FLOAT64_AT_FLOAT32_ACCURACY or any(
        name == f"{n.capitalize()}Function" for n in TORCH_FLOAT64_AT_FLOAT32_ACCURACY)
    # 2^-24 relative in 1/alpha (or 1/6) becomes |x / alpha| * 2^-24 in exp(x / alpha): 1e-6
    # covers |x / alpha| up to 16 (these tests' inputs)
    _float64_tol = dict(rtol=1e-6, atol=1e-12) if loose else dict(rtol=1e-10, atol=1e-12)
    yield
    _float64_tol = dict(rtol=1e-10, atol=1e-12)


def _tol(dtype):
    return {torch.float64: _float64_tol, torch.float32: dict(rtol=2e-5, atol=1e-6),
            torch.bfloat16: dict(rtol=2e-2, atol=2e-2), torch.float16: dict(rtol=2e-3, atol=2e-3)}[dtype]


def _close(a, b, dtype=torch.float64):
    if isinstance(a, (tuple, list)):
        for u, v in zip(a, b):
            _close(u, v, dtype)
        return
    torch.testing.assert_close(a, b, **_tol(dtype))


# ---- in place: the dispatcher's version counter, views, inference tensors ----------

def _inplace_entry_points(act, setting):
    """Every public way to run the activation in place, paired with torch's."""
    kw = setting.kwargs(torch.zeros(1))
    torch_kw = dict(kw)
    pairs = [("functional", lambda t: act.fused(t, inplace=True, **kw),
              lambda t: act.reference(t, inplace=True, **torch_kw))]
    underscore = getattr(FA, act.name + "_", None)
    if underscore is not None:
        pairs.append(("underscore", lambda t: underscore(t, **kw),
                      lambda t: getattr(F, act.name + "_", None)(t, **torch_kw)
                      if hasattr(F, act.name + "_") else act.reference(t, inplace=True, **torch_kw)))
    # (the settings' keywords are the modules' arguments too)
    pairs.append(("module", act.module(inplace=True, **kw), act.torch_module(inplace=True, **kw)))
    if any(isinstance(v, float) and v < 0 for v in kw.values()):
        # torch refuses in-place backward with a negative slope / alpha (fused_act keeps a
        # copy of the input instead): the reference is the out-of-place result copied in.
        def written_back(t):
            return t.copy_(act.reference(t.clone(), **torch_kw))
        pairs = [(entry, ours, written_back) for entry, ours, _ in pairs]
    return pairs


def _outcome(fn):
    """('ok', value) or ('raised', exception type) of fn(); torch's refusal of in-place
    negative slopes / alphas (which fused_act supports) is ('unsupported', None)."""
    try:
        return "ok", fn()
    except RuntimeError as err:
        if "negative slope" in str(err):
            return "unsupported", None
        return "raised", type(err)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("act,setting", INPLACE)
def test_inplace_bumps_version_counter_like_torch(act, setting, device):
    for entry, ours, theirs in _inplace_entry_points(act, setting):
        ours, theirs = (f.to(device) if isinstance(f, nn.Module) else f for f in (ours, theirs))
        results = []
        for fn in (ours, theirs):
            w = torch.ones(4, requires_grad=True, device=device)
            x = torch.tensor([-1.0, 2.0, 0.5, -3.0], device=device)
            z = (x * w).sum()      # mul saves x for the gradient of w
            v = x._version
            fn(x)
            assert x._version > v, entry
            results.append(_outcome(lambda: z.backward()))
        assert results[0][0] == results[1][0] == "raised", (entry, results)


@pytest.mark.parametrize("act,setting", INPLACE)
def test_inplace_no_grad_and_detached_alias_bump_version(act, setting):
    for entry, ours, _ in _inplace_entry_points(act, setting):
        w = torch.ones(3, requires_grad=True)
        base = torch.tensor([-1.0, 2.0, 0.5], requires_grad=True)
        y = base * 2
        z = (y * w).sum()
        with torch.no_grad():
            ours(y)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            z.backward()
        y = base * 2
        z = (y * w).sum()
        ours(y.detach())      # a detached alias shares the version counter
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            z.backward()


@pytest.mark.parametrize("act,setting", INPLACE)
def test_inplace_on_inference_tensor_raises_like_torch(act, setting):
    for entry, ours, theirs in _inplace_entry_points(act, setting):
        with torch.inference_mode():
            a, b = torch.randn(5), torch.randn(5)
        with pytest.raises(RuntimeError, match="Inplace update to inference tensor") as torch_err:
            theirs(b)
        with pytest.raises(RuntimeError, match="Inplace update to inference tensor"):
            ours(a)
        assert torch_err.value is not None
        with torch.inference_mode():  # and works inside inference mode, as torch's
            c = torch.randn(5)
            expected = c.clone()
            theirs(expected)
            ours(c)
            torch.testing.assert_close(c, expected)


@pytest.mark.parametrize("act,setting", INPLACE)
def test_inplace_then_another_inplace_like_torch(act, setting):
    """x = act(x, inplace=True); x.mul_(2); backward: fused_act raises exactly when torch
    does (when its backward needs the overwritten output), else gives torch's gradient."""
    for entry, ours, theirs in _inplace_entry_points(act, setting):
        outcomes = []
        for fn in (ours, theirs):
            leaf = torch.tensor([-1.5, 2.0, 0.5, 7.0, -0.2], dtype=torch.float64, requires_grad=True)
            x = leaf * 1.0
            x = fn(x)
            x.mul_(2)

            def run():
                x.sum().backward()
                return leaf.grad.clone()
            outcomes.append(_outcome(run))
        if outcomes[1][0] == "unsupported":  # then: torch's out-of-place gradient
            leaf = torch.tensor([-1.5, 2.0, 0.5, 7.0, -0.2], dtype=torch.float64,
                                requires_grad=True)
            (2 * _fns(act, setting, leaf)[1](leaf * 1.0)).sum().backward()
            outcomes[1] = ("ok", leaf.grad)
        assert outcomes[0][0] == outcomes[1][0], (entry, outcomes)
        if outcomes[0][0] == "ok":
            _close(outcomes[0][1], outcomes[1][1])


@pytest.mark.parametrize("act,setting", INPLACE)
def test_inplace_on_a_view_replays_like_torch(act, setting):
    grads, values = [], []
    for fn in (_inplace_entry_points(act, setting)[0][1], _inplace_entry_points(act, setting)[0][2]):
        leaf = _input((4, 6)).requires_grad_()
        base = leaf * 1.0
        view = base[:, 2:5]
        fn(view)
        assert base.grad_fn is not None
        (base * torch.arange(6, dtype=torch.float64)).sum().backward()
        grads.append(leaf.grad)
        values.append(base.detach())
    _close(values[0], values[1])
    _close(grads[0], grads[1])


@pytest.mark.parametrize("act,setting", INPLACE)
def test_inplace_forward_ad(act, setting):
    """The tangent of an in-place call is updated in place, to torch's out-of-place
    tangent (torch's own in-place forms refuse negative slopes / alphas)."""
    ours = _inplace_entry_points(act, setting)[0][1]
    theirs = _fns(act, setting, torch.zeros(1))[1]
    import torch.autograd.forward_ad as fwAD
    x, t = _input(), _input(seed=1)
    out = []
    for fn in (ours, theirs):
        with fwAD.dual_level():
            d = fwAD.make_dual(x.clone(), t.clone())
            y = fn(d)
            out.append(fwAD.unpack_dual(y).tangent.clone())
    _close(out[0], out[1])


# ---- forward mode ---------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("act,setting", CASES)
def test_forward_ad_dual_tensors(act, setting, dtype, device):
    import torch.autograd.forward_ad as fwAD
    x, t = _input(dtype=dtype, device=device), _input(dtype=dtype, device=device, seed=1)
    ours, theirs = _fns(act, setting, x)
    tangents = []
    for fn in (ours, theirs):
        with fwAD.dual_level():
            y = fn(fwAD.make_dual(x, t))
            tangents.append(fwAD.unpack_dual(y).tangent)
    assert tangents[0] is not None
    if dtype == torch.float64:
        _close(tangents[0], tangents[1], dtype)
        return
    # Lower precision: against the float64 tangent, no further from it than torch's own
    # (torch's float32 GELU-tanh derivative is 2.4e-4 off near its zero, where fused_act's
    # is exact), plus the dtype's tolerance.
    x64, t64 = x.double(), t.double()
    kw64 = setting.kwargs(x64)
    with fwAD.dual_level():
        ref = fwAD.unpack_dual(act.truth(fwAD.make_dual(x64, t64), **kw64)).tangent
    err, torch_err = ((tg.double() - ref).abs() for tg in tangents)
    tol = _tol(dtype)
    assert (err <= torch_err + tol["atol"] + tol["rtol"] * ref.abs()).all(), (
        (err - torch_err).max().item())


WEIGHTED_CASES = [c for c in CASES if any(isinstance(v, torch.Tensor) for v in
                                           c.values[1].kwargs(torch.zeros(3, 4, 5)).values())]


@pytest.mark.parametrize("act,setting", WEIGHTED_CASES)
def test_forward_ad_weight_tangent(act, setting):
    """Tangents of tensor parameters (PReLU's weight, a tensor beta) reach the output."""
    import torch.autograd.forward_ad as fwAD
    x = _input()
    kw = setting.kwargs(x)
    names = [k for k, v in kw.items() if isinstance(v, torch.Tensor)]
    out = []
    for fn in (act.fused, act.reference):
        with fwAD.dual_level():
            duals = {k: fwAD.make_dual(kw[k], torch.ones_like(kw[k]) * 0.3) for k in names}
            y = fn(fwAD.make_dual(x, _input(seed=2)), **{**kw, **duals})
            out.append(fwAD.unpack_dual(y).tangent)
    _close(out[0], out[1])


@pytest.mark.parametrize("act,setting", CASES)
def test_double_backward_with_dual_tensors(act, setting):
    """Forward-over-reverse without torch.func: the tangent of a gradient."""
    import torch.autograd.forward_ad as fwAD
    x, t, g = _input(), _input(seed=1), _input(seed=2)
    out = []

    def run(fn):
        with fwAD.dual_level():
            xd = fwAD.make_dual(x.clone().requires_grad_(), t)
            (dx,) = torch.autograd.grad(fn(xd), xd, g, create_graph=True)
            return fwAD.unpack_dual(dx).primal.detach(), fwAD.unpack_dual(dx).tangent

    ours, theirs = _fns(act, setting, x)
    out = [run(ours), _torch_or_truth(act, setting, x, run, theirs)]
    _close(out[0][0], out[1][0])
    # an undefined tangent is a zero one (torch leaves it undefined for piecewise-linear ops)
    tangents = [t if t is not None else torch.zeros_like(x) for _, t in out]
    _close(tangents[0], tangents[1])


# ---- torch.func --------------------------------------------------------------------

def _no_fallback_warning(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    slow = [w for w in caught if "performance drop" in str(w.message) or
            "batching rule" in str(w.message)]
    assert not slow, [str(w.message) for w in slow]
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("act,setting", CASES)
def test_func_jvp_vjp_grad_vmap(act, setting, dtype, device):
    from torch import func
    x, t = _input(dtype=dtype, device=device), _input(dtype=dtype, device=device, seed=1)
    # vmap's functions see one slice: tensor settings (per-channel weights) are built for it
    fns, fns0, fns1 = (_fns(act, setting, x), _fns(act, setting, x[0]),
                       _fns(act, setting, x[:, 0]))
    if dtype != torch.float64:  # third: torch's in float64, the reference
        x64, t64 = x.double(), t.double()
        fns = fns + (_fns(act, setting, x64)[1],)
        fns0, fns1 = fns0 + (_fns(act, setting, x64[0])[1],), fns1 + (_fns(act, setting, x64[:, 0])[1],)
    res = []
    for k in range(len(fns)):
        if k == 2:
            x, t = x64, t64
        fn, fn0, fn1 = fns[k], fns0[k], fns1[k]
        y, y_t = func.jvp(fn, (x,), (t,))
        _, pullback = func.vjp(fn, x)
        (v,) = pullback(t)
        gr = func.grad(lambda u: (fn(u) * t).sum())(x)
        vm = _no_fallback_warning(lambda: func.vmap(fn0)(x)) if k == 0 else func.vmap(fn0)(x)
        vm1 = func.vmap(fn1, in_dims=1, out_dims=1)(x)
        res.append((y, y_t, v, gr, vm, vm1))
    names = ("value", "jvp", "vjp", "grad", "vmap", "vmap_dim1")
    if dtype == torch.float64:
        for name, a, b in zip(names, *res):
            _close(a, b, dtype)
        return
    for name, a, b, ref in zip(names, *res):
        # Our largest error against the float64 result: at most torch's own, plus a few
        # ULP of the largest value (the tangents and gradients of softmax cancel).
        assert a.dtype == b.dtype == dtype, name
        err, torch_err = (a.double() - ref).abs().max(), (b.double() - ref).abs().max()
        bound = torch_err + 4 * torch.finfo(dtype).eps * ref.abs().max() + 1e-6
        assert err <= bound, (name, err.item(), torch_err.item())


@pytest.mark.parametrize("act,setting", CASES)
def test_func_jacobians_and_hessian(act, setting):
    from torch import func
    x = _input((2, 3))
    ours, theirs = _fns(act, setting, x)
    def probe(fn):
        func.jacfwd(func.jacrev(fn))(x)
        return fn
    theirs = _torch_or_truth(act, setting, x, probe, theirs)
    for transform in (func.jacrev, func.jacfwd):
        _close(transform(ours)(x), transform(theirs)(x))
    _close(func.jacfwd(func.jacrev(ours))(x), func.jacfwd(func.jacrev(theirs))(x))
    _close(func.hessian(lambda u: ours(u).pow(2).sum())(x),
           func.hessian(lambda u: theirs(u).pow(2).sum())(x))
    _close(func.jacrev(func.jacrev(ours))(x), func.jacrev(func.jacrev(theirs))(x))


class _FunctionModule(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("act,setting", CASES)
def test_func_per_sample_gradients(act, setting):
    """functional_call + vmap(grad): per-sample gradients of a small model whose
    activation is the module (with its parameters, e.g. PReLU's weight)."""
    from torch import func
    torch.manual_seed(0)
    kwargs = dict(act.module_kwargs)
    torch_act = (act.torch_module(**kwargs) if act.torch_module is not None
                 else _FunctionModule(act.reference))  # no torch.nn class (ReLUSquared)
    torch_model = nn.Sequential(nn.Linear(5, 6), torch_act, nn.Linear(6, 2)).double()
    ours_model = fused_act.convert(__import__("copy").deepcopy(torch_model))
    if act.torch_module is None:
        ours_model[1] = act.module(**kwargs)
    if act.name == "swish":
        ours_model[1] = fused_act.Swish(beta=1.3, trainable=True).double()
    x, target = _input((8, 5)), _input((8, 2), seed=3)
    results = []
    for model in (ours_model, torch_model):
        params = {k: v.detach() for k, v in model.named_parameters()}

        def loss(p, xi, ti):
            out = func.functional_call(model, p, (xi[None],))
            return ((out - ti[None]) ** 2).sum()

        results.append(func.vmap(func.grad(loss), in_dims=(None, 0, 0))(params, x, target))
    if act.name == "swish":  # no torch.nn twin with a trainable beta: the composite
        ref = {k: v for k, v in results[1].items()}
        beta = ours_model[1].beta.detach()

        def loss_ref(p, xi, ti):
            h = F.linear(xi[None], p["0.weight"], p["0.bias"])
            h = h * torch.sigmoid(p["1.beta"] * h)
            out = F.linear(h, p["2.weight"], p["2.bias"])
            return ((out - ti[None]) ** 2).sum()
        params = {k: v.detach() for k, v in ours_model.named_parameters()}
        ref = func.vmap(func.grad(loss_ref), in_dims=(None, 0, 0))(params, x, target)
        assert beta.shape == (1,)
        results[1] = ref
    assert results[0].keys() == results[1].keys()
    for k in results[0]:
        _close(results[0][k], results[1][k])


def _function_and_reference(name, cls):
    """Function class NAME (of one elementwise operator) and torch's function for it, with
    the table's last setting (a non-default parameter where the row has one)."""
    from fused_act import _table
    for row in _table.ROWS:
        if isinstance(row.op, tuple):
            param, choices = row.op
            variants = [({param: value}, op) for value, op in choices.items()]
        else:
            variants = [(row.settings[-1].kwargs(torch.zeros(1)), row.op)]
        for kwargs, op in variants:
            if cls is fused_act.autograd.FUNCTIONS[op] and row.name != "silu":
                p, q = (kwargs.get(v, dict(row.params).get(v)) if isinstance(v, str) else v
                        for v in (row.p, row.q))
                exact = row.exact or row.torch_function
                return ((lambda u: cls.apply(u, p, q)),
                        (lambda u: row.torch_function(u, **kwargs)),
                        (lambda u: exact(u, **kwargs)))
    raise AssertionError(f"no table row calls {name}")


def _gated_function_and_reference(cls):
    """Function class of one gated operator, applied along the last dim, and torch's
    composition for it (the row's float64 truth where it has one)."""
    from fused_act import _table
    for row in _table.GATED_ROWS:
        if isinstance(row.op, tuple):
            param, choices = row.op
            variants = [({param: value}, op) for value, op in choices.items()]
        else:
            variants = [({}, row.op)]
        for kwargs, op in variants:
            if cls is fused_act.autograd.GATED_FUNCTIONS[op]:
                exact = row.exact or row.torch_function
                return ((lambda u: cls.apply(u, -1)),
                        (lambda u: row.torch_function(u, -1, **kwargs)),
                        (lambda u: exact(u, -1, **kwargs)))
    raise AssertionError(f"no gated row calls {cls.__name__}")


@pytest.mark.parametrize("name", [n for n in fused_act.autograd.__all__ if n.endswith("Function")
                                  and n not in ("SoftmaxBackwardFunction", "MaxoutBackwardFunction",
                                                "MaxoutGatherFunction")])
def test_public_function_classes_under_transforms(name):
    from torch import func
    cls = getattr(fused_act.autograd, name)
    x = _input((3, 4))
    if name in ("PreluFunction", "SwishWeightedFunction"):
        w = torch.linspace(0.1, 0.4, 4, dtype=torch.float64)
        ref = getattr(torch.ops.fused_act, "prelu_reference" if name == "PreluFunction"
                      else "swish_weighted_reference")
        fn, theirs = (lambda u: cls.apply(u, w)), (lambda u: ref(u, w))
        exact = theirs
    elif name in ("SoftmaxFunction", "LogSoftmaxFunction"):
        fn = lambda u: cls.apply(u, 1)  # noqa: E731
        theirs = (lambda u: torch.log_softmax(u, 1)) if name.startswith("Log") else (
            lambda u: torch.softmax(u, 1))
        exact = theirs
    elif name == "MaxoutFunction":  # (y, mask of maxima); pairs of dim 1
        fn = lambda u: cls.apply(u, 2, 1)[0]  # noqa: E731
        theirs = lambda u: u.unflatten(1, (-1, 2)).amax(2)  # noqa: E731
        exact = theirs
    elif name == "SwishFunction":
        fn, theirs = (lambda u: cls.apply(u, 1.3, 0.0)), (lambda u: u * torch.sigmoid(1.3 * u))
        exact = theirs
    elif cls in fused_act.autograd.GATED_FUNCTIONS.values():
        fn, theirs, exact = _gated_function_and_reference(cls)
    else:
        fn, theirs, exact = _function_and_reference(name, cls)
    t = _input((3, 4), seed=1)
    _close(func.jvp(fn, (x,), (t,))[1], func.jvp(theirs, (x,), (t,))[1])
    _close(func.grad(lambda u: fn(u).sum())(x), func.grad(lambda u: theirs(u).sum())(x))
    xb = _input((2, 3, 4), seed=4)  # a batch of x-shaped inputs (channels stay on dim 1)
    _close(_no_fallback_warning(lambda: func.vmap(fn)(xb)), func.vmap(theirs)(xb))
    try:
        h_theirs = func.hessian(lambda u: theirs(u).pow(2).sum())(x)
    except NotImplementedError as err:  # torch's hardsigmoid_backward: no forward-AD formula
        assert "forward AD" in str(err)
        h_theirs = func.hessian(lambda u: exact(u).pow(2).sum())(x)
    _close(func.hessian(lambda u: fn(u).pow(2).sum())(x), h_theirs)


# ---- autocast ------------------------------------------------------------------------

@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=str)
def test_autocast_weighted_modules(low):
    lin = nn.Linear(6, 6)
    for ours, theirs in ((fused_act.PReLU(6), nn.PReLU(6)), (fused_act.PReLU(), nn.PReLU())):
        x = torch.randn(4, 6)
        outs = []
        for m in (ours, theirs):
            m.weight.grad = None
            with torch.autocast("cpu", low):
                y = m(lin(x))
            y.float().sum().backward()
            outs.append((y, m.weight.grad))
        assert outs[0][0].dtype == outs[1][0].dtype == low
        assert outs[0][1].dtype == outs[1][1].dtype == torch.float32
        torch.testing.assert_close(outs[0][0], outs[1][0], rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(outs[0][1], outs[1][1], rtol=5e-2, atol=5e-2)
    sw = fused_act.Swish(trainable=True)
    with torch.autocast("cpu", low):
        y = sw(lin(torch.randn(4, 6)))
    assert y.dtype == low
    y.float().sum().backward()
    assert sw.beta.grad.dtype == torch.float32 and torch.isfinite(sw.beta.grad).all()


@pytest.mark.parametrize("act,setting", CASES)
def test_autocast_output_dtype_like_torch(act, setting):
    x = torch.randn(4, 6)
    ours, theirs = _fns(act, setting, x)
    for inp in (x, x.bfloat16()):
        with torch.autocast("cpu", torch.bfloat16):
            a, b = ours(inp), theirs(inp)
        if act.name == "swish" and isinstance(setting.kwargs(x).get("beta"), torch.Tensor):
            # no torch operator; the composite promotes to beta's float32, fused_act keeps
            # the input's dtype as nn.SiLU does
            b = b.to(inp.dtype)
        assert a.dtype == b.dtype, (inp.dtype, a.dtype, b.dtype)


# ---- other layouts and tensor types -------------------------------------------------

@pytest.mark.parametrize("act,setting", CASES)
def test_sparse_and_nested_inputs_get_torch_result(act, setting):
    dense = _input((3, 4), dtype=torch.float32)
    ours, theirs = _fns(act, setting, dense)
    nested = torch.nested.nested_tensor([dense[:2], dense[1:]], layout=torch.jagged)
    for inp in (dense.to_sparse(), dense.to_sparse_csr(), nested):
        try:
            expected = theirs(inp)
        # IndexError: torch 2.4's jagged layout, multiplying by a (1,)-shaped beta
        except (RuntimeError, NotImplementedError, TypeError, IndexError):
            with pytest.raises((RuntimeError, NotImplementedError, TypeError, IndexError),
                               match=rf"fused_act\.{act.name}"):
                ours(inp)
            continue
        got = ours(inp)
        assert type(got) is type(expected) and got.layout == expected.layout
        if inp.is_nested:
            for a, b in zip(got.unbind(), expected.unbind()):
                torch.testing.assert_close(a, b)
        else:
            torch.testing.assert_close(got.to_dense(), expected.to_dense())


def test_mixed_devices_are_rejected():
    x = torch.randn(4, 3)
    for beta in (torch.ones(1, device="meta"), torch.ones(3, device="meta")):
        with pytest.raises(RuntimeError, match=r"fused_act.swish: weight is on meta"):
            FA.swish(x, beta)
    with pytest.raises(RuntimeError, match=r"weight is on cpu"):
        FA.swish(torch.randn(4, 3, device="meta"), torch.ones(1))
    with pytest.raises(RuntimeError, match=r"fused_act::swish_weighted: weight is on meta"):
        torch.ops.fused_act.swish_weighted(x, torch.ones(1, device="meta"))
    with pytest.raises(RuntimeError, match=r"fused_act::prelu: weight is on cpu"):
        torch.ops.fused_act.prelu(torch.randn(2, 3, device="meta"), torch.ones(3))


# ---- FX and TorchScript -----------------------------------------------------------------

def _model_with_every_module():
    return nn.Sequential(
        nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU6(inplace=True), nn.Linear(8, 8),
        nn.LeakyReLU(0.2), nn.Linear(8, 8), nn.PReLU(8), nn.Linear(8, 8), nn.ELU(0.5, inplace=True),
        nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.SiLU(),
        nn.Linear(8, 8), nn.Softmax(dim=-1), nn.Linear(8, 8), nn.LogSoftmax(dim=1))


def test_fx_symbolic_trace_of_converted_model():
    import copy
    torch.manual_seed(0)
    model = _model_with_every_module().double()
    fused = fused_act.convert(copy.deepcopy(model))
    traced = torch.fx.symbolic_trace(fused)
    calls = [n.target for n in traced.graph.nodes if n.op in ("call_function", "call_module")]
    assert calls, "nothing traced"
    x = _input((5, 8)).requires_grad_()
    y, y_ref = traced(x), model(x)
    _close(y, y_ref)
    g = torch.randn_like(y)
    _close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(y_ref, x, g)[0])


@pytest.mark.parametrize("act", ALL, ids=lambda a: a.name)
def test_torchscript_modules(act):
    kwargs = dict(act.module_kwargs)
    if act.torch_module is None:  # no torch.nn class (ReLUSquared): torch's function
        mods = [(act.module(**kwargs), _FunctionModule(act.reference))]
    else:
        mods = [(act.module(**kwargs), act.torch_module(**kwargs))]
    if act.inplace:
        mods.append((act.module(inplace=True, **kwargs), act.torch_module(inplace=True, **kwargs)))
    if act.name == "swish":
        mods = [(fused_act.Swish(), nn.SiLU()), (fused_act.Swish(beta=1.0, trainable=True), nn.SiLU())]
    for ours, theirs in mods:
        theirs.load_state_dict(ours.state_dict()) if not isinstance(ours, fused_act.Swish) else None
        scripted = torch.jit.script(ours.double())
        theirs = theirs.double()
        x = _input((3, 5))
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = scripted(xa * 1.0), theirs(xb * 1.0)
        _close(ya, yb)
        ya.sum().backward()
        yb.sum().backward()
        _close(xa.grad, xb.grad)


def test_torchscript_converted_model():
    import copy
    torch.manual_seed(0)
    model = _model_with_every_module().double()
    scripted = torch.jit.script(fused_act.convert(copy.deepcopy(model)))
    x = _input((5, 8))
    _close(scripted(x), model(x))


# ---- argument errors ------------------------------------------------------------------

@pytest.mark.parametrize("fn", [FA.softmax, FA.log_softmax])
def test_softmax_dim_argument_errors(fn):
    x = torch.randn(3, 4)
    for bad in (1.0, True, "a"):
        with pytest.raises(TypeError, match=rf"fused_act\.{fn.__name__}\(\): argument 'dim' must be int"):
            fn(x, dim=bad)
        with pytest.raises((TypeError, RuntimeError)):  # torch 2.4 reads a str as a dim name
            getattr(torch, fn.__name__)(x, bad)
    with pytest.raises(IndexError, match=rf"fused_act::{fn.__name__}: dim {10**20} is out of range"):
        fn(x, dim=10**20)


def test_scalar_parameter_argument_errors():
    x = torch.randn(3, 4)
    with pytest.raises(TypeError, match=r"fused_act\.swish\(\): argument 'beta' must be a number"):
        FA.swish(x, [0.1, 0.2])
    with pytest.raises(TypeError, match=r"fused_act\.leaky_relu\(\): argument 'negative_slope'"):
        FA.leaky_relu(x, "0.1")
    with pytest.raises(TypeError, match=r"fused_act\.elu\(\): argument 'alpha'"):
        FA.elu(x, None)
    torch.testing.assert_close(FA.leaky_relu(x, 1), F.leaky_relu(x, 1))  # ints are numbers


# ---- ELU: the gradient is accurate in every dtype ------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64],
                         ids=str)
@pytest.mark.parametrize("alpha", [1.0, 1.3081])
def test_elu_gradient_for_large_negative_inputs(dtype, alpha):
    x = torch.tensor([-0.5, -2.0, -8.0, -12.0, -17.0, -20.0, -40.0, -1e4, float("-inf")],
                     dtype=torch.float64).to(dtype)
    g = torch.ones_like(x)
    (ours,) = torch.autograd.grad(FA.elu(x.clone().requires_grad_(), alpha), x, g) if False else \
        torch.autograd.grad(FA.elu(xr := x.clone().requires_grad_(), alpha), xr, g)
    (theirs,) = torch.autograd.grad(F.elu(xt := x.clone().requires_grad_(), alpha), xt, g)
    x64 = x.double()
    ref = (alpha * torch.exp(x64)).to(torch.float64)
    err, torch_err = (ours.double() - ref).abs(), (theirs.double() - ref).abs()
    ulp = torch.finfo(dtype).eps * ref.abs() + torch.finfo(dtype).tiny
    assert (err <= torch_err + 2 * ulp).all(), (ours, theirs, ref)


def test_elu_double_backward_at_zero_matches_torch():
    x = torch.tensor([0.0, -0.0, -1.0, 1.0], dtype=torch.float64, requires_grad=True)
    out = []
    for fn in (FA.elu, F.elu):
        (g,) = torch.autograd.grad(fn(x, 0.8).sum(), x, create_graph=True)
        (gg,) = torch.autograd.grad(g.sum(), x)
        out.append(gg)
    _close(out[0], out[1])


# ---- checkpointing and DDP ------------------------------------------------------------

@pytest.mark.parametrize("use_reentrant", [False, True])
def test_activation_checkpointing(use_reentrant):
    import copy

    from torch.utils.checkpoint import checkpoint
    torch.manual_seed(0)
    model = _model_with_every_module().double()
    fused = fused_act.convert(copy.deepcopy(model))
    x = _input((5, 8)).requires_grad_()
    grads = []
    for m, ckpt in ((fused, True), (model, False)):
        m.zero_grad()
        y = checkpoint(m, x, use_reentrant=use_reentrant) if ckpt else m(x)
        y.sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        _close(a, b)


def test_distributed_data_parallel_single_process(tmp_path):
    import copy

    import torch.distributed as dist
    if not dist.is_available():
        pytest.skip("torch.distributed is not built into this torch")
    torch.manual_seed(0)
    model = _model_with_every_module().double()
    fused = fused_act.convert(copy.deepcopy(model))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(fused)
        x = _input((5, 8))
        ddp(x).sum().backward()
        model(x).sum().backward()
        for p, q in zip(fused.parameters(), model.parameters()):
            _close(p.grad, q.grad)
    finally:
        dist.destroy_process_group()
