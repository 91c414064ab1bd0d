"""PyTorch integration: operator registration, opcheck, torch.compile, convert(), errors."""
import os
import struct

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fused_act
import fused_act.functional as FA
from fused_act._ops import ELEMENTWISE_OPS, WEIGHTED_OPS
from fused_act.table import ACTIVATIONS, ALL

from conftest import DEVICES
from helpers import close

ALL_OPS = ([n for op in ELEMENTWISE_OPS for n in (op, op + "_", op + "_backward")]
           + [n for op in WEIGHTED_OPS for n in (op, op + "_backward")])


# ---- registration -------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_OPS)
def test_cpu_kernel_registered(name):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fused_act::{name}", "CPU")


def _elf_section_sizes(path):
    """Section name -> size of an ELF64 little-endian shared library."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_off = headers[shstrndx][4]
    out = {}
    for h in headers:
        end = data.index(b"\0", names_off + h[0])
        out[data[names_off + h[0]:end].decode()] = h[5]
    return out


CUDA_EXPECTED = os.environ.get("FUSED_ACT_EXPECT_CUDA") == "1"


@pytest.mark.skipif(not (fused_act.built_with_cuda() or CUDA_EXPECTED),
                    reason="this build has no CUDA kernels and none were expected")
def test_cuda_kernels_compiled_linked_and_registered():
    assert fused_act.built_with_cuda(), "FUSED_ACT_EXPECT_CUDA=1 but the build has no CUDA kernels"
    for name in ALL_OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fused_act::{name}", "CUDA"), name
    # The library carries device code (a fatbinary) and links the CUDA runtime.
    sections = _elf_section_sizes(fused_act._ops._C.__file__)
    assert sections.get(".nv_fatbin", 0) > 0
    with open(fused_act._ops._C.__file__, "rb") as f:
        blob = f.read()
    assert b"libcudart" in blob or b"cudaLaunchKernel" in blob


def test_backends_report():
    b = fused_act.backends()
    assert b["cpu"] and b["cpu_capability"] in ("avx512", "avx2", "baseline")
    assert b["cuda_built"] == fused_act.built_with_cuda()


def test_cpu_capability_switch_rejects_unknown():
    with pytest.raises(RuntimeError, match="unknown CPU capability"):
        fused_act.set_cpu_capability("sse9")


# ---- opcheck --------------------------------------------------------------------------

# Non-default scalar parameters (p, q) of the operators that have them.
_PARAMS = {"leaky_relu": (0.5, 0.0), "elu": (0.5, 0.0), "swish": (0.5, 0.0), "celu": (0.5, 0.0),
           "softplus": (2.0, 5.0), "hardtanh": (-0.5, 0.75)}


def _op_samples(device):
    x = torch.randn(5, 4, 3, device=device)
    g = torch.randn(5, 4, 3, device=device)
    w = torch.rand(4, device=device)
    for op in ELEMENTWISE_OPS:
        p, q = _PARAMS.get(op, (0.0, 0.0))
        yield op, (x, p, q)
        yield op + "_", (x.clone(), p, q)
        yield op + "_backward", (g, torch.sigmoid(x), p, q, True)
        yield op + "_backward", (g, x, p, q, False)
    for op in WEIGHTED_OPS:
        yield op, (x, w)
        yield op + "_backward", (g, x, w, True)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    # The raw operators carry no autograd formula of their own (the autograd.Functions
    # differentiate them, checked by gradcheck), so samples do not require grad.
    for name, args in _op_samples(device):
        torch.library.opcheck(getattr(torch.ops.fused_act, name), args)


# ---- torch.compile ----------------------------------------------------------------------

CASES = [pytest.param(a, s, id=f"{a.name}-{s.id}") for a in ACTIVATIONS for s in a.settings]


@pytest.mark.parametrize("act,setting", CASES)
def test_compile_fullgraph_forward_backward(act, setting):
    torch._dynamo.reset()
    x = torch.randn(6, 5, 4)
    kw = setting.kwargs(x)

    def f(t):
        return act.fused(t * 1.0, **kw).sum(dim=0)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    ya, yb = compiled(a), f(b)
    close(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    close(a.grad, b.grad)


def _all_activations_model():
    return nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.LeakyReLU(0.1, inplace=True),
        nn.Linear(32, 32), nn.ELU(0.7), nn.Linear(32, 32), nn.PReLU(32),
        nn.Linear(32, 32), nn.SiLU(inplace=True), nn.Linear(32, 32), nn.Tanh(),
        nn.Linear(32, 32), nn.ReLU6(inplace=True), nn.Linear(32, 8), nn.Sigmoid())


def test_compile_inductor_fullgraph_on_converted_model():
    torch._dynamo.reset()
    torch.manual_seed(1)
    model = _all_activations_model()
    fused = fused_act.convert(_copy(model))
    compiled = torch.compile(fused, fullgraph=True)
    x = torch.randn(64, 16)
    y = compiled(x)
    y_ref = model(x)
    close(y, y_ref)
    y.sum().backward()
    y_ref.sum().backward()
    for p, q in zip(fused.parameters(), model.parameters()):
        close(p.grad, q.grad)


# ---- torch.export ------------------------------------------------------------------------

class _Functional(nn.Module):
    """One functional call, with the setting's tensors (PReLU's weight, a tensor beta) as
    buffers."""

    def __init__(self, act, kwargs):
        super().__init__()
        self.fn = act.fused
        self.names = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
        for k in self.names:
            self.register_buffer(k, kwargs[k])
        self.scalars = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}

    def forward(self, x):
        return self.fn(x * 1.0, **self.scalars, **{k: getattr(self, k) for k in self.names})


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
@pytest.mark.parametrize("act", ALL, ids=[a.name for a in ALL])
def test_torch_export_of_functional_call_records_the_fused_operator(act, strict):
    """Eager calls go to fused_act._C (guarded by is_dynamo_compiling); an export, whether
    dynamo traces it (strict) or Python runs on tracing tensors (non-strict), records
    fused_act's operator, not torch's fallback, with the eager result."""
    torch.manual_seed(3)
    x = torch.randn(4, 8, 8)
    setting = act.settings[0]
    model = _Functional(act, setting.kwargs(x))
    program = torch.export.export(model, (x,), strict=strict)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any(t.startswith("fused_act.") for t in targets), targets
    close(program.module()(x), model(x))


# ---- compiled autograd -----------------------------------------------------------------

def _compiled_autograd(compiler):
    """Compiled autograd for the backwards run inside the block (torch's context manager:
    `_enable` in newer releases, `enable` in older ones)."""
    from torch._dynamo import compiled_autograd as ca
    return (getattr(ca, "_enable", None) or ca.enable)(compiler)


@pytest.mark.parametrize("act", ALL, ids=[a.name for a in ALL])
def test_compiled_autograd_traces_the_eager_graph(act):
    """A graph recorded eagerly (out-of-place calls) goes through compiled autograd in one
    graph (fullgraph: no node left to run apart in eager mode), each fused_act node as a
    call in it, with eager autograd's gradients (for a weight too)."""
    torch._dynamo.reset()
    torch.manual_seed(4)
    x = torch.randn(4, 8, 8, dtype=torch.float64, requires_grad=True)
    kw = act.settings[0].kwargs(x.detach())
    kw = {k: v.clone().requires_grad_() if isinstance(v, torch.Tensor) and v.is_floating_point()
          else v for k, v in kw.items()}
    inputs = [x] + [v for v in kw.values() if isinstance(v, torch.Tensor) and v.requires_grad]

    def loss():
        return (act.fused(x * 1.0, **kw) ** 2).sum()

    expected = torch.autograd.grad(loss(), inputs)
    graphs = []

    def compiler(gm):
        def backend(g, example_inputs):
            graphs.append(g)
            return g
        return torch.compile(gm, backend=backend, fullgraph=True)

    with _compiled_autograd(compiler):
        got = torch.autograd.grad(loss(), inputs)
    for a, b in zip(got, expected):
        close(a, b)
    calls = {str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"}
    assert any("fused_act" in c for c in calls), calls


# ---- convert ------------------------------------------------------------------------------

def _copy(model):
    import copy
    return copy.deepcopy(model)


def test_convert_keeps_settings_parameters_and_outputs():
    torch.manual_seed(2)
    model = nn.Sequential(_all_activations_model(), nn.Sequential(nn.PReLU(), nn.Tanh()))
    reference = _copy(model)
    prelu_weight = model[0][7].weight
    model.eval()
    converted = fused_act.convert(model)
    assert converted is model and not converted.training
    kinds = [type(m) for m in converted.modules()]
    for cls in (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.PReLU, nn.SiLU, nn.Tanh, nn.ReLU6, nn.Sigmoid):
        assert cls not in kinds
    m = converted[0]
    assert isinstance(m[3], fused_act.LeakyReLU) and m[3].negative_slope == 0.1 and m[3].inplace
    assert isinstance(m[5], fused_act.ELU) and m[5].alpha == 0.7 and not m[5].inplace
    assert isinstance(m[7], fused_act.PReLU) and m[7].weight is prelu_weight
    assert m[7].num_parameters == 32
    assert isinstance(m[9], fused_act.SiLU) and m[9].inplace
    assert isinstance(m[13], fused_act.ReLU6) and m[13].inplace
    assert isinstance(converted[1][0], fused_act.PReLU)
    x = torch.randn(10, 16)
    close(converted(x), reference.eval()(x))
    assert fused_act.convert(converted) is converted  # idempotent
    assert isinstance(fused_act.convert(nn.SiLU()), fused_act.SiLU)


# ---- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: a.name)
@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64, torch.int64, torch.int32],
                         ids=str)
def test_non_float_dtypes_get_torch_result_or_clear_error(act, dtype):
    x = torch.tensor([1, 0, 2, 1], dtype=dtype) if dtype != torch.complex64 else torch.tensor(
        [1 + 1j, -2j, 0.5, -1], dtype=dtype)
    kw = act.settings[0].kwargs(torch.zeros(4))
    try:
        expected = act.reference(x, **kw)
    except (RuntimeError, NotImplementedError, TypeError):
        with pytest.raises(TypeError, match=rf"fused_act\.{act.name}: unsupported dtype"):
            act.fused(x, **kw)
        return
    got = act.fused(x, **kw)
    assert got.dtype == expected.dtype
    torch.testing.assert_close(got, expected)


def test_raw_operator_errors_name_the_operator():
    with pytest.raises(TypeError, match=r"fused_act::relu: input has dtype Long"):
        torch.ops.fused_act.relu(torch.tensor([1, 2]), 0.0, 0.0)
    with pytest.raises(RuntimeError, match=r"fused_act::sigmoid: grad has shape"):
        torch.ops.fused_act.sigmoid_backward(torch.ones(3), torch.ones(4), 0.0, 0.0, True)
    with pytest.raises(TypeError, match=r"fused_act::tanh: saved tensor has dtype"):
        torch.ops.fused_act.tanh_backward(torch.ones(3), torch.ones(3, dtype=torch.float64), 0.0,
                                          0.0, True)
    # hardtanh's bounds: torch's ValueError and message, from the operator too
    with pytest.raises(ValueError, match=r"fused_act::hardtanh: min_val cannot be greater than "
                                         r"max_val"):
        torch.ops.fused_act.hardtanh(torch.ones(3), 1.0, -1.0)
    with pytest.raises(ValueError, match=r"fused_act::hardtanh: min_val cannot be greater"):
        torch.ops.fused_act.hardtanh_(torch.ones(3), 1.0, -1.0)


def test_prelu_weight_errors():
    x = torch.randn(2, 4, 5)
    with pytest.raises(RuntimeError, match=r"fused_act::prelu: weight has 3 elements but the input has 4 channels"):
        FA.prelu(x, torch.ones(3))
    with pytest.raises(RuntimeError, match=r"fused_act::prelu: weight must be a scalar or a 1-D"):
        FA.prelu(x, torch.ones(1, 4))
    with pytest.raises(TypeError, match=r"fused_act::prelu: weight has dtype"):
        FA.prelu(x, torch.ones(4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"fused_act.prelu: weight is on meta"):
        FA.prelu(x, torch.ones(4, device="meta"))
    with pytest.raises(TypeError, match=r"fused_act.prelu: weight must be a torch.Tensor"):
        FA.prelu(x, 0.25)


def test_non_tensor_input():
    with pytest.raises(TypeError, match=r"fused_act.relu: expected a torch.Tensor"):
        FA.relu([1.0, 2.0])


def test_meta_tensors_give_shapes():
    x = torch.empty(3, 7, device="meta")
    assert FA.silu(x).shape == (3, 7) and FA.silu(x).device.type == "meta"


# ---- autograd kernels in C++ and the fast eager entry points --------------------------

@pytest.mark.parametrize("name", [n for op in ELEMENTWISE_OPS for n in (op, op + "_backward")]
                         + ["softmax", "softmax_backward"])
def test_autograd_kernel_registered(name):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fused_act::{name}", "Autograd")


@pytest.mark.parametrize("op", ELEMENTWISE_OPS)
def test_fast_entry_point_is_the_operator(op):
    from fused_act import _C
    p, q = _PARAMS.get(op, (0.0, 0.0))
    x = torch.randn(3, 37, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 37, dtype=torch.float64)
    y_fast = getattr(_C, op)(x, p, q)
    y_ops = getattr(torch.ops.fused_act, op)(x, p, q)
    assert torch.equal(y_fast, y_ops)
    assert y_fast.grad_fn is not None and y_fast.grad_fn.name() == y_ops.grad_fn.name()
    (dx_fast,) = torch.autograd.grad(y_fast, x, g)
    (dx_ops,) = torch.autograd.grad(y_ops, x, g)
    assert torch.equal(dx_fast, dx_ops)


def test_fast_entry_points_decline_what_they_do_not_take():
    from fused_act import _C
    x = torch.randn(8)
    assert _C.relu(torch.arange(8), 0.0, 0.0) is NotImplemented  # integer dtype
    assert _C.relu(x, 0, 0.0) is NotImplemented                  # parameter not a float
    assert _C.hardtanh(x, -1.0, 1) is NotImplemented             # second one not a float
    assert _C.relu(x, 0.0) is NotImplemented                     # wrong arity
    assert _C.softmax(x, None, False) is NotImplemented          # dim not an int

    class Sub(torch.Tensor):
        pass

    assert _C.relu(x.as_subclass(Sub), 0.0, 0.0) is NotImplemented


def test_functional_honours_torch_function_modes_and_subclasses():
    from torch.overrides import TorchFunctionMode
    seen = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    x = torch.randn(4, 5)
    with Record():
        y = FA.silu(x)
    assert torch.allclose(y, F.silu(x), rtol=1e-6, atol=1e-7)
    assert seen, "the mode saw no call: the fast path must step aside under a mode"

    class Sub(torch.Tensor):
        pass

    ys = FA.relu(x.as_subclass(Sub))
    assert torch.equal(ys.as_subclass(torch.Tensor), torch.relu(x))


def test_fast_entry_point_errors_name_the_operator():
    x = torch.randn(4, 5)
    with pytest.raises(IndexError, match=r"fused_act::softmax: dim 2 is out of range"):
        FA.softmax(x, 2)
    with pytest.raises(IndexError, match=r"fused_act::log_softmax: dim -3 is out of range"):
        FA.log_softmax(x, -3)


@pytest.mark.parametrize("call,node", [
    (lambda x: FA.relu(x), "ReluBackward"),
    (lambda x: FA.silu(x), "SwishBackward"),
    (lambda x: FA.elu(x, 0.5), "EluBackward"),
    (lambda x: FA.softmax(x, -1), "SoftmaxBackward"),
    (lambda x: FA.prelu(x, torch.full((1,), 0.2, requires_grad=True)), "PreluBackward"),
])
def test_autograd_nodes_are_named(call, node):
    x = torch.randn(3, 4, requires_grad=True)
    # plain nodes show their name, C++ autograd Functions "torch::autograd::CppNode<...>"
    name = call(x).grad_fn.name()
    assert name == f"fused_act::{node}" or name.endswith(f"fused_act::{node}>"), name


def _function_cases():
    from fused_act import autograd as AG
    x = lambda: torch.randn(3, 5, dtype=torch.float64, requires_grad=True)  # noqa: E731
    w = lambda: torch.rand(5, dtype=torch.float64, requires_grad=True)  # noqa: E731
    return [
        ("ReluFunction", lambda: (AG.ReluFunction.apply, (x(), 0.0, False))),
        ("LeakyReluFunction", lambda: (AG.LeakyReluFunction.apply, (x(), -0.3, False))),
        ("EluFunction", lambda: (AG.EluFunction.apply, (x(), 0.7, False))),
        ("SigmoidFunction", lambda: (AG.SigmoidFunction.apply, (x(), 0.0, False))),
        ("TanhFunction", lambda: (AG.TanhFunction.apply, (x(), 0.0, False))),
        ("SwishFunction", lambda: (AG.SwishFunction.apply, (x(), 1.3, False))),
        ("PreluFunction", lambda: (AG.PreluFunction.apply, (x(), w()))),
        ("SwishWeightedFunction", lambda: (AG.SwishWeightedFunction.apply, (x(), w()))),
        ("SoftmaxFunction", lambda: (AG.SoftmaxFunction.apply, (x(), 1))),
        ("LogSoftmaxFunction", lambda: (AG.LogSoftmaxFunction.apply, (x(), 0))),
    ]


@pytest.mark.parametrize("name,make", _function_cases(), ids=lambda c: c if isinstance(c, str) else "")
def test_autograd_function_classes_gradcheck_and_gradgradcheck(name, make):
    # The exposed torch.autograd.Function classes (the path of in-place calls), whose
    # backward relies on the differentiable backward operators.
    apply, args = make()
    tensors = tuple(a for a in args if isinstance(a, torch.Tensor))

    def fn(*ts):
        it = iter(ts)
        return apply(*(next(it) if isinstance(a, torch.Tensor) else a for a in args))

    assert getattr(fused_act.autograd, name).__name__ == name
    assert torch.autograd.gradcheck(fn, tensors)
    assert torch.autograd.gradgradcheck(fn, tensors)
