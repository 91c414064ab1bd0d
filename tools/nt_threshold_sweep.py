"""Non-temporal against cached output stores, around the default threshold.

For relu forward (2 bytes of traffic per byte of output) and backward (3) at sizes whose
traffic spans the default threshold, the same fused_act call is timed with non-temporal
stores forced (threshold 0) and forbidden (threshold 2^62), paired and interleaved
(bench/timing.py); printed: the median time of each and the paired ratio cached / NT
(above 1: non-temporal stores are faster), with the default rule's choice.

    python tools/nt_threshold_sweep.py --threads 1 --clock thread
    OMP_WAIT_POLICY=passive python tools/nt_threshold_sweep.py --threads 2 --clock process
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--traffic-mib", default="2,4,6,8,12,16,24,32,48,64")
    p.add_argument("--phases", default="forward,backward")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--min-time", type=float, default=0.02)
    p.add_argument("--clock", choices=("wall", "thread", "process"), default="wall")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    clock = Clock(torch.device("cpu"))
    if args.clock != "wall":
        now = time.thread_time if args.clock == "thread" else time.process_time

        def time_loop(fn, number):
            t0 = now()
            for _ in range(number):
                fn()
            return (now() - t0) / number
        clock.time_loop = time_loop
    fused_act.set_nontemporal_threshold(None)
    default = fused_act.nontemporal_threshold()
    print(f"threads {args.threads}, kernels {fused_act.cpu_capability()}, default threshold "
          f"{default / 2**20:.1f} MiB of traffic, clock {args.clock}")
    print(f"{'phase':8} {'traffic':>8} {'cached us':>10} {'NT us':>9} {'cached/NT':>9} "
          f"{'p20-p80':>11}  default")
    F = fused_act.functional
    for phase in args.phases.split(","):
        per_elem = 8 if phase == "forward" else 12
        for mib in [float(m) for m in args.traffic_mib.split(",")]:
            n = int(mib * 2**20 / per_elem) // 1024 * 1024
            x = torch.randn(n // 1024, 1024, requires_grad=True)
            g = torch.randn(n // 1024, 1024)

            def make(threshold):
                def measure(number):
                    fused_act.set_nontemporal_threshold(threshold)
                    try:
                        if phase == "forward":
                            return clock.time_loop(lambda: F.relu(x), number)
                        y = F.relu(x)
                        return clock.time_loop(
                            lambda: torch.autograd.grad(y, x, g, retain_graph=True), number)
                    finally:
                        fused_act.set_nontemporal_threshold(None)
                return measure
            t = interleaved([Candidate("cached", make(2**62)), Candidate("nt", make(0))],
                            args.repeats, args.min_time, warmup=2)
            r = np.asarray(t["cached"]) / np.asarray(t["nt"])
            choice = "NT" if per_elem * n > default else "cached"
            print(f"{phase:8} {mib:6.1f}Mi {np.median(t['cached']) * 1e6:10.1f} "
                  f"{np.median(t['nt']) * 1e6:9.1f} {np.median(r):9.2f} "
                  f"{np.percentile(r, 20):5.2f}-{np.percentile(r, 80):5.2f}  {choice}", flush=True)


if __name__ == "__main__":
    main()
