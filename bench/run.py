#!/usr/bin/env python
"""Benchmark of fused_act against torch, for every activation in fused_act.table.

    python bench/run.py              # CPU, or CUDA when there is a GPU; a few minutes
    python bench/run.py --quick      # every op, two sizes, well under a minute
    python bench/run.py --help

For each activation (its first Setting, or all of them with --all-settings) and each size,
forward, backward and forward+backward are timed for:
    fused_act   fused_act.functional.<op>
    torch       the table's reference (what torch users call today)
    composite   the hand-written composition from the table (a tutorial's version)
    compiled    torch.compile of the torch reference, per shape (--no-compile skips it)
    onnxruntime ONNX Runtime on the exported reference, forward only (when installed)
    copy        torch.empty_like(x).copy_(x): the bandwidth yardstick of the same run
Reported: median time per call with its spread, effective bandwidth (bytes read + written
by an ideal kernel / time), that bandwidth as a fraction of the copy's, the speed of
fused_act relative to each competitor, and the bytes each implementation keeps for
backward.  Then training loops: a small MLP per activation, and the models of
bench/models.py, torch modules against fused_act.convert() and torch.compile.
Results go to --out (default bench/results/): JSON, CSV and PNG plots.
"""
import argparse
import contextlib
import datetime
import inspect
import os
import platform
import re
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import alloc  # noqa: E402

# Before torch is imported, so that every allocation of the run is served the same way.
STEADY_ALLOC = alloc.steady() if "--steady-alloc" in sys.argv[1:] else None

import torch  # noqa: E402

try:
    import fused_act  # noqa: E402
except ImportError:  # running from a checkout that is built in place but not installed
    sys.path.insert(0, ROOT)
    import fused_act  # noqa: E402
from fused_act import table  # noqa: E402

import compiled as compiled_setup  # noqa: E402
import models  # noqa: E402
import ortbench  # noqa: E402
import report  # noqa: E402
from mlp import run_mlp  # noqa: E402
from timing import Candidate, Clock, interleaved, saved_bytes, summarize  # noqa: E402

PHASES = ("forward", "backward", "fwd+bwd")
# Bytes an ideal kernel moves per element, in units of the element size:
# forward reads x and writes y; backward reads the incoming gradient and the saved
# tensor (x or y) and writes dx; forward+backward is the sum.
BYTES_PER_ELEMENT = {"forward": 2, "backward": 3, "fwd+bwd": 5}
# The gated ops (glu, swiglu, geglu, reglu), per OUTPUT element: the forward reads both
# halves of x and writes y; the backward reads the gradient and x and writes dx (both
# halves).  Their sizes count output elements: the input has twice as many.
GATED_BYTES_PER_ELEMENT = {"forward": 3, "backward": 5, "fwd+bwd": 8}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_SIZES = {
    "cpu": [2**14, 2**18, 2**20, 2**22, 2**24],      # from L1/L2-resident to far past L3
    "cuda": [2**16, 2**20, 2**22, 2**24, 2**26, 2**28],
}
QUICK_SIZES = [2**16, 2**20]
ROW = 1024  # inputs are (n // ROW, ROW): rows of a realistic width, channels on dim 1
# Row lengths for the ops that reduce along rows (softmax, log_softmax): one per code path
# of the kernels (rows in registers, cached rows, long rows).
DEFAULT_SOFTMAX_ROWS = "16,1024,8192"
# Tolerance of the agreement check of each implementation against torch's reference.
CHECK_TOL = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (3e-2, 3e-2),
             torch.float16: (5e-3, 5e-3)}


def parse_size(text: str) -> int:
    """'2^20', '2**20', '1048576', '1M', '64k' -> number of elements."""
    s = text.strip().lower().replace("_", "")
    m = re.fullmatch(r"(\d+)\s*(\^|\*\*)\s*(\d+)", s)
    if m:
        return int(m.group(1)) ** int(m.group(3))
    m = re.fullmatch(r"(\d+)([kmg]?)", s)
    if m:
        return int(m.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2)]
    raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 2^20 or 1048576)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark fused_act against torch for every activation in its table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when a GPU is usable, else CPU")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--ops", default=None,
                   help="comma-separated subset of activations (default: all)")
    p.add_argument("--sizes", default=None,
                   help="comma-separated element counts, e.g. 2^16,2^20,4194304 "
                        "(default: depends on the device, or on --quick)")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory")
    p.add_argument("--quick", action="store_true",
                   help="every op, two sizes, few repeats, no torch.compile unless --compile")
    p.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction,
                   default=None, help="include torch.compile of the torch reference "
                                      "(default: on, off with --quick)")
    p.add_argument("--compile-partitioner", choices=compiled_setup.PARTITIONERS,
                   default="eager-saves",
                   help="how torch.compile splits forward and backward: eager-saves keeps "
                        "what eager autograd keeps; min-cut is torch.compile's stock "
                        "partitioner (see bench/README.md)")
    p.add_argument("--ort", dest="ort", action=argparse.BooleanOptionalAction, default=True,
                   help="include ONNX Runtime (CPU, float32, forward only) when onnx and "
                        "onnxruntime are installed")
    p.add_argument("--steady-alloc", action="store_true",
                   help="serve every allocation from glibc's heap and never return it to "
                        "the OS (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB), so that a new "
                        "output does not page-fault on fresh pages; off: glibc's defaults")
    p.add_argument("--rows", default=DEFAULT_SOFTMAX_ROWS,
                   help="row lengths for softmax/log_softmax, comma-separated (the other "
                        f"ops use rows of {ROW})")
    p.add_argument("--all-settings", action="store_true",
                   help="one row per Setting of each activation, not only the first")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and fused_act (default: all usable cores)")
    p.add_argument("--repeats", type=int, default=None,
                   help="interleaved measurements per implementation (default 7, quick 3)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds one measurement lasts at least (default 0.005, quick 0.002)")
    p.add_argument("--no-mlp", dest="mlp", action="store_false",
                   help="skip the end-to-end training benchmarks (MLP per op and the models)")
    p.add_argument("--models", default=None,
                   help="comma-separated end-to-end models, from " + ",".join(models.MODELS)
                        + " (default: all; none with --quick unless named)")
    p.add_argument("--mlp-steps", type=int, default=None,
                   help="training steps per MLP measurement (default 10, quick 2)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="write no PNG")
    args = p.parse_args(argv)

    if args.compile is None:
        args.compile = not args.quick
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.min_time is None:
        args.min_time = 0.002 if args.quick else 0.005
    if args.mlp_steps is None:
        args.mlp_steps = 2 if args.quick else 10
    if args.models is None:
        args.models = [] if args.quick else list(models.MODELS)
    else:
        args.models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in args.models if m not in models.MODELS]
        if unknown:
            p.error(f"--models: unknown {', '.join(unknown)}; available: "
                    + ", ".join(models.MODELS))
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    args.sizes = [parse_size(s) for s in args.sizes.split(",")] if args.sizes else None
    if args.sizes and any(n < 1 for n in args.sizes):
        p.error("sizes must be positive")
    try:
        args.rows = [parse_size(s) for s in args.rows.split(",") if s.strip()]
    except argparse.ArgumentTypeError as err:
        p.error(f"--rows: {err}")
    if not args.rows or any(r < 1 for r in args.rows):
        p.error("--rows needs positive row lengths")
    return args


def pick_device(choice: str) -> torch.device:
    cuda_ok = torch.cuda.is_available() and fused_act.built_with_cuda()
    if choice == "auto":
        return torch.device("cuda" if cuda_ok else "cpu")
    if choice == "cuda" and not cuda_ok:
        why = ("no CUDA device is visible" if not torch.cuda.is_available()
               else "fused_act was built without CUDA kernels")
        sys.exit(f"bench/run.py: --device cuda, but {why}")
    return torch.device(choice)


def all_activations():
    return (tuple(table.ACTIVATIONS) + tuple(getattr(table, "SOFTMAX", ()))
            + tuple(getattr(table, "MAXOUT", ())) + tuple(getattr(table, "GATED", ())))


def changes_shape(act) -> bool:
    """maxout-like ops: the output is smaller than the input (dim / pieces), the input
    layout is part of the setting (dim 1 of NCHW, or the last dim), no MLP row (its hidden
    layers keep their width) and no ONNX Runtime row."""
    return act in tuple(getattr(table, "MAXOUT", ()))


# NCHW inputs of maxout along dim 1: 64 channels of 32 x 32, batch n / 65536 (fewer
# channels for smaller n).
MAXOUT_CHW = (64, 32, 32)


def input_shape(act, setting, n: int, row: int = ROW):
    if changes_shape(act) and setting.id.endswith("_dim1"):
        c, h, w = MAXOUT_CHW
        if n % (c * h * w) == 0:
            return (n // (c * h * w), c, h, w)
        if n % (h * w * 8) == 0:
            return (1, n // (h * w), h, w)
    return shape_for(n, row)


def moved_bytes(act, kwargs, phase: str, n: int, es: int) -> int:
    """Bytes an ideal kernel reads and writes: per element of x for the elementwise ops;
    maxout reads n and writes n / pieces forward, and the reverse backward (plus the
    saved tensor, which an ideal kernel may make as small as it likes: not counted)."""
    if is_gated(act):  # reads both halves (2n), writes n; backward: g, x in, dx (2n) out
        return GATED_BYTES_PER_ELEMENT[phase] * n * es
    if changes_shape(act):
        per_phase = {"forward": n + n // kwargs["pieces"], "backward": n // kwargs["pieces"] + n}
        per_phase["fwd+bwd"] = per_phase["forward"] + per_phase["backward"]
        return per_phase[phase] * es
    return BYTES_PER_ELEMENT[phase] * n * es


def is_gated(act) -> bool:
    """Gated ops split their input in two halves along the last dim: sizes count outputs."""
    return bool(getattr(act, "gated", False))


def reduces_rows(act) -> bool:
    """softmax-like ops reduce along their rows, so the row length is a parameter."""
    return act in tuple(getattr(table, "SOFTMAX", ()))


def select_activations(ops_arg):
    acts = all_activations()
    if not ops_arg:
        return acts
    by_name = {a.name: a for a in acts}
    wanted = [s.strip() for s in ops_arg.split(",") if s.strip()]
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        sys.exit(f"bench/run.py: unknown op(s) {', '.join(unknown)}; "
                 f"available: {', '.join(by_name)}")
    return tuple(by_name[w] for w in wanted)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def environment(args, device, dtype, sizes) -> dict:
    env = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else cpu_model()),
        "cpu_model": cpu_model(),
        "dtype": args.dtype,
        "sizes": sizes,
        "row_width": ROW,
        "softmax_row_widths": list(args.rows),
        "threads": torch.get_num_threads(),
        "usable_cores": usable_cores(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch_version": torch.__version__,
        "fused_act_version": getattr(fused_act, "__version__", "unknown"),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "repeats": args.repeats,
        "min_time_s": args.min_time,
        "compile": bool(args.compile),
        "compile_setup": ({"dynamic": False, "per_shape": True,
                           "partitioner": args.compile_partitioner,
                           "recompiles_checked": True} if args.compile else None),
        "steady_alloc": STEADY_ALLOC,
        "onnxruntime": ortbench.describe() if args.ort else None,
        "quick": bool(args.quick),
        "bytes_per_element_moved": BYTES_PER_ELEMENT,
        # torch's own CPU kernels: ATen's (ATEN_CPU_CAPABILITY) and oneDNN's, which torch
        # uses for some ops (GELU among them) with the ISA oneDNN picks itself unless
        # ONEDNN_MAX_CPU_ISA limits it.
        "torch_cpu_capability": (torch.backends.cpu.get_cpu_capability()
                                 if hasattr(torch.backends, "cpu") else None),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }
    try:
        env["fused_act_backends"] = fused_act.backends()
    except Exception:  # an older build without backends(): not worth failing over
        pass
    if device.type == "cuda":
        env["cuda_version"] = torch.version.cuda
        props = torch.cuda.get_device_properties(device)
        env["gpu_memory_bytes"] = int(props.total_memory)
    return env


def shape_for(n: int, row: int = ROW):
    return (n // row, row) if n >= row and n % row == 0 else (n,)


def composite_for(act, kwargs, first_setting: bool):
    """The composition with this setting's arguments, or None when it cannot take them
    (a composition written for the default setting only is shown only for that one)."""
    try:
        params = inspect.signature(act.composite).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if kwargs and (takes_any or all(k in params for k in kwargs)):
        return lambda x: act.composite(x, **kwargs)
    if first_setting:
        return lambda x: act.composite(x)
    return None


def implementations(act, kwargs, first_setting, compiled):
    """Every implementation of one activation with one setting; ``compiled`` is the
    per-shape torch.compile of the reference with these arguments (or None)."""
    impls = {
        "fused_act": lambda x: act.fused(x, **kwargs),
        "torch": lambda x: act.reference(x, **kwargs),
    }
    comp = composite_for(act, kwargs, first_setting)
    if comp is not None:
        impls["composite"] = comp
    if compiled is not None:
        impls["compiled"] = compiled
    return impls


def check_agreement(impls, x, g, dtype):
    """Output and input gradient of each implementation against torch's.  This is also
    the first call of each (where torch.compile compiles; its duration is returned) and a
    failure drops that implementation with a warning."""
    rtol, atol = CHECK_TOL.get(dtype, (1e-2, 1e-2))
    y_ref = impls["torch"](x)
    (dx_ref,) = torch.autograd.grad(y_ref, x, g)
    agrees, dropped, first_call_s = {}, [], {}
    for name, fn in impls.items():
        try:
            t0 = time.perf_counter()
            y = fn(x)
            (dx,) = torch.autograd.grad(y, x, g)
            first_call_s[name] = time.perf_counter() - t0
        except Exception as err:  # e.g. torch.compile unavailable for this dtype/device
            warnings.warn(f"{name} failed and is left out: {type(err).__name__}: {err}")
            dropped.append(name)
            continue
        agrees[name] = bool(torch.allclose(y.float(), y_ref.float(), rtol, atol)
                            and torch.allclose(dx.float(), dx_ref.float(), rtol, atol))
    return agrees, dropped, first_call_s


def bench_size(act, setting, first_setting, n, device, dtype, args, clock, row=ROW,
               compile_options=None, ort_session=None):
    """All rows of one activation at one size (in rows of `row` elements)."""
    shape = input_shape(act, setting, n, row)
    # A gated op's input has both halves along the last dim: n output elements.
    x_shape = shape[:-1] + (2 * shape[-1],) if is_gated(act) else shape
    gen = torch.Generator(device=device).manual_seed(n)
    x = torch.randn(x_shape, generator=gen, device=device, dtype=dtype, requires_grad=True)
    x_plain = x.detach()
    kwargs = setting.kwargs(x)
    # The incoming gradient has the output's shape (smaller than x for maxout).
    out_shape = act.reference(x_plain, **kwargs).shape
    g = torch.randn(out_shape, generator=gen, device=device, dtype=dtype)
    compiled = None
    if compile_options is not None:
        # Compiled for this shape and these arguments alone (static shapes); its first
        # forward+backward, in check_agreement, is the compilation, timed apart.
        compiled = compiled_setup.compile_fn(lambda t: act.reference(t, **kwargs),
                                             compile_options)
    impls = implementations(act, kwargs, first_setting, compiled)
    agrees, dropped, first_call_s = check_agreement(impls, x, g, dtype)
    if "fused_act" in dropped:
        raise RuntimeError(f"fused_act.functional.{act.name} failed on {device}/{dtype}")
    for name in dropped:
        impls.pop(name)
    # Forward only: ONNX Runtime on the same input's memory (see ortbench.py).
    fwd_only = {}
    if ort_session is not None:
        try:
            fwd_only["onnxruntime"] = ort_session.bind(x_plain)
            y_ort = fwd_only["onnxruntime"].output()
            rtol, atol = CHECK_TOL.get(dtype, (1e-2, 1e-2))
            agrees["onnxruntime"] = bool(torch.allclose(
                y_ort.float(), act.reference(x_plain, **kwargs).float(), rtol, atol))
        except Exception as err:
            warnings.warn(f"onnxruntime failed and is left out: {type(err).__name__}: {err}")
            fwd_only.clear()

    def copy():
        return torch.empty_like(x_plain).copy_(x_plain)

    def fwd(fn):
        return lambda number: clock.time_loop(lambda: fn(x), number)

    def bwd(fn):
        # The graph is built once per measurement, outside the timed loop, and every
        # timed call runs the whole backward of it again (retain_graph): steady state,
        # like the forward loop, with nothing accumulated into x.grad.
        def measure(number):
            y = fn(x)
            return clock.time_loop(
                lambda: torch.autograd.grad(y, x, g, retain_graph=True), number)
        return measure

    def fwdbwd(fn):
        return lambda number: clock.time_loop(lambda: torch.autograd.grad(fn(x), x, g), number)

    copy_measure = lambda number: clock.time_loop(copy, number)  # noqa: E731
    builders = {"forward": fwd, "backward": bwd, "fwd+bwd": fwdbwd}
    saved = {name: saved_bytes(lambda: fn(x)) for name, fn in impls.items()}

    es = x.element_size()
    rows = []
    # No compilation may happen from here on: dynamo raises on a recompile, and its count
    # of compiled graphs is compared before and after.
    guard = (compiled_setup.guard(f"{act.name} n={n}") if compiled is not None
             else contextlib.nullcontext())
    with guard:
        for phase in PHASES:
            cands = [Candidate(name, builders[phase](fn)) for name, fn in impls.items()]
            if phase == "forward":
                cands += [Candidate(name, (lambda b: lambda number: clock.time_loop(b.run,
                                                                                    number))(b))
                          for name, b in fwd_only.items()]
            cands.append(Candidate("copy", copy_measure))
            faults = {}
            times = interleaved(cands, args.repeats, args.min_time, faults=faults)
            stats = {name: summarize(t) for name, t in times.items()}
            copy_bytes = 2 * x_plain.numel() * es  # read and write x
            copy_gbps = copy_bytes / stats["copy"]["median_s"] / 1e9
            moved = moved_bytes(act, kwargs, phase, n, es)
            fused_t = stats["fused_act"]["median_s"]
            number = {c.name: c.number for c in cands}
            for name, st in stats.items():
                is_copy = name == "copy"
                b = copy_bytes if is_copy else moved
                gbps = b / st["median_s"] / 1e9
                rows.append({
                    "op": act.name, "setting": setting.id, "row": row, "size": n,
                    "shape": "x".join(map(str, shape)), "phase": phase, "impl": name,
                    **st, "calls_per_sample": number[name], "bytes_moved": b,
                    "gbps": gbps, "copy_gbps": copy_gbps, "frac_copy": gbps / copy_gbps,
                    "fused_speedup": None if is_copy else st["median_s"] / fused_t,
                    "saved_bytes": saved.get(name),
                    "input_bytes": x_plain.numel() * es,
                    "agrees_with_torch": None if is_copy else agrees.get(name),
                    "first_call_s": first_call_s.get(name) if name == "compiled" else None,
                    "page_faults_per_call": faults.get(name),
                })
    return rows, first_call_s.get("compiled")


class _Progress:
    """tqdm when it is installed, else one line per step on stderr."""

    def __init__(self, total, desc):
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr,
                             dynamic_ncols=True)
        except ImportError:
            self._bar = None
        self.total, self.done, self.desc, self.t0 = total, 0, desc, time.time()

    def set(self, text):
        if self._bar is not None:
            self._bar.set_postfix_str(text)
        else:
            print(f"[{self.done}/{self.total} {time.time() - self.t0:5.0f}s] {text}",
                  file=sys.stderr, flush=True)

    def update(self):
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)

    def write(self, text):
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    dtype = DTYPES[args.dtype]
    if device.type == "cpu":
        torch.set_num_threads(max(1, args.threads or usable_cores()))
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES[device.type])
    acts = select_activations(args.ops)
    jobs = [(a, s, i == 0, row) for a in acts
            for i, s in enumerate(a.settings if args.all_settings or changes_shape(a)
                                 else a.settings[:1])
            for row in (args.rows if reduces_rows(a) else [ROW])]
    env = environment(args, device, dtype, sizes)
    clock = Clock(device)

    compile_options = compiled_setup.setup(args.compile_partitioner) if args.compile else None
    use_ort = args.ort and ortbench.usable(device, dtype)
    print(report.header(env), flush=True)
    if args.ort and not use_ort:
        print(f"note: ONNX Runtime left out: {ortbench.why_not(device, dtype)}", flush=True)
    # The MLP builds a model of torch's module between Linear layers of fixed widths: not
    # for the ops that change the width (gated ops halve their input, maxout divides it)
    # nor for those torch has no module of (relu_squared: a composition there).
    mlp_acts = [a for a in acts if not is_gated(a) and not changes_shape(a)
                and getattr(a, "torch_module", None) is not None]
    total = (len(jobs) * len(sizes) + (len(mlp_acts) if args.mlp else 0)
             + (len(args.models) if args.mlp else 0))
    progress = _Progress(total, "bench")
    rows, compile_s, mlp_rows, model_rows, failures = [], {}, [], [], []
    t_start = time.time()
    try:
        for act, setting, first, row in jobs:
            tag = f"{act.name}[{setting.id}]" + (f"[row={row}]" if reduces_rows(act) else "")
            ort_session = None
            if use_ort and not changes_shape(act):
                try:  # exported once per op and setting, with dynamic dimensions
                    ort_session = ortbench.Session(act, setting, torch.get_num_threads())
                except Exception as err:
                    progress.write(f"note: ONNX Runtime left out for {tag}: "
                                   f"{type(err).__name__}: {err}")
            for n in sizes:
                progress.set(f"{tag} n=2^{n.bit_length() - 1}"
                             if n & (n - 1) == 0 else f"{tag} n={n}")
                try:
                    new, first_compiled_s = bench_size(
                        act, setting, first, n, device, dtype, args, clock, row,
                        compile_options=compile_options, ort_session=ort_session)
                except Exception as err:  # report it, finish the other rows, exit non-zero
                    failures.append(f"{tag} n={n}: "
                                    f"{type(err).__name__}: {err}")
                    progress.write("FAILED " + failures[-1])
                    progress.update()
                    continue
                rows += new
                if first_compiled_s is not None:
                    compile_s.setdefault(tag, {})[n] = round(first_compiled_s, 2)
                progress.update()
        if args.mlp:
            for act in mlp_acts:
                progress.set(f"MLP {act.name}")
                try:
                    mlp_rows.append(run_mlp(act, device, dtype, args.mlp_steps,
                                            repeats=max(3, args.repeats // 2 + 1),
                                            warmup=1 if args.quick else 2))
                except Exception as err:
                    failures.append(f"MLP {act.name}: {type(err).__name__}: {err}")
                    progress.write("FAILED " + failures[-1])
                progress.update()
            for name in args.models:
                progress.set(f"model {name}")
                try:
                    model_rows.append(models.run_model(
                        name, device, dtype, args.mlp_steps,
                        repeats=max(3, args.repeats // 2 + 1), warmup=1 if args.quick else 2,
                        compile_options=compile_options))
                except Exception as err:
                    failures.append(f"model {name}: {type(err).__name__}: {err}")
                    progress.write("FAILED " + failures[-1])
                progress.update()
    finally:
        progress.close()
    env["wall_time_s"] = round(time.time() - t_start, 1)
    env["compile_time_s"] = compile_s  # first forward+backward call, per op and size
    env["failures"] = failures

    print(report.tables(rows, mlp_rows, env, model_rows))
    paths = report.write_files(args.out, env, rows, mlp_rows, plot=args.plot,
                               model_rows=model_rows)
    print("\nWritten:")
    for p in paths:
        print(f"  {os.path.relpath(p)}")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
