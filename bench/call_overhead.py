#!/usr/bin/env python
"""Per-call cost of an eager call: fused_act against torch on tiny tensors, where the
kernel's work is negligible and what is measured is dispatch, argument handling,
autograd bookkeeping and allocation.

    python bench/call_overhead.py [--elements 16] [--repeats 15] [--device cpu]

For each activation of fused_act.table: the forward of a tensor that does not require
grad, the forward of one that does (the autograd node is created), forward + backward,
and the in-place call where there is one.  Median of interleaved measurements (see
timing.py), in microseconds per call, and the ratio time(torch) / time(fused_act).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
try:
    import fused_act  # noqa: E402
except ImportError:
    sys.path.insert(0, os.path.dirname(HERE))
    import fused_act  # noqa: E402,F401
import torch  # noqa: E402
from fused_act import table  # noqa: E402

from timing import Candidate, Clock, interleaved, summarize  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--elements", type=int, default=16)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--min-time", type=float, default=0.01)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = Clock(device)
    print(f"per-call cost, {args.elements} float32 elements on {device}, "
          f"{args.threads} thread(s), torch {torch.__version__}; microseconds, median of "
          f"{args.repeats}; ratio = torch / fused_act")
    print(f"{'op':<12} {'phase':<14} {'fused_act':>10} {'torch':>10} {'ratio':>7}")
    rows = []
    for act in table.ALL:
        setting = act.settings[0]
        x = torch.randn(4, args.elements // 4, device=device)
        xg = x.clone().requires_grad_()
        g = torch.randn_like(x)
        kw = setting.kwargs(x)
        phases = {
            "forward": lambda f: (lambda: f(x, **kw)),
            "forward(grad)": lambda f: (lambda: f(xg, **kw)),
            "fwd+bwd": lambda f: (lambda: torch.autograd.grad(f(xg, **kw), xg, g)),
        }
        if act.inplace:
            buf = x.clone()
            phases["in place"] = lambda f: (lambda: f(buf, inplace=True, **kw))
        for phase, make in phases.items():
            cands = [Candidate(name, (lambda fn: lambda n: clock.time_loop(fn, n))(make(f)))
                     for name, f in (("fused_act", act.fused), ("torch", act.reference))]
            times = interleaved(cands, args.repeats, args.min_time)
            med = {k: summarize(v)["median_s"] * 1e6 for k, v in times.items()}
            ratio = med["torch"] / med["fused_act"]
            rows.append((act.name, phase, med["fused_act"], med["torch"], ratio))
            print(f"{act.name:<12} {phase:<14} {med['fused_act']:>10.2f} {med['torch']:>10.2f} "
                  f"{ratio:>6.2f}x", flush=True)
    return rows


if __name__ == "__main__":
    main()
