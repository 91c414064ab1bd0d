"""Per-call cost of the ways a fused_act operator can be reached, on a small CPU tensor
(where the call, not the kernel, is the time): what adopting the LibTorch stable ABI
would cost (README, "Build switches", stable ABI).

    python tools/call_overhead.py [--numel 1024] [--rounds 15] [--calls 2000]

  fast entry   fused_act.functional.relu: fused_act._C's entry point, C++ autograd
  torch.ops    torch.ops.fused_act.relu: torch.ops' argument parsing, C++ autograd
  py autograd  fused_act.autograd.ReluFunction.apply: a Python torch.autograd.Function
               around the same operator, which is where a stable-ABI build would have
               to put its autograd (the stable ABI has no autograd API, and
               py_limited_api rules out the fast entry point)

Interleaved rounds; the fastest round's time per call is printed, in microseconds (on a
busy machine the fastest round is the one least disturbed).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fused_act  # noqa: E402
import fused_act.functional as FA  # noqa: E402
from fused_act.autograd import ReluFunction  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--numel", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    x0 = torch.randn(args.numel)
    xg = x0.clone().requires_grad_()
    g = torch.ones(args.numel)
    op = torch.ops.fused_act.relu

    def fwd(f, x):
        return lambda: f(x)

    def fwd_bwd(f):
        return lambda: f(xg).backward(g)

    ways = {
        "fast entry": lambda x: FA.relu(x),
        "torch.ops": lambda x: op(x, 0.0),
        "py autograd": lambda x: ReluFunction.apply(x, 0.0, False),
    }
    cases = {}
    for name, f in ways.items():
        cases[(name, "forward, no grad")] = fwd(f, x0)
        cases[(name, "forward, requires_grad")] = fwd(f, xg)
        cases[(name, "forward+backward")] = fwd_bwd(f)
    times = {k: [] for k in cases}
    for fn in cases.values():  # warm up
        for _ in range(50):
            fn()
    for _ in range(args.rounds):
        for key, fn in cases.items():
            t0 = time.perf_counter()
            for _ in range(args.calls):
                fn()
            times[key].append((time.perf_counter() - t0) / args.calls * 1e6)
    print(f"torch {torch.__version__}, fused_act {fused_act.__version__}, {args.numel} float32 "
          f"elements, 1 thread, fastest of {args.rounds} rounds of {args.calls} calls (us/call)")
    kinds = ["forward, no grad", "forward, requires_grad", "forward+backward"]
    print(f"{'':12}" + "".join(f"{k:>26}" for k in kinds))
    for name in ways:
        print(f"{name:12}" + "".join(
            f"{min(times[(name, k)]):>26.2f}" for k in kinds))


if __name__ == "__main__":
    main()
