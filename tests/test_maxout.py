"""Tests of fused_act maxout against torch's composition x.unflatten(dim, (-1, pieces)).amax(dim + 1).

Code paths (csrc/cpu/maxout.cpp, maxout_impl.h; csrc/cuda/maxout.cu):
  * a middle dim (inner > 1): SIMD lanes along the inner columns, a partial vector at the
    end of each row (inner = 15, 17: one full vector of 8 and a tail; AVX-512 / baseline:
    other splits); rows longer than 4096 columns are split across tasks;
  * the last dim (inner = 1) with pieces 2, 4, 8: groups deinterleaved in registers, a
    partial last block through a padded buffer; other pieces: scalar code;
  * float64, and pieces > 32 (64-bit mask words; > 64: several words): scalar code.
Values are small integers in float, so that groups often hold tied maxima.
"""
import io
import warnings

import pytest
import torch
from torch import nn
from torch.autograd import forward_ad as fwAD

import fused_act
from fused_act import functional as FA
from fused_act import table
from fused_act._ops import maxout_mask_dtype, maxout_mask_words

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and fused_act.built_with_cuda()
                     else [])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
PIECES = [1, 2, 3, 4, 8, 9, 16, 17, 33, 65]
ops = torch.ops.fused_act


def reference(x, pieces, dim=1):
    return table.maxout_reference(x, pieces, dim)


# (id, shape for `pieces`, dim): the layouts and the path each takes.
def _layouts(p):
    return [
        ("dim1", (2, 3 * p, 5, 3), 1),      # NCHW channels: inner 15 (a vector and a tail)
        ("last", (3, 5, 11 * p), -1),       # last dim: 165 groups (full blocks and a tail)
        ("dim0", (2 * p, 4, 3), 0),         # first dim: outer 1, inner 12
        ("neg2", (2, 3 * p, 17), -2),       # negative middle dim: inner 17
    ]


LAYOUT_IDS = [name for name, _, _ in _layouts(1)]


def _ties(shape, dtype, device):
    return torch.randint(-3, 4, shape, device=device).to(dtype)


def _exact(actual, expected, msg=""):
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True,
                               msg=lambda m: f"{msg}\n{m}")


def _grads(fn, x, g):
    x = x.detach().requires_grad_()
    y = fn(x)
    (dx,) = torch.autograd.grad(y, x, g)
    return y, dx


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUT_IDS)
@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_values_and_gradients_match_amax(dtype, pieces, layout, device, cpu_capability):
    # max is exact in every dtype, and so is torch's gradient (grad / count on each
    # maximum, computed as here in float for half / bfloat16): both must be equal bits.
    shape, dim = {n: (s, d) for n, s, d in _layouts(pieces)}[layout]
    x = _ties(shape, dtype, device)
    g = torch.randn(reference(x, pieces, dim).shape).to(device, dtype)
    y, dx = _grads(lambda t: FA.maxout(t, pieces, dim), x, g)
    y_ref, dx_ref = _grads(lambda t: reference(t, pieces, dim), x, g)
    assert y.is_contiguous() and dx.shape == x.shape
    _exact(y, y_ref, "forward")
    _exact(dx, dx_ref, "backward")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dim", [1, -1])
@pytest.mark.parametrize("pieces", [2, 3, 4, 8, 33, 65])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_nan_and_inf_as_amax(dtype, pieces, dim, device):
    # A group holding a NaN gives NaN, and its whole gradient is NaN (count 0: (g/0)*0);
    # +inf is a max like any other; a group of -inf ties every piece.
    shape = (2, 4 * pieces, 3) if dim == 1 else (3, 4 * pieces)
    x = _ties(shape, dtype, device)
    xv = x.movedim(dim, 0)  # view: group k is xv[k*pieces:(k+1)*pieces]
    xv[0] = float("nan")
    xv[pieces] = float("inf")
    xv[2 * pieces:3 * pieces] = float("-inf")
    xv[3 * pieces + pieces - 1] = float("nan")  # a NaN in the last piece only
    g = torch.randn(reference(x, pieces, dim).shape).to(device, dtype)
    y, dx = _grads(lambda t: FA.maxout(t, pieces, dim), x, g)
    y_ref, dx_ref = _grads(lambda t: reference(t, pieces, dim), x, g)
    assert y.isnan().any() and dx.isnan().any() and y.isinf().any()
    _exact(y, y_ref, "forward")
    _exact(dx, dx_ref, "backward")


def test_nan_gradient_covers_the_whole_group():
    x = torch.tensor([[1.0, float("nan"), 3.0, 4.0, 5.0, 5.0]], requires_grad=True)
    y = FA.maxout(x, 3, -1)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert torch.isnan(y[0, 0]) and y[0, 1] == 5
    assert torch.isnan(dx[0, :3]).all()
    assert dx[0, 3:].tolist() == [0.0, 0.5, 0.5]  # ties split the gradient evenly


@pytest.mark.parametrize("dim", [1, -1, 0])
@pytest.mark.parametrize("pieces", [1, 2, 3, 4, 65])
def test_gradcheck_and_gradgradcheck_float64(pieces, dim):
    shape = {1: (2, 2 * pieces, 3), -1: (3, 2 * pieces), 0: (2 * pieces, 3)}[dim]
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)  # distinct values
    fn = lambda t: FA.maxout(t, pieces, dim)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(fn, (x,), check_fwd_over_rev=True)


@pytest.mark.parametrize("dim", [1, -1])
@pytest.mark.parametrize("pieces", [2, 3, 4])
def test_double_backward_with_ties_matches_torch(pieces, dim):
    # d(dx)/d(grad) applied to gg: sum of gg over the tied maxima / count (maxout_gather).
    x = _ties((2, 4 * pieces, 5) if dim == 1 else (6, 4 * pieces), torch.float64, "cpu")
    out = []
    for fn in (FA.maxout, reference):
        xi = x.clone().requires_grad_()
        y = fn(xi, pieces, dim)
        g = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view(y.shape).requires_grad_()
        (dx,) = torch.autograd.grad(y, xi, g, create_graph=True)
        gg = torch.cos(torch.arange(dx.numel(), dtype=torch.float64)).view(dx.shape)
        gg.requires_grad_()
        (d_g,) = torch.autograd.grad(dx, g, gg, create_graph=True)
        # and the derivative of that with respect to gg: the scatter again
        (d_gg,) = torch.autograd.grad(d_g, gg, torch.sin(torch.arange(d_g.numel(),
                                                                        dtype=torch.float64)).view(d_g.shape))
        out.append((d_g, d_gg))
    torch.testing.assert_close(out[0][0], out[1][0])
    torch.testing.assert_close(out[0][1], out[1][1])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("dim", [1, -1])
@pytest.mark.parametrize("pieces", [2, 3, 4, 17])
def test_forward_ad_tangent_averages_tied_maxima(pieces, dim, dtype):
    x = _ties((2, 3 * pieces, 5) if dim == 1 else (4, 3 * pieces), dtype, "cpu")
    x.movedim(dim, 0)[0] = float("nan")
    t = torch.randn(x.shape).to(dtype)
    tangents = []
    for fn in (FA.maxout, reference):
        with fwAD.dual_level():
            tangents.append(fwAD.unpack_dual(fn(fwAD.make_dual(x, t), pieces, dim)).tangent)
    torch.testing.assert_close(tangents[0], tangents[1], equal_nan=True,
                               **({} if dtype == torch.float64 else
                                  {"rtol": 1e-2 if dtype == torch.bfloat16 else 2e-3,
                                   "atol": 1e-5}))


def test_torch_func_transforms():
    x = _ties((3, 2, 12, 5), torch.float64, "cpu")  # a batch of 3 for vmap
    t = torch.randn_like(x)
    for pieces, dim in ((4, 1), (3, -2), (2, 0)):
        def ours(a):
            return FA.maxout(a, pieces, dim).sin().sum()

        def theirs(a):
            return reference(a, pieces, dim).sin().sum()

        torch.testing.assert_close(torch.func.grad(ours)(x[0]), torch.func.grad(theirs)(x[0]))
        torch.testing.assert_close(torch.func.vmap(torch.func.grad(ours))(x),
                                   torch.func.vmap(torch.func.grad(theirs))(x))
        torch.testing.assert_close(
            torch.func.vmap(lambda a: FA.maxout(a, pieces, dim))(x),
            torch.func.vmap(lambda a: reference(a, pieces, dim))(x))
        torch.testing.assert_close(
            torch.func.vmap(lambda a: FA.maxout(a, pieces, dim), in_dims=1)(x.transpose(0, 1)),
            torch.func.vmap(lambda a: reference(a, pieces, dim))(x))
        torch.testing.assert_close(
            torch.func.jvp(lambda a: FA.maxout(a, pieces, dim), (x[0],), (t[0],))[1],
            torch.func.jvp(lambda a: reference(a, pieces, dim), (x[0],), (t[0],))[1])
        torch.testing.assert_close(torch.func.hessian(ours)(x[0, :, :, :2]),
                                   torch.func.hessian(theirs)(x[0, :, :, :2]))
    # The public Function class: (y, mask of maxima).
    y, mask = fused_act.autograd.MaxoutFunction.apply(x[0], 4, 1)
    assert mask.dtype == torch.uint8 and not mask.requires_grad
    torch.testing.assert_close(y, reference(x[0], 4, 1))


@pytest.mark.parametrize("dim", [1, -1])
def test_compile_fullgraph_forward_and_backward(dim):
    x = _ties((2, 8, 3, 6), torch.float32, "cpu").requires_grad_()

    @torch.compile(fullgraph=True)
    def f(t):
        return FA.maxout(t, 2, dim).sum(dim=-1) * 2

    (dx,) = torch.autograd.grad(f(x).sum(), x)
    x2 = x.detach().requires_grad_()
    (dx_ref,) = torch.autograd.grad((reference(x2, 2, dim).sum(dim=-1) * 2).sum(), x2)
    _exact(dx, dx_ref)


def test_opcheck():
    x = torch.randn(2, 8, 3)
    y, mask = ops.maxout_forward(x, 4, 1)
    torch.library.opcheck(ops.maxout.default, (x.clone().requires_grad_(), 4, 1))
    torch.library.opcheck(ops.maxout.default, (torch.randn(3, 10), 5, -1))
    torch.library.opcheck(ops.maxout_forward.default, (x, 4, 1))
    torch.library.opcheck(ops.maxout_backward.default, (torch.randn(2, 2, 3, requires_grad=True),
                                                        mask, 4, 1))
    torch.library.opcheck(ops.maxout_gather.default, (torch.randn(2, 8, 3, requires_grad=True),
                                                      mask, 4, 1))
    _, mask65 = ops.maxout_forward(torch.randn(2, 130), 65, -1)
    torch.library.opcheck(ops.maxout_backward.default, (torch.randn(2, 2, requires_grad=True),
                                                        mask65, 65, -1))


@pytest.mark.parametrize("pieces", PIECES + [64, 128, 129])
def test_mask_is_one_word_of_the_smallest_type(pieces):
    x = _ties((2, 2 * pieces, 3), torch.float32, "cpu")
    y, mask = ops.maxout_forward(x, pieces, 1)
    expected = (torch.uint8 if pieces <= 8 else torch.int16 if pieces <= 16
                else torch.int32 if pieces <= 32 else torch.int64)
    words = 1 if pieces <= 64 else -(-pieces // 64)
    assert mask.dtype == expected == maxout_mask_dtype(pieces)
    assert tuple(mask.shape) == (2, 2 * words, 3) and words == maxout_mask_words(pieces)
    # The bits: piece k of a group is set where it equals the max.
    hits = x.unflatten(1, (2, pieces)) == y.unsqueeze(2)
    bits = mask.view(2, 2, words, 3).to(torch.int64)
    for k in range(pieces):
        bit = (bits[:, :, k // 64] >> (k % 64)) & 1 if words > 1 else (bits[:, :, 0] >> k) & 1
        assert torch.equal(bit.bool(), hits[:, :, k])


def _saved_bytes(fn, x):
    total = []

    def pack(t):
        total.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(total)


@pytest.mark.parametrize("pieces,word", [(2, 1), (4, 1), (9, 2), (17, 4), (33, 8)])
def test_backward_keeps_the_mask_not_the_input(pieces, word):
    x = torch.randn(4, 8 * pieces, 16, requires_grad=True)
    ours = _saved_bytes(lambda t: FA.maxout(t, pieces, 1), x)
    torch_bytes = _saved_bytes(lambda t: reference(t, pieces, 1), x)
    outputs = x.numel() // pieces
    assert ours == outputs * word
    assert torch_bytes == (x.numel() + outputs) * 4  # amax keeps input and output


def test_noncontiguous_and_empty_inputs():
    base = _ties((6, 5, 8), torch.float32, "cpu")
    for x, pieces, dim in ((base.transpose(0, 2), 4, 0), (base[:, :, ::2], 2, -1),
                           (base.permute(1, 2, 0), 3, 2), (base.transpose(1, 2), 2, 1)):
        assert not x.is_contiguous()
        g = torch.randn(reference(x, pieces, dim).shape)
        y, dx = _grads(lambda t: FA.maxout(t, pieces, dim), x, g)
        y_ref, dx_ref = _grads(lambda t: reference(t, pieces, dim), x, g)
        _exact(y, y_ref)
        _exact(dx, dx_ref)
    for shape, pieces, dim in (((0, 4), 2, 1), ((3, 0), 2, 1), ((0, 6, 2), 3, 1)):
        x = torch.randn(shape, requires_grad=True)
        y = FA.maxout(x, pieces, dim)
        assert y.shape == reference(x, pieces, dim).shape
        (dx,) = torch.autograd.grad(y.sum(), x)
        assert dx.shape == x.shape


@pytest.mark.parametrize("shape,dim", [((3, 4, 5000), 1), ((2, 8, 70001), 1),
                                       ((70001 * 2,), 0), ((40, 8192), -1)])
def test_large_inputs_split_across_threads(shape, dim):
    # Rows longer than 4096 columns run in column chunks; many rows in several tasks.
    x = _ties(shape, torch.float32, "cpu")
    g = torch.randn(reference(x, 2, dim).shape)
    y, dx = _grads(lambda t: FA.maxout(t, 2, dim), x, g)
    y_ref, dx_ref = _grads(lambda t: reference(t, 2, dim), x, g)
    _exact(y, y_ref)
    _exact(dx, dx_ref)


def test_errors_name_the_operator():
    x = torch.randn(2, 6, 3)
    with pytest.raises(ValueError, match="maxout.*not a multiple of pieces"):
        FA.maxout(x, 4)
    with pytest.raises(IndexError, match="maxout.*dim 3 is out of range"):
        FA.maxout(x, 2, 3)
    with pytest.raises(IndexError, match="maxout"):
        FA.maxout(x, 2, -4)
    with pytest.raises(ValueError, match="maxout.*pieces must be at least 1"):
        FA.maxout(x, 0)
    with pytest.raises(TypeError, match="maxout.*pieces"):
        FA.maxout(x, 2.0)
    with pytest.raises(TypeError, match="maxout.*dim"):
        FA.maxout(x, 2, None)
    with pytest.raises(TypeError, match="maxout.*dtype"):
        FA.maxout(torch.ones(2, 6, dtype=torch.int64), 2)
    with pytest.raises(TypeError, match="maxout"):
        FA.maxout([1.0, 2.0], 2)
    with pytest.raises(RuntimeError, match="maxout.*0-d"):
        FA.maxout(torch.tensor(1.0), 1, 0)
    with pytest.raises(ValueError, match="Maxout.*pieces"):
        fused_act.Maxout(0)
    # The operators themselves check too (under torch.compile, or called directly).
    with pytest.raises(ValueError, match="fused_act::maxout.*not a multiple"):
        ops.maxout(x, 4, 1)
    with pytest.raises(TypeError, match="fused_act::maxout.*dtype"):
        ops.maxout(torch.ones(2, 6, dtype=torch.int32), 2, 1)
    _, mask = ops.maxout_forward(x, 2, 1)
    with pytest.raises(TypeError, match="maxout_backward.*mask has dtype"):
        ops.maxout_backward(torch.randn(2, 3, 3), mask.to(torch.int32), 2, 1)
    with pytest.raises(RuntimeError, match="maxout_backward.*mask has shape"):
        ops.maxout_backward(torch.randn(2, 3, 4), mask, 2, 1)
    with pytest.raises(RuntimeError, match="maxout_forward is not differentiable"):
        ops.maxout_forward(x.requires_grad_(), 2, 1)


def test_module():
    m = fused_act.Maxout(4)
    assert isinstance(m, nn.Module) and m.pieces == 4 and m.dim == 1
    assert repr(m) == "Maxout(pieces=4, dim=1)"
    assert repr(fused_act.Maxout(2, dim=-1)) == "Maxout(pieces=2, dim=-1)"
    assert dict(m.state_dict()) == {}
    x = _ties((2, 8, 3, 3), torch.float32, "cpu")
    _exact(m(x), reference(x, 4, 1))
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(8, 8, 1), fused_act.Maxout(2)))
    _exact(scripted(x), reference(scripted[0](x), 2, 1))
    assert "fused_act.maxout" in torch.jit.script(fused_act.Maxout(2)).code


def test_onnx_export_both_exporters():
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from fused_act.onnx import LEGACY_OPSET, register_legacy_symbolics

    class Model(nn.Module):
        def forward(self, a, b, c):
            return FA.maxout(a, 2), FA.maxout(b, 3, -1), FA.maxout(c, 4, 0)

    xs = (torch.randn(2, 6, 3, 5), torch.randn(4, 9), torch.randn(8, 3))
    expected = Model()(*xs)
    register_legacy_symbolics()
    protos = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        protos.append(torch.onnx.export(
            Model(), xs, dynamo=True, verbose=False,
            custom_translation_table=fused_act.onnx_translation_table()).model_proto)
        buffer = io.BytesIO()
        with torch.no_grad():
            torch.onnx.export(Model(), xs, buffer, dynamo=False, opset_version=LEGACY_OPSET)
        protos.append(onnx.load_from_string(buffer.getvalue()))
    for proto in protos:
        onnx.checker.check_model(proto)
        assert {n.op_type for n in proto.graph.node} <= {"Reshape", "ReduceMax", "Shape",
                                                          "Concat", "Constant"}
        session = ort.InferenceSession(proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        outs = session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), xs)})
        for out, ref in zip(outs, expected):
            _exact(torch.from_numpy(out), ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=lambda d: str(d)[6:])
def test_nontemporal_forward_stores_give_the_same_bits(dtype, nontemporal_everywhere):
    # Every CPU call writes y with non-temporal stores (aligned whole vectors; the rest,
    # a tail or a row that starts unaligned, with ordinary ones).
    for shape, pieces, dim in (((2, 8, 5, 3), 2, 1), ((4, 8, 64), 4, 1), ((3, 8 * 37), 8, -1),
                               ((5, 2 * 40), 2, -1), ((2, 4, 5000), 4, 1)):
        x = _ties(shape, dtype, "cpu")
        _exact(FA.maxout(x, pieces, dim), reference(x, pieces, dim))
        _exact(ops.maxout_forward(x, pieces, dim)[0], reference(x, pieces, dim))
