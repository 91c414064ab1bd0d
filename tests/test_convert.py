"""fused_act.convert / unconvert: every place a module occupies, sharing kept, settings,
parameters, training mode and hooks kept, a report of what was done; round trip."""
import copy

import pytest
import torch
from torch import nn

import fused_act
from fused_act.table import ALL

from helpers import close

WIDTH = 6


def _settings(act):
    """Module configurations of a table row: its defaults, its non-default config, and
    in-place where the module has the flag."""
    configs = [{}, dict(act.module_kwargs)]
    if act.inplace:
        configs.append(dict(act.module_kwargs, inplace=True))
    return configs


# The activations that replace a torch.nn class (ReLUSquared has none to replace).
CONVERTIBLE = [act for act in ALL if act.torch_module is not None]
CASES = [pytest.param(act, kw, id=f"{act.name}-{i}") for act in CONVERTIBLE
         for i, kw in enumerate(_settings(act))]


class Net(nn.Module):
    """One activation instance at four places: twice in a Sequential, as an attribute used by
    forward, and inside a nested block."""

    def __init__(self, act):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(WIDTH, WIDTH), act, nn.Linear(WIDTH, WIDTH), act)
        self.act = act
        self.block = nn.ModuleDict({"inner": nn.Sequential(nn.Linear(WIDTH, WIDTH), act)})
        self.other = nn.Softsign()  # no fused version: kept, and reported

    def forward(self, x):
        h = self.seq(x)
        h = self.act(h * 0.5)
        return self.other(self.block["inner"](h))

    def places(self):
        return [self.seq[1], self.seq[3], self.act, self.block["inner"][1]]


def _is_fused(module):
    return type(module).__module__ == "fused_act.modules"


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("act,kwargs", CASES)
def test_convert_every_place_keeps_sharing_and_round_trips(act, kwargs):
    original = act.torch_module(**kwargs)
    model = Net(original).train()
    original.eval()  # a training mode different from the model's, to be kept
    reference = copy.deepcopy(model)  # deepcopy keeps the sharing
    weights = list(original.parameters())

    converted, report = fused_act.convert(model, report=True)
    assert converted is model
    new = model.act
    assert all(p is new for p in model.places()), "one fused module at every place"
    assert _is_fused(new) and isinstance(new, act.torch_module)
    assert new.extra_repr() == original.extra_repr()  # same settings
    assert [p is q for p, q in zip(new.parameters(), weights)] == [True] * len(weights)
    assert not new.training and model.seq[0].training
    assert report.counts() == {(f"nn.{act.torch_module.__name__}",
                                f"fused_act.{type(new).__name__}"): 1}
    (entry,) = report.replaced
    assert sorted(entry.paths) == ["act", "block.inner.1", "seq.1", "seq.3"]
    assert [(k.cls, k.paths) for k in report.kept] == [(nn.Softsign, ["other"])]
    x = torch.randn(5, WIDTH)
    with torch.no_grad():
        close(model(x), reference(x))
    _same_state(model, reference)

    # Idempotent.
    again, report2 = fused_act.convert(model, report=True)
    assert again is model and model.act is new and not report2.replaced

    # The inverse: the torch.nn class back, same object at every place, same Parameter.
    back, report3 = fused_act.unconvert(model, report=True)
    assert back is model
    restored = model.act
    assert type(restored) is act.torch_module
    assert all(p is restored for p in model.places())
    assert restored.extra_repr() == original.extra_repr() and not restored.training
    assert [p is q for p, q in zip(restored.parameters(), weights)] == [True] * len(weights)
    assert report3.counts() == {(f"fused_act.{type(new).__name__}",
                                 f"nn.{act.torch_module.__name__}"): 1}
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    _same_state(model, reference)


@pytest.mark.parametrize("act", CONVERTIBLE, ids=lambda a: a.name)
def test_model_that_is_an_activation(act):
    original = act.torch_module(**act.module_kwargs)
    new = fused_act.convert(original)
    assert new is not original and _is_fused(new) and isinstance(new, act.torch_module)
    x = torch.randn(3, 4)
    close(new(x), original(x))
    back = fused_act.unconvert(new)
    assert type(back) is act.torch_module and back.extra_repr() == original.extra_repr()


def test_shared_container_and_shared_modules_across_containers():
    relu = nn.ReLU()
    block = nn.Sequential(nn.Linear(4, 4), relu)
    model = nn.ModuleList([block, block, nn.Sequential(relu, nn.Tanh())])
    fused_act.convert(model)
    assert model[0] is model[1]
    assert isinstance(model[0][1], fused_act.ReLU) and model[0][1] is model[2][0]
    assert isinstance(model[2][1], fused_act.Tanh)


def test_report_lists_modules_left_alone_and_why():
    class MyReLU(nn.ReLU):  # a subclass: its forward may differ
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(MyReLU(), nn.Softsign(), nn.LogSigmoid(), nn.Linear(2, 2),
                          fused_act.Tanh(), nn.Sigmoid())
    _, report = fused_act.convert(model, report=True)
    assert type(model[0]) is MyReLU and type(model[1]) is nn.Softsign
    assert isinstance(model[5], fused_act.Sigmoid) and type(model[4]) is fused_act.Tanh
    kept = {k.cls: (k.reason, k.paths) for k in report.kept}
    assert set(kept) == {MyReLU, nn.Softsign, nn.LogSigmoid}
    assert "subclass of nn.ReLU" in kept[MyReLU][0] and kept[MyReLU][1] == ["0"]
    assert "no fused version" in kept[nn.Softsign][0]
    assert report.counts() == {("nn.Sigmoid", "fused_act.Sigmoid"): 1}
    text = str(report)
    assert "replaced nn.Sigmoid -> fused_act.Sigmoid: 1 module(s) at 1 place(s)" in text
    assert "kept nn.Softsign at 1" in text and "MyReLU" in text


def test_relu6_is_not_taken_for_hardtanh():
    """nn.ReLU6 subclasses nn.Hardtanh (min_val 0, max_val 6): convert() gives the fused
    ReLU6, unconvert() nn.ReLU6, each by its exact class; a user's subclass of nn.Hardtanh
    is left alone."""
    class MyHardtanh(nn.Hardtanh):
        pass

    model = nn.Sequential(nn.ReLU6(inplace=True), nn.Hardtanh(-2.0, 3.0), MyHardtanh())
    _, report = fused_act.convert(model, report=True)
    assert type(model[0]) is fused_act.ReLU6 and model[0].inplace
    assert type(model[1]) is fused_act.Hardtanh
    assert (model[1].min_val, model[1].max_val, model[1].inplace) == (-2.0, 3.0, False)
    assert type(model[2]) is MyHardtanh
    assert report.counts() == {("nn.ReLU6", "fused_act.ReLU6"): 1,
                               ("nn.Hardtanh", "fused_act.Hardtanh"): 1}
    x = torch.linspace(-8, 8, 101)
    close(model[0](x.clone()), nn.functional.relu6(x))
    close(model[1](x), torch.clamp(x, -2.0, 3.0))
    fused_act.unconvert(model)
    assert type(model[0]) is nn.ReLU6 and model[0].inplace
    assert type(model[1]) is nn.Hardtanh and model[1].extra_repr() == "min_val=-2.0, max_val=3.0"


def test_unconvert_swish():
    silu_like = fused_act.Swish()
    beta = fused_act.Swish(1.7)
    trainable = fused_act.Swish(0.6, trainable=True)
    model = nn.Sequential(silu_like, beta, trainable, silu_like)
    _, report = fused_act.unconvert(model, report=True)
    assert type(model[0]) is nn.SiLU and model[0] is model[3]
    assert model[1] is beta and model[2] is trainable
    assert report.counts() == {("fused_act.Swish", "nn.SiLU"): 1}
    reasons = {tuple(k.paths): k.reason for k in report.kept}
    assert set(reasons) == {("1",), ("2",)}
    assert "beta=1.7" in reasons[("1",)] and "trainable=True" in reasons[("2",)]


def test_hooks_follow_the_module():
    relu = nn.ReLU()
    calls = []
    handle = relu.register_forward_hook(lambda m, i, o: calls.append(type(m)))
    model = nn.Sequential(relu, relu)
    fused_act.convert(model)
    model(torch.randn(3))
    assert calls == [fused_act.ReLU, fused_act.ReLU]
    handle.remove()  # a handle taken on the old module removes the hook from the new one
    model(torch.randn(3))
    assert len(calls) == 2


def test_prelu_parameter_and_optimizer_state_survive_round_trip():
    model = nn.Sequential(nn.Linear(4, 4), nn.PReLU(4))
    weight = model[1].weight
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    fused_act.convert(model)
    assert model[1].weight is weight and weight in opt.state
    fused_act.unconvert(model)
    assert type(model[1]) is nn.PReLU and model[1].weight is weight


def test_unconvert_keeps_fused_module_without_torch_equivalent():
    relu2 = fused_act.ReLUSquared()
    model = nn.Sequential(relu2, nn.Linear(3, 3))
    _, report = fused_act.unconvert(model, report=True)
    assert model[0] is relu2 and not report.replaced
    (kept,) = report.kept
    assert kept.cls is fused_act.ReLUSquared and kept.paths == ["0"]
    assert "fused_act.ReLUSquared has no torch.nn equivalent" in kept.reason
