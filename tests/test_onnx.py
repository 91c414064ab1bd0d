"""ONNX export (torch.onnx.export(dynamo=True) with fused_act.onnx_translation_table()), run in
onnxruntime against torch's own result; torch.export and AOTInductor of converted models."""
import copy
import io
import logging
import re
import warnings

import pytest
import torch
from torch import nn

import fused_act
from fused_act.table import ALL

from helpers import close

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

TORCH = tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2])
# torch.onnx.export(..., dynamo=True, custom_translation_table=...) arrived in torch 2.6
# (torch.library.register_torch_dispatch, which the table's in-place rule uses, in 2.5);
# before 2.6 fused_act.onnx_translation_table() raises (test_translation_table_needs_...).
needs_dynamo_exporter = pytest.mark.skipif(
    TORCH < (2, 6), reason=f"ONNX export with a custom_translation_table needs torch 2.6 "
                           f"(this is {torch.__version__})")

# What the translations may emit: standard-domain operators only.
STANDARD_OPS = {"Relu", "Clip", "LeakyRelu", "PRelu", "Elu", "Sigmoid", "Tanh", "Mul",
                "Softmax", "LogSoftmax", "Reshape", "Constant", "CastLike", "Cast",
                "Gemm", "MatMul", "Add", "Identity", "Erf", "Mish", "HardSwish",
                "HardSigmoid", "Selu", "Celu", "Softplus", "Where", "Greater", "Div"}


class Call(nn.Module):
    """Calls one activation's functional form on ``x * 1`` (so an in-place call overwrites an
    intermediate, never the graph input), with the setting's tensors as buffers."""

    def __init__(self, fn, kwargs, inplace):
        super().__init__()
        self.fn, self.inplace = fn, inplace
        self.tensor_names = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
        for k in self.tensor_names:
            self.register_buffer(k, kwargs[k])
        self.scalars = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}

    def forward(self, x):
        kwargs = dict(self.scalars, **{k: getattr(self, k) for k in self.tensor_names})
        if self.inplace:
            kwargs["inplace"] = True
        return self.fn(x * 1.0, **kwargs)


def _export(model, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, args, dynamo=True, verbose=False,
                                    custom_translation_table=fused_act.onnx_translation_table())
    proto = program.model_proto
    onnx.checker.check_model(proto)
    return proto


def _run(proto, *args):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    outs = [torch.from_numpy(o) for o in session.run(None, feed)]
    return outs if len(outs) > 1 else outs[0]


def _assert_standard(proto, allowed=STANDARD_OPS):
    assert not proto.functions, [f.name for f in proto.functions]
    for node in proto.graph.node:
        assert node.domain in ("", "ai.onnx"), f"non-standard: {node.domain}::{node.op_type}"
        assert allowed is None or node.op_type in allowed, node.op_type


@pytest.fixture(autouse=True, scope="module")
def _quiet_exporter():
    logging.disable(logging.WARNING)  # the exporter's per-export progress and torchvision notes
    yield
    logging.disable(logging.NOTSET)


CASES = [pytest.param(a, s, inplace, id=f"{a.name}-{s.id}" + ("-inplace" if inplace else ""))
         for a in ALL for s in a.settings for inplace in ((False, True) if a.inplace else (False,))]


# Shapes: (3, 5, 4) has a channel dim (per-channel weights on dim 1); (7,) has none; () is a
# scalar (softmax reshapes it).  One model takes the three, so one export covers them.
SHAPES = [(3, 5, 4), (7,), ()]


class Shapes(nn.Module):
    def __init__(self, calls):
        super().__init__()
        self.calls = nn.ModuleList(calls)

    def forward(self, *xs):
        return tuple(call(x) for call, x in zip(self.calls, xs))


@pytest.mark.parametrize("act,setting,inplace", CASES)
@needs_dynamo_exporter
def test_onnx_export_runs_in_onnxruntime_like_torch(act, setting, inplace):
    xs = [torch.randn(shape) * 4 for shape in SHAPES]
    kwargs = [setting.kwargs(x) for x in xs]
    model = Shapes([Call(act.fused, kw, inplace) for kw in kwargs]).eval()
    proto = _export(model, *xs)
    _assert_standard(proto)
    for out, x, kw in zip(_run(proto, *xs), xs, kwargs):
        close(out, act.reference(x, **kw), msg=f"shape {tuple(x.shape)}")


@needs_dynamo_exporter
def test_inplace_call_on_a_view_exports():
    class Model(nn.Module):
        def forward(self, x):
            h = x * 1.0
            fused_act.functional.relu_(h[:, 1:3])  # writes through a view into h
            fused_act.functional.elu(h[0], 0.5, inplace=True)
            return h

    x = torch.randn(4, 5)
    proto = _export(Model(), x)
    _assert_standard(proto, allowed=None)  # slicing and scattering the view: any operator
    expected = x.clone()
    expected[:, 1:3] = torch.relu(expected[:, 1:3])
    expected[0] = torch.nn.functional.elu(expected[0], 0.5)
    close(_run(proto, x), expected)


@needs_dynamo_exporter
def test_translation_table_covers_every_forward_operator():
    from fused_act._ops import ELEMENTWISE_OPS, WEIGHTED_OPS

    table = fused_act.onnx_translation_table()
    ops = torch.ops.fused_act
    for name in ELEMENTWISE_OPS + WEIGHTED_OPS + ("softmax", "maxout"):
        assert getattr(ops, name).default in table, name



@pytest.mark.skipif(TORCH >= (2, 6), reason="torch 2.6 has what the table needs")
def test_translation_table_needs_torch_2_6_and_says_so():
    with pytest.raises(RuntimeError, match=r"fused_act\.onnx_translation_table: .*needs torch "
                                           r"2\.6 or later.*register_legacy_symbolics"):
        fused_act.onnx_translation_table()

def _torch_model():
    """Every torch.nn activation of the table, in-place where it has the flag, once each."""
    layers, width = [], 12
    for act in ALL:
        if act.torch_module is None:  # no torch.nn class to convert (ReLUSquared)
            continue
        layers.append(nn.Linear(width, width))
        kwargs = dict(act.module_kwargs)
        if act.torch_module is nn.PReLU:
            kwargs["num_parameters"] = width  # per channel
        if act.inplace:
            kwargs["inplace"] = True
        layers.append(act.torch_module(**kwargs))
    return nn.Sequential(*layers)


@needs_dynamo_exporter
def test_converted_model_exports_and_matches_torch_nn():
    torch.manual_seed(3)
    reference = _torch_model().eval()
    converted = fused_act.convert(copy.deepcopy(reference))
    assert not any(type(m).__module__.startswith("torch.nn") and type(m) in
                   {a.torch_module for a in ALL if a.torch_module} for m in converted.modules())
    x = torch.randn(6, 12)
    proto = _export(converted, x)
    _assert_standard(proto)
    with torch.no_grad():
        close(_run(proto, x), reference(x))


@needs_dynamo_exporter
def test_swish_modules_export():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(8, 8), fused_act.Swish(1.7), nn.Linear(8, 8),
                          fused_act.Swish(0.6, trainable=True)).eval()
    x = torch.randn(5, 8)
    proto = _export(model, x)
    _assert_standard(proto)
    with torch.no_grad():
        lin1, lin2 = model[0], model[2]
        h = lin1(x)
        h = h * torch.sigmoid(1.7 * h)
        h = lin2(h)
        expected = h * torch.sigmoid(0.6 * h)
    close(_run(proto, x), expected)


# ---- torch.export / AOTInductor ----------------------------------------------------------

@needs_dynamo_exporter
def test_inplace_operators_still_functionalize_outside_onnx_export():
    """The rule the table registers for in-place operators acts only during an ONNX export:
    a plain torch.export keeps them (functionalized as torch does) with correct results."""
    fused_act.onnx_translation_table()
    torch.manual_seed(5)
    reference = _torch_model().eval()
    converted = fused_act.convert(copy.deepcopy(reference))
    x = torch.randn(4, 12)
    program = torch.export.export(converted, (x,)).run_decompositions({})
    # The in-place operators are still there (as auto_functionalized(fused_act.NAME_)).
    inplace = {t for n in program.graph.nodes if n.op == "call_function"
               for t in (n.target, *n.args[:1])
               if isinstance(t, torch._ops.OpOverload) and t.namespace == "fused_act"
               and t._schema.is_mutable}
    assert inplace, program.graph
    with torch.no_grad():
        close(program.module()(x), reference(x))


def test_torch_export_of_converted_model_matches_torch_nn():
    torch.manual_seed(6)
    reference = _torch_model()
    converted = fused_act.convert(copy.deepcopy(reference))
    x = torch.randn(4, 12)
    program = torch.export.export(converted, (x,))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any(t.startswith("fused_act.") for t in targets), targets  # the fused operators
    with torch.no_grad():
        close(program.module()(x), reference(x))
        close(program.run_decompositions().module()(x), reference(x))


def test_aot_inductor_of_converted_model_matches_torch_nn(tmp_path):
    # A small model (AOTInductor compiles C++: tens of seconds): an in-place elementwise
    # operator, a weighted one and softmax.  Before torch 2.6: the older entry points, and
    # the elementwise operator out of place -- torch 2.4's AOTInductor rejects every mutable
    # custom operator ("mutable relu_.default is not supported with cpp_wrapper").
    new_api = TORCH >= (2, 6)
    torch.manual_seed(7)
    reference = nn.Sequential(nn.Linear(12, 12), nn.ReLU(inplace=new_api), nn.Linear(12, 12),
                              nn.PReLU(12), nn.LogSoftmax(-1)).eval()
    converted = fused_act.convert(copy.deepcopy(reference))
    x = torch.randn(4, 12)
    if new_api:
        program = torch.export.export(converted, (x,))
        path = torch._inductor.aoti_compile_and_package(program,
                                                        package_path=str(tmp_path / "model.pt2"))
        loaded = torch._inductor.aoti_load_package(path)
    else:  # no packaging before 2.6: one shared library
        path = torch._export.aot_compile(
            converted, (x,), options={"aot_inductor.output_path": str(tmp_path / "model.so")})
        loaded = torch._export.aot_load(path, "cpu")
    with torch.no_grad():
        close(loaded(x), reference(x))


# ---- the TorchScript-based exporter (dynamo=False) ---------------------------------------

@pytest.mark.parametrize("act,setting", [pytest.param(a, s, id=f"{a.name}-{s.id}")
                                         for a in ALL for s in a.settings])
def test_legacy_exporter_with_registered_symbolics(act, setting):
    from fused_act.onnx import LEGACY_OPSET, register_legacy_symbolics

    register_legacy_symbolics()
    xs = [torch.randn(shape) * 4 for shape in SHAPES]
    kwargs = [setting.kwargs(x) for x in xs]
    model = Shapes([Call(act.fused, kw, False) for kw in kwargs]).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(xs), buffer, dynamo=False, opset_version=LEGACY_OPSET)
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    _assert_standard(proto)
    for out, x, kw in zip(_run(proto, *xs), xs, kwargs):
        close(out, act.reference(x, **kw), msg=f"shape {tuple(x.shape)}")
