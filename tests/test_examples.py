"""The examples (examples/*.py) run with --quick and show fused_act giving torch.nn's
results: the ReLU family bit for bit, the others within the tolerances each example
states (its module constants, printed in its summary).  Each example runs once, in
process, on one thread (so that the run does not depend on how busy the other cores are),
writing into a temporary folder."""
import importlib
import math
import os

import pytest
import torch
from torch import nn

from fused_act import table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def _load(name):
    import sys

    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    return importlib.import_module(name)


def _run(name, out):
    threads = torch.get_num_threads()
    try:
        module = _load(name)
        result = module.main(["--quick", "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return module, result


def _check_files(result, out):
    assert result["files"], "the example wrote nothing"
    for path in result["files"]:
        assert os.path.dirname(path) == str(out), path
        assert os.path.getsize(path) > 0, path
        if path.endswith(".png"):
            with open(path, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    assert any(p.endswith(".png") for p in result["files"])
    assert any(p.endswith(".txt") for p in result["files"])


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    out = tmp_path_factory.mktemp("activation_gallery")
    module, result = _run("activation_gallery", out)
    return module, result, out


@pytest.fixture(scope="module")
def circles(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_circles")
    module, result = _run("two_circles", out)
    return module, result, out


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    out = tmp_path_factory.mktemp("inside_mlp")
    module, result = _run("inside_mlp", out)
    return module, result, out


@pytest.fixture(scope="module")
def speed(tmp_path_factory):
    out = tmp_path_factory.mktemp("speed")
    module, result = _run("speed", out)
    return module, result, out


def test_model_pair_refuses_a_model_without_activations():
    common = _load("common")
    with pytest.raises(RuntimeError, match="found no torch.nn activation"):
        common.model_pair(nn.Sequential(nn.Linear(3, 3)))


# ------------------------------------------------------------- activation_gallery.py
def test_gallery_draws_every_activation_of_the_table(gallery):
    module, result, out = gallery
    _check_files(result, out)
    drawn = {(r["act"].name, r["setting"]) for r in result["rows"]}
    assert drawn == {(a.name, s.id) for a in table.ALL for s in a.settings}


def test_gallery_fused_equals_torch(gallery):
    module, result, _ = gallery
    assert set(module.EXACT) <= set(table.BY_NAME)
    for r in result["rows"]:
        where = f"{r['act'].name} ({r['setting']})"
        # the derivative is not identically zero: the comparison compares something
        assert abs(r["d_torch"]).max() > 0, where
        if r["act"].name in module.EXACT:
            assert r["f_equal"] and r["d_equal"], (where, r["f_max_abs"], r["d_max_abs"])
        else:
            assert r["f_close"], (where, r["f_max_abs"])
            assert r["d_close"], (where, r["d_max_abs"])


# -------------------------------------------------------------------- two_circles.py
def test_two_circles_fused_equals_torch(circles):
    module, result, out = circles
    _check_files(result, out)
    results = result["results"]
    assert set(results) == set(module.ACTIVATIONS)
    for name, r in results.items():
        t, f, d = r["torch.nn"], r["fused_act"], r["diff"]
        assert len(t["loss"]) == len(f["loss"]) > 0
        assert t["grad"].shape == f["grad"].shape == (len(t["loss"]), len(module.WIDTHS) - 1)
        if name in module.EXACT:
            assert d["identical"], (name, d)
        else:
            assert d["loss"] <= module.LOSS_ATOL, (name, d)
            assert d["accuracy"] <= module.ACC_ATOL, (name, d)
            assert d["grad_rel"] <= module.GRAD_RTOL, (name, d)


def test_two_circles_shows_the_vanishing_gradient(circles):
    # The picture the example is about: with sigmoid the first layer's gradient is orders
    # of magnitude below the last layer's; with ReLU it is not.
    _, result, _ = circles
    g_sig = result["results"]["sigmoid"]["torch.nn"]["grad"][0]
    g_relu = result["results"]["relu"]["torch.nn"]["grad"][0]
    assert g_sig[0] / g_sig[-1] < 1e-3 < g_relu[0] / g_relu[-1]


# --------------------------------------------------------------------- inside_mlp.py
def test_inside_mlp_fused_equals_torch(mlp):
    module, result, out = mlp
    _check_files(result, out)
    results = result["results"]
    assert set(results["acts"]) == set(module.ACTIVATIONS)
    for name, d in results["diff"].items():
        assert d["dead_equal"], name
        if name in module.EXACT:
            assert d["identical"], (name, d)
        else:
            assert d["grad_rel"] <= module.GRAD_RTOL, (name, d)
            assert d["loss"] <= module.LOSS_ATOL, (name, d)
            assert d["accuracy"] <= module.ACC_ATOL, (name, d)
            assert d["hist_moved"] <= module.HIST_ATOL, (name, d)
    deep = results["dead_deep"]
    assert deep["torch.nn"] == deep["fused_act"]
    assert len(deep["torch.nn"]) == len(module.DEEP_HIDDEN)


def test_inside_mlp_counts_dead_relu_neurons(mlp):
    # A dead ReLU neuron exists in the deep untrained network (the tutorials' point) and
    # none in the smooth activations' networks.
    _, result, _ = mlp
    results = result["results"]
    assert sum(results["dead_deep"]["torch.nn"]) > 0
    for name in ("sigmoid", "tanh", "elu", "swish"):
        assert sum(results["acts"][name]["torch.nn"]["dead_untrained"]) == 0, name


def test_inside_mlp_data_has_every_class(mlp):
    _, result, _ = mlp
    assert all(c > 0 for c in result["results"]["classes"])


# -------------------------------------------------------------------------- speed.py
def test_speed_variants_agree_and_are_timed(speed):
    module, result, out = speed
    _check_files(result, out)
    results = result["results"]
    assert set(results) == set(module.VARIANTS)
    for name, r in results.items():
        check = r["check"]
        if name in module.EXACT:
            assert check["fused_act"]["equal"], (name, check)
        else:
            assert check["fused_act"]["close"], (name, check)
        # the hand-written classes compute the same functions (that is what is timed)
        assert check["hand-written"]["close"], (name, check)
        for key in ("mlp", "alone"):
            for impl in module.NAMES:
                assert math.isfinite(r[key][impl]) and r[key][impl] > 0, (name, key, impl)
