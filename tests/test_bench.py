"""Smoke test of bench/run.py: the quick run finishes and writes what it promises."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
OPS = ("relu", "silu")  # one op saving its output, one saving its input


def _has_onnxruntime():
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def _load_run_module(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)
    spec = importlib.util.spec_from_file_location("bench_run", os.path.join(BENCH, "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("text,expected", [
    ("2^20", 2**20), ("2**16", 2**16), ("1048576", 1048576), ("64k", 65536), ("1M", 2**20),
])
def test_parse_size(monkeypatch, text, expected):
    assert _load_run_module(monkeypatch).parse_size(text) == expected


def test_parse_size_rejects_garbage(monkeypatch):
    run = _load_run_module(monkeypatch)
    with pytest.raises(Exception):
        run.parse_size("twenty")


def test_quick_run_writes_results(tmp_path):
    # One thread: the smoke test must not depend on how busy the other cores are.
    cmd = [sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--no-compile",
           "--device", "cpu", "--threads", "1", "--ops", ",".join(OPS), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for op in OPS:  # the terminal table names every op
        assert op in proc.stdout
    names = os.listdir(tmp_path)
    for ext in (".json", ".csv", ".png"):
        assert any(n.endswith(ext) for n in names), (ext, names)
    for png in (n for n in names if n.endswith(".png")):
        with open(tmp_path / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    (json_name,) = [n for n in names if n.endswith(".json")]
    with open(tmp_path / json_name) as f:
        data = json.load(f)
    env = data["environment"]
    for key in ("device", "device_name", "dtype", "sizes", "torch_version",
                "fused_act_version", "threads", "date"):
        assert key in env, key
    assert env["device"] == "cpu" and env["dtype"] == "float32" and env["threads"] == 1

    rows = data["kernels"]
    assert {r["op"] for r in rows} == set(OPS)
    for op in OPS:
        for phase in ("forward", "backward", "fwd+bwd"):
            impls = {r["impl"]: r for r in rows if r["op"] == op and r["phase"] == phase
                     and r["size"] == env["sizes"][0]}
            assert {"fused_act", "torch", "composite", "copy"} <= set(impls), (op, phase)
            assert "compiled" not in impls  # --no-compile
            for r in impls.values():
                assert r["median_s"] > 0 and r["min_s"] <= r["median_s"] <= r["max_s"]
                assert r["gbps"] > 0 and r["frac_copy"] > 0
            assert impls["fused_act"]["agrees_with_torch"] is True
            assert impls["torch"]["fused_speedup"] > 0
    # relu saves its output, silu its input: one tensor the size of x either way.
    for r in rows:
        if r["op"] in OPS and r["impl"] == "fused_act":
            assert r["saved_bytes"] == r["input_bytes"]

    # ONNX Runtime: a forward-only row that agrees with torch when it is installed, a
    # printed note when it is not.
    ort_rows = [r for r in rows if r["impl"] == "onnxruntime"]
    if _has_onnxruntime():
        assert {r["phase"] for r in ort_rows} == {"forward"}
        assert {r["op"] for r in ort_rows} == set(OPS)
        assert all(r["agrees_with_torch"] for r in ort_rows)
        assert env["onnxruntime"]["io_binding"] is True
    else:
        assert not ort_rows and "ONNX Runtime left out" in proc.stdout

    mlp = {m["op"]: m for m in data["mlp"]}
    assert set(mlp) == set(OPS)
    for m in mlp.values():
        assert m["torch_steps_per_s"] > 0 and m["fused_act_steps_per_s"] > 0
        assert m["loss_match"]
        assert m["fused_act_saved_bytes"] > 0


def test_softmax_rows_are_benchmarked_per_row_length(tmp_path):
    # softmax reduces along rows: each requested row length is its own set of rows.
    cmd = [sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--no-compile",
           "--no-mlp", "--no-plot", "--device", "cpu", "--threads", "1", "--ops",
           "softmax,log_softmax", "--rows", "16,1024", "--sizes", "2^14", "--out",
           str(tmp_path), "--steady-alloc"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "softmax/16" in proc.stdout and "log_softmax/1024" in proc.stdout
    (json_name,) = [n for n in os.listdir(tmp_path) if n.endswith(".json")]
    with open(tmp_path / json_name) as f:
        data = json.load(f)
    assert data["environment"]["softmax_row_widths"] == [16, 1024]
    assert data["environment"]["steady_alloc"]["mallopt"]["M_MMAP_MAX"] == 0
    assert "allocator: steady" in proc.stdout
    shapes = {(r["op"], r["row"], r["shape"]) for r in data["kernels"] if r["impl"] == "fused_act"}
    assert shapes == {("softmax", 16, "1024x16"), ("softmax", 1024, "16x1024"),
                      ("log_softmax", 16, "1024x16"), ("log_softmax", 1024, "16x1024")}
    assert all(r["agrees_with_torch"] for r in data["kernels"] if r["impl"] != "copy")


def test_maxout_rows_cover_both_layouts_and_save_less(tmp_path):
    # maxout: every setting (2 and 4 pieces, dim 1 of NCHW and the last dim), the
    # gradient shaped like the output, the bytes moved counted for the smaller output.
    cmd = [sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--no-compile",
           "--no-plot", "--device", "cpu", "--threads", "1", "--ops", "maxout",
           "--sizes", "2^16", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (json_name,) = [n for n in os.listdir(tmp_path) if n.endswith(".json")]
    with open(tmp_path / json_name) as f:
        data = json.load(f)
    rows = [r for r in data["kernels"] if r["impl"] == "fused_act"]
    shapes = {(r["setting"], r["shape"]) for r in rows}
    assert shapes == {("pieces2_dim1", "1x64x32x32"), ("pieces4_dim1", "1x64x32x32"),
                      ("pieces2_last", "64x1024"), ("pieces4_last", "64x1024")}
    assert all(r["agrees_with_torch"] for r in data["kernels"] if r["impl"] != "copy")
    for r in rows:
        pieces = 2 if r["setting"].startswith("pieces2") else 4
        forward = (2**16 + 2**16 // pieces) * 4
        assert r["bytes_moved"] == {"forward": forward, "backward": forward,
                                    "fwd+bwd": 2 * forward}[r["phase"]]
        assert r["saved_bytes"] == 2**16 // pieces  # one byte of mask per output
    torch_saved = {r["saved_bytes"] for r in data["kernels"] if r["impl"] == "torch"}
    assert torch_saved == {(2**16 + 2**16 // 2) * 4, (2**16 + 2**16 // 4) * 4}


def test_compile_guard_catches_a_recompile(monkeypatch):
    # The guard around every timed region of torch.compile: a compilation inside it fails.
    monkeypatch.syspath_prepend(BENCH)
    import torch
    import compiled

    fn = torch.compile(lambda t: t.relu() * 2, backend="eager", dynamic=False)
    a, b = torch.randn(8, 4), torch.randn(16, 4)
    fn(a)  # compiled here, outside the guard
    with compiled.guard("relu"):
        fn(a)  # the same shape: no compilation
    with pytest.raises(Exception, match="(?i)recompil"):
        with compiled.guard("relu"):
            fn(b)  # a new shape with static shapes: a recompile


@pytest.mark.parametrize("name", ["convnet", "transformer", "transformer_gelu"])
def test_models_train_with_fused_act(monkeypatch, name):
    monkeypatch.syspath_prepend(BENCH)
    import torch
    import models

    r = models.run_model(name, torch.device("cpu"), torch.float32, steps=1, repeats=1,
                         warmup=0)
    assert r["loss_match"]
    assert r["torch_steps_per_s"] > 0 and r["fused_act_steps_per_s"] > 0
    assert "compiled_steps_per_s" not in r  # no compile options given
    wanted = {"convnet": {"SiLU", "Sigmoid"}, "transformer": {"SiLU", "Softmax"},
              "transformer_gelu": {"GELU", "Softmax"}}[name]
    assert set(r["fused_modules"].split(",")) == wanted
    # fused_act keeps no more for backward than torch's modules do.
    assert 0 < r["fused_act_saved_bytes"] <= r["torch_saved_bytes"]


@pytest.mark.skipif(not _has_onnxruntime(), reason="onnx/onnxruntime not installed")
def test_onnxruntime_sessions_agree_with_torch(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)
    import torch
    import ortbench
    from fused_act import table

    for act in table.ALL:
        for setting in act.settings:
            sess = ortbench.Session(act, setting, threads=1)
            for shape in ((8, 1024), (64, 1024)):  # one session, any number of rows
                x = torch.randn(shape)
                y = sess.bind(x).output()
                kwargs = setting.kwargs(x)
                ref = act.reference(x, **kwargs)
                if act.name == "softplus":
                    # torch's own ONNX export of softplus (the session's model) drops the
                    # threshold: above it, ONNX Runtime computes log(1 + exp(x*beta))/beta
                    # where torch returns x (visible only at a non-default threshold).
                    beta = kwargs.get("beta", 1.0)
                    above = x * beta > kwargs.get("threshold", 20.0)
                    ref = torch.where(above, torch.log1p(torch.exp(x * beta)) / beta, ref)
                torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5,
                                           msg=f"{act.name}[{setting.id}] {shape}")


def test_perf_suite_is_generated_from_the_table(tmp_path):
    pytest.importorskip("pytest_benchmark")
    import fused_act
    from fused_act import table

    # Collected in another folder, with the fused_act these tests import first on the path:
    # `python -m` puts the working folder first, and when the tests run against an installed
    # fused_act, ROOT holds only the sources (no compiled library).
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fused_act.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_parent] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", os.path.join(BENCH, "test_perf.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ids = [line for line in proc.stdout.splitlines() if "test_perf[" in line]
    # op x {forward, backward} x {cached, large} x {fused_act, torch}
    assert len(ids) == 8 * len(table.ALL)
    for act in table.ALL:
        assert any(f"[{act.name}-forward-large-fused_act]" in i for i in ids), act.name
