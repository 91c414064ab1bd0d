"""Per-call time of fused_act's CPU kernels against torch's own, paired and interleaved.

For each (op, phase, size, threads) both implementations are timed once per round, in a
shuffled order (bench/timing.py), and the ratio torch / fused_act is taken per round:
the median and the 20th-80th percentile of those paired ratios are printed (above 1: fused_act
faster), with the median time per call of each.

    python tools/cpu_percall.py                       # the default rows
    python tools/cpu_percall.py --ops tanh --phases forward --sizes 16,20 --threads 1,2
    FUSED_ACT_CPU_CAPABILITY=baseline python tools/cpu_percall.py ...

On a machine shared with other work, wall-clock times mostly measure the other work:
--clock thread times the CPU time of the calling thread instead (meaningful with one
thread: the kernels then run on it), --clock process that of the whole process (with
OMP_WAIT_POLICY=passive, so that idle OpenMP workers do not spin).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import fused_act  # noqa: E402
from timing import Candidate, Clock, interleaved  # noqa: E402

F = fused_act.functional
OPS = {
    "relu": (F.relu, torch.relu),
    "sigmoid": (F.sigmoid, torch.sigmoid),
    "tanh": (F.tanh, torch.tanh),
    "silu": (F.silu, torch.nn.functional.silu),
    "softmax": (lambda x: F.softmax(x, -1), lambda x: torch.softmax(x, -1)),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ops", default="relu,sigmoid,tanh,softmax")
    p.add_argument("--phases", default="forward,backward")
    p.add_argument("--sizes", default="10,14,16,20", help="log2 of the element counts")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--min-time", type=float, default=0.01)
    p.add_argument("--row", type=int, default=1024, help="softmax row length")
    p.add_argument("--clock", choices=("wall", "thread", "process"), default="wall")
    args = p.parse_args()
    clock = Clock(torch.device("cpu"))
    if args.clock != "wall":
        now = time.thread_time if args.clock == "thread" else time.process_time

        def time_loop(fn, number):
            t0 = now()
            for _ in range(number):
                fn()
            return (now() - t0) / number
        clock.time_loop = time_loop
    print(f"torch {torch.__version__}, fused_act kernels {fused_act.cpu_capability()}, "
          f"nt threshold {fused_act.nontemporal_threshold()} B, clock {args.clock}")
    print(f"{'op':8} {'phase':8} {'n':>6} {'thr':>3} {'torch us':>9} {'fused us':>9} "
          f"{'ratio':>6} {'p20-p80':>12}")
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for op in args.ops.split(","):
            mine, ref = OPS[op]
            for lg in [int(s) for s in args.sizes.split(",")]:
                n = 2 ** lg
                shape = (max(1, n // args.row), min(n, args.row))
                gen = torch.Generator().manual_seed(lg)
                x = torch.randn(shape, generator=gen, requires_grad=True)
                g = torch.randn(shape, generator=gen)
                for phase in args.phases.split(","):
                    def make(fn):
                        if phase == "forward":
                            return lambda number: clock.time_loop(lambda: fn(x), number)

                        def measure(number):
                            y = fn(x)
                            return clock.time_loop(
                                lambda: torch.autograd.grad(y, x, g, retain_graph=True), number)
                        return measure
                    cands = [Candidate("torch", make(ref)), Candidate("fused", make(mine))]
                    t = interleaved(cands, args.repeats, args.min_time, warmup=3)
                    r = np.asarray(t["torch"]) / np.asarray(t["fused"])
                    print(f"{op:8} {phase:8} 2^{lg:<4} {threads:>3} "
                          f"{np.median(t['torch']) * 1e6:9.2f} {np.median(t['fused']) * 1e6:9.2f} "
                          f"{np.median(r):6.2f} {np.percentile(r, 20):5.2f}-{np.percentile(r, 80):5.2f}",
                          flush=True)


if __name__ == "__main__":
    main()
