"""convert() on the activation classes of transformers and timm: each mapped class gives
the same output and input gradient as the original, the classes without a fused version
are reported, and whole models built from configs (random weights, nothing downloaded)
give the same outputs and gradients once converted."""
import copy
import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: nothing downloads
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch
from torch import nn

import fused_act

from helpers import close


def _import_transformers():
    """transformers.activations, or None and why not."""
    try:
        import transformers
    except ImportError:
        return None, "transformers is not installed"
    from transformers.utils import is_torch_available
    if not is_torch_available():  # it disables its torch classes below its minimum torch
        return None, (f"transformers {transformers.__version__} does not support torch "
                      f"{torch.__version__}")
    from transformers import activations
    return activations, None


TA, _no_transformers = _import_transformers()
needs_transformers = pytest.mark.skipif(TA is None, reason=str(_no_transformers))

try:
    import timm
    from timm.layers import activations as TL
    from timm.layers import activations_me as TLME
except ImportError:
    timm = None
needs_timm = pytest.mark.skipif(timm is None, reason="timm is not installed")

# (id, constructor, the fused class expected, its settings expected).
TRANSFORMERS_CASES = [] if TA is None else [
    ("GELUActivation", lambda: TA.GELUActivation(), fused_act.GELU, {"approximate": "none"}),
    ("GELUActivation-python", lambda: TA.GELUActivation(use_gelu_python=True), fused_act.GELU,
     {"approximate": "none"}),
    ("NewGELUActivation", lambda: TA.NewGELUActivation(), fused_act.GELU,
     {"approximate": "tanh"}),
    ("FastGELUActivation", lambda: TA.FastGELUActivation(), fused_act.GELU,
     {"approximate": "tanh"}),
    ("AccurateGELUActivation", lambda: TA.AccurateGELUActivation(), fused_act.GELU,
     {"approximate": "tanh"}),
    ("QuickGELUActivation", lambda: TA.QuickGELUActivation(), fused_act.Swish,
     {"beta": 1.702, "trainable": False}),
    ("ReLUSquaredActivation", lambda: TA.ReLUSquaredActivation(), fused_act.ReLUSquared, {}),
    ("MishActivation", lambda: TA.MishActivation(), fused_act.Mish, {"inplace": False}),
]
if TA is not None and hasattr(TA, "GELUTanh"):
    TRANSFORMERS_CASES += [
        ("GELUTanh", lambda: TA.GELUTanh(), fused_act.GELU, {"approximate": "tanh"}),
        ("GELUTanh-python", lambda: TA.GELUTanh(use_gelu_tanh_python=True), fused_act.GELU,
         {"approximate": "tanh"})]
if TA is not None and hasattr(TA, "PytorchGELUTanh") and getattr(TA, "GELUTanh", None) is not TA.PytorchGELUTanh:
    TRANSFORMERS_CASES += [("PytorchGELUTanh", lambda: TA.PytorchGELUTanh(), fused_act.GELU,
                            {"approximate": "tanh"})]
if TA is not None and getattr(TA, "SiLUActivation", nn.SiLU) is not nn.SiLU:
    TRANSFORMERS_CASES += [("SiLUActivation", lambda: TA.SiLUActivation(), fused_act.SiLU,
                            {"inplace": False})]

TIMM_CASES = [] if timm is None else [
    ("Swish", lambda: TL.Swish(), fused_act.SiLU, {"inplace": False}),
    ("Swish-inplace", lambda: TL.Swish(inplace=True), fused_act.SiLU, {"inplace": True}),
    ("Mish", lambda: TL.Mish(), fused_act.Mish, {"inplace": False}),
    ("Mish-inplace", lambda: TL.Mish(inplace=True), fused_act.Mish, {"inplace": False}),
    ("Sigmoid", lambda: TL.Sigmoid(), fused_act.Sigmoid, {}),
    ("Tanh", lambda: TL.Tanh(), fused_act.Tanh, {}),
    ("HardSwish", lambda: TL.HardSwish(), fused_act.Hardswish, {"inplace": False}),
    ("HardSwish-inplace", lambda: TL.HardSwish(inplace=True), fused_act.Hardswish,
     {"inplace": True}),
    ("HardSigmoid", lambda: TL.HardSigmoid(), fused_act.Hardsigmoid, {"inplace": False}),
    ("HardSigmoid-inplace", lambda: TL.HardSigmoid(inplace=True), fused_act.Hardsigmoid,
     {"inplace": True}),
    ("PReLU", lambda: TL.PReLU(num_parameters=5, init=0.1), fused_act.PReLU,
     {"num_parameters": 5}),
    ("GELU", lambda: TL.GELU(), fused_act.GELU, {"approximate": "none"}),
    ("GELUTanh", lambda: TL.GELUTanh(), fused_act.GELU, {"approximate": "tanh"}),
    ("QuickGELU", lambda: TL.QuickGELU(), fused_act.Swish, {"beta": 1.702, "trainable": False}),
    ("SwishMe", lambda: TLME.SwishMe(), fused_act.SiLU, {"inplace": False}),
    ("MishMe", lambda: TLME.MishMe(), fused_act.Mish, {"inplace": False}),
    ("HardSwishMe", lambda: TLME.HardSwishMe(), fused_act.Hardswish, {"inplace": False}),
    ("HardSigmoidMe", lambda: TLME.HardSigmoidMe(), fused_act.Hardsigmoid, {"inplace": False}),
]


def _input(shape=(4, 5, 7)):
    """Random values over the interesting ranges: |x| up to about 10 (both sides of the
    hard functions' kinks, GELU's and Mish's tails), and 0, -3 and 3 exactly."""
    x = torch.randn(shape) * 4
    flat = x.view(-1)
    flat[::17] = 0.0
    flat[5::17] = -3.0
    flat[11::17] = 3.0
    return x


# timm's memory-efficient HardSwishMe/HardSigmoidMe have a hand-written backward that takes,
# at the kinks x = -3 and 3, the other one-sided derivative than torch's (and fused_act's):
# class -> {x: (its gradient there, torch's)}.
KINKS = {
    "HardSwishMe": {-3.0: (-0.5, 0.0), 3.0: (1.5, 1.0)},
    "HardSigmoidMe": {-3.0: (1 / 6, 0.0), 3.0: (1 / 6, 0.0)},
}


def _output_and_grad(module, x, grad):
    leaf = x.clone().requires_grad_()
    y = module(leaf * 1.0)  # a non-leaf input: in-place modules may overwrite it
    y.backward(grad)
    return y.detach(), leaf.grad


def _check_same_function(original):
    reference = copy.deepcopy(original)  # the in-place modules change nothing of themselves
    new, report = fused_act.convert(original, report=True)
    kinks = KINKS.get(type(original).__name__, {})
    for _ in range(3):
        x = _input()
        grad = torch.randn_like(x)
        y, g = _output_and_grad(new, x, grad)
        y_ref, g_ref = _output_and_grad(reference, x, grad)
        close(y, y_ref, msg="output")
        for at, (theirs, torchs) in kinks.items():  # the known difference, then the rest
            here = x == at
            close(g_ref[here], grad[here] * theirs, msg=f"{type(original).__name__} at {at}")
            close(g[here], grad[here] * torchs, msg=f"fused at {at}")
            g, g_ref = g.masked_fill(here, 0), g_ref.masked_fill(here, 0)
        close(g, g_ref, msg="input gradient")
    return new, report


@pytest.mark.parametrize("name,make,fused_cls,settings",
                         [pytest.param(*c, id=c[0]) for c in TRANSFORMERS_CASES + TIMM_CASES])
def test_mapped_class_same_output_and_gradient(name, make, fused_cls, settings):
    original = make()
    new, report = _check_same_function(original)
    assert type(new) is fused_cls
    assert {k: getattr(new, k) for k in settings} == settings
    old_name = f"{type(original).__module__}.{type(original).__qualname__}"
    assert report.counts() == {(old_name, f"fused_act.{fused_cls.__name__}"): 1}
    assert report.kept == []


@needs_timm
def test_timm_prelu_keeps_its_weight_parameter():
    original = TL.PReLU(num_parameters=3, init=0.3)
    weight = original.weight
    model = nn.Sequential(nn.Conv2d(3, 3, 1), original)
    fused_act.convert(model)
    assert type(model[1]) is fused_act.PReLU and model[1].weight is weight
    back = fused_act.unconvert(model)
    assert type(back[1]) is nn.PReLU and back[1].weight is weight


@needs_timm
@pytest.mark.parametrize("cls", ["Sigmoid", "Tanh"])
def test_timm_inplace_sigmoid_tanh_are_kept(cls):
    """fused_act.Sigmoid/Tanh have no in-place form, and timm's in-place ones overwrite
    their input: left alone, with the reason."""
    module = getattr(TL, cls)(inplace=True)
    model = nn.Sequential(module)
    _, report = fused_act.convert(model, report=True)
    assert model[0] is module and not report.replaced
    (kept,) = report.kept
    assert kept.cls is type(module) and "inplace=True" in kept.reason


@needs_transformers
def test_transformers_instance_with_another_function_is_kept():
    """GELUActivation picks its function at construction: an instance holding another one
    is not a GELU."""
    module = TA.GELUActivation()
    module.act = torch.tanh
    _, report = fused_act.convert(nn.Sequential(module), report=True)
    assert not report.replaced and "not F.gelu or _gelu_python" in report.kept[0].reason
    accurate = TA.AccurateGELUActivation()
    accurate.precomputed_constant = 0.8
    _, report = fused_act.convert(nn.Sequential(accurate), report=True)
    assert not report.replaced and "not sqrt(2/pi)" in report.kept[0].reason


@pytest.mark.skipif(TA is None and timm is None, reason="neither transformers nor timm")
def test_classes_without_fused_version_are_reported():
    kept_cases = []
    if TA is not None:
        kept_cases += [TA.ClippedGELUActivation(-10, 10), TA.LinearActivation(),
                       TA.LaplaceActivation()]
    if timm is not None:
        kept_cases += [TL.HardMish(), TLME.HardMishMe()]
    model = nn.Sequential(*kept_cases)
    reference = copy.deepcopy(model)
    _, report = fused_act.convert(model, report=True)
    assert not report.replaced
    assert [type(m) for m in model] == [type(m) for m in reference]
    reasons = {k.cls.__name__: k.reason for k in report.kept}
    assert set(reasons) == {type(m).__name__ for m in kept_cases}
    text = str(report)
    if TA is not None:
        assert "no fused version" in reasons["ClippedGELUActivation"]
        assert "identity" in reasons["LinearActivation"]
        assert "kept transformers.activations.LaplaceActivation at 2" in text
    if timm is not None:
        assert "no fused version" in reasons["HardMish"]
        assert "kept timm.layers.activations_me.HardMishMe at" in text


@needs_transformers
def test_subclass_of_a_mapped_class_is_left_to_the_user():
    class MyGELU(TA.GELUActivation):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(MyGELU())
    _, report = fused_act.convert(model, report=True)
    assert type(model[0]) is MyGELU
    assert "a subclass of transformers.activations.GELUActivation" in report.kept[0].reason

    # register_converter teaches convert() the subclass, and takes precedence over the
    # built-in entry of a third-party class.
    C = sys.modules["fused_act.convert"]  # the module (fused_act.convert is the function)
    saved = dict(C._CONVERTERS)
    try:
        fused_act.register_converter(MyGELU, lambda m: nn.Sequential(fused_act.GELU(),
                                                                     nn.Identity()))
        fused_act.register_converter(TA.NewGELUActivation, lambda m: fused_act.Tanh())
        model = nn.Sequential(MyGELU(), TA.NewGELUActivation())
        fused_act.convert(model)
        assert isinstance(model[0], nn.Sequential) and type(model[1]) is fused_act.Tanh
    finally:
        C._CONVERTERS.clear()
        C._CONVERTERS.update(saved)


@needs_transformers
def test_unconvert_gives_torch_equivalents():
    model = nn.Sequential(TA.GELUActivation(), TA.NewGELUActivation(), TA.MishActivation(),
                          TA.QuickGELUActivation(), TA.ReLUSquaredActivation())
    reference = copy.deepcopy(model)
    fused_act.convert(model)
    _, report = fused_act.unconvert(model, report=True)
    assert [type(m) for m in model] == [nn.GELU, nn.GELU, nn.Mish, fused_act.Swish,
                                        fused_act.ReLUSquared]
    assert model[1].approximate == "tanh"
    reasons = {k.cls: k.reason for k in report.kept}
    assert "beta=1.702" in reasons[fused_act.Swish]
    assert "no torch.nn equivalent" in reasons[fused_act.ReLUSquared]
    x = _input()
    close(model(x), reference(x))


def test_fused_act_imports_neither_package():
    """The tables are built from sys.modules: importing fused_act and converting a model
    must not import transformers or timm."""
    code = ("import sys, torch, fused_act\n"
            "m = fused_act.convert(torch.nn.Sequential(torch.nn.SiLU(), torch.nn.GELU()))\n"
            "assert type(m[0]) is fused_act.SiLU\n"
            "bad = [n for n in sys.modules if n.split('.')[0] in ('transformers', 'timm')]\n"
            "assert not bad, bad\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


@needs_timm
def test_tables_come_from_the_modules_imported_at_convert_time(monkeypatch):
    """A package's classes are converted only while its module is in sys.modules."""
    monkeypatch.delitem(sys.modules, "timm.layers.activations")
    model = nn.Sequential(TL.Swish(), nn.GELU())
    _, report = fused_act.convert(model, report=True)
    assert type(model[0]) is TL.Swish and type(model[1]) is fused_act.GELU
    assert report.kept == []  # timm's module is not imported: its classes are unknown
    monkeypatch.undo()
    fused_act.convert(model)
    assert type(model[0]) is fused_act.SiLU


# ---- whole models, from configs with random weights ----

def _compare_models(model, make_inputs, loss_of, expected_counts, expected_kept=()):
    """Converts ``model`` and checks the report, the output and every gradient (of the
    parameters and of the one float input) against an unconverted copy."""
    model.eval()  # no dropout; BatchNorm uses its running statistics
    reference = copy.deepcopy(model)
    converted, report = fused_act.convert(model, report=True)
    assert converted is model
    assert report.counts() == expected_counts
    assert sorted(_name(k.cls) for k in report.kept) == sorted(expected_kept)
    results = []
    for m in (model, reference):
        torch.manual_seed(1)
        inputs = make_inputs()
        out = loss_of(m, inputs)
        loss = (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum()
        loss.backward()
        grads = {n: p.grad for n, p in m.named_parameters()}
        input_grads = [t.grad for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        results.append((out.detach(), grads, input_grads))
    (out, grads, input_grads), (out_ref, grads_ref, input_grads_ref) = results
    close(out, out_ref, msg="output")
    assert grads.keys() == grads_ref.keys()
    for n in grads:
        assert (grads[n] is None) == (grads_ref[n] is None), n
        if grads[n] is not None:
            close(grads[n], grads_ref[n], msg=f"gradient of {n}")
    assert len(input_grads) == len(input_grads_ref) == 1 and input_grads[0] is not None
    close(input_grads[0], input_grads_ref[0], msg="input gradient")
    return model, report


def _name(cls):
    module = cls.__module__
    if module.startswith("torch.nn"):
        return f"nn.{cls.__qualname__}"
    return f"{module}.{cls.__qualname__}"


@needs_transformers
def test_tiny_llama_silu_replaced():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=32, initializer_range=0.2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    act = type(model.model.layers[0].mlp.act_fn)
    model, _ = _compare_models(
        model, lambda: (torch.randn(2, 9, 32, requires_grad=True),),
        lambda m, inputs: m(inputs_embeds=inputs[0]).logits,
        {(_name(act), "fused_act.SiLU"): 2})
    assert all(type(layer.mlp.act_fn) is fused_act.SiLU for layer in model.model.layers)


@needs_transformers
def test_tiny_bert_gelu_replaced():
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=32, hidden_act="gelu",
                        initializer_range=0.2)
    torch.manual_seed(0)
    model = BertModel(config)
    model, _ = _compare_models(
        model, lambda: (torch.randn(2, 9, 32, requires_grad=True),),
        lambda m, inputs: m(inputs_embeds=inputs[0]).pooler_output,
        {("transformers.activations.GELUActivation", "fused_act.GELU"): 2,
         ("nn.Tanh", "fused_act.Tanh"): 1})
    assert all(type(layer.intermediate.intermediate_act_fn) is fused_act.GELU
               for layer in model.encoder.layer)


@needs_timm
def test_timm_mobilenetv3_hardswish_hardsigmoid_replaced():
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=10)
    _compare_models(
        model, lambda: (torch.randn(2, 3, 32, 32, requires_grad=True),),
        lambda m, inputs: m(inputs[0]),
        {("nn.Hardswish", "fused_act.Hardswish"): 19,
         ("nn.Hardsigmoid", "fused_act.Hardsigmoid"): 9,
         ("nn.ReLU", "fused_act.ReLU"): 14})


@needs_timm
def test_timm_regnety_sigmoid_replaced():
    torch.manual_seed(0)
    model = timm.create_model("regnety_002", pretrained=False, num_classes=10)
    _compare_models(
        model, lambda: (torch.randn(2, 3, 32, 32, requires_grad=True),),
        lambda m, inputs: m(inputs[0]),
        {("timm.layers.activations.Sigmoid", "fused_act.Sigmoid"): 13,
         ("nn.ReLU", "fused_act.ReLU"): 53})
