"""Timing and memory measurement for bench/run.py.

Rules kept here so that every figure is comparable:
  * all implementations are measured in one process, after warm-up, interleaved
    (every implementation once per round, in an order shuffled afresh each round, so that
    none always runs right after the same other one: a predecessor that has just read the
    same input leaves it in cache, which would favour whoever follows it);
  * on CUDA the clock is a pair of CUDA events on the current stream, read after a
    synchronize; on CPU it is time.perf_counter around a region that has nothing pending;
  * a measurement runs the timed call ``number`` times (``number`` calibrated so that one
    measurement lasts at least ``min_time`` seconds) and yields the time per call; the
    reported figures are the median and the spread over ``repeats`` measurements.
"""
import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import torch


class Clock:
    """Wall clock on CPU, CUDA events on CUDA."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def time_loop(self, fn: Callable[[], object], number: int) -> float:
        """Seconds per call of ``fn()``, called ``number`` times back to back."""
        self.sync()
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(number):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / number
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number


@dataclass
class Candidate:
    """One implementation in one phase: ``measure(number)`` -> seconds per call."""

    name: str
    measure: Callable[[int], float]
    number: int = 1

    def calibrate(self, min_time: float, warmup: int, max_number: int = 100_000):
        once = None
        for _ in range(max(1, warmup)):
            once = self.measure(1)
        if once < 4 * min_time:  # not obviously long enough: time one warm call
            once = self.measure(1)
        once = max(once, 1e-7)
        self.number = int(min(max_number, max(1, math.ceil(min_time / once))))


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where getrusage is missing)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved(candidates: List[Candidate], repeats: int, min_time: float,
                warmup: int = 1, faults: Optional[Dict[str, float]] = None
                ) -> Dict[str, List[float]]:
    """Warms up and calibrates every candidate, then measures each once per round for
    ``repeats`` rounds, in an order shuffled every round (seeded, so runs are repeatable):
    no candidate always goes first after a pause or always follows the same candidate,
    whose reads of the shared input would leave it in cache for it."""
    for cand in candidates:
        cand.calibrate(min_time, warmup)
    times: Dict[str, List[float]] = {c.name: [] for c in candidates}
    rng = random.Random(len(candidates) * 1000 + repeats)
    order = list(candidates)
    faulted = {c.name: 0 for c in candidates}
    for _ in range(repeats):
        rng.shuffle(order)
        for cand in order:
            before = minor_faults()
            times[cand.name].append(cand.measure(cand.number))
            faulted[cand.name] += minor_faults() - before
    if faults is not None:  # minor page faults per call (fresh pages of new outputs)
        for cand in candidates:
            faults[cand.name] = faulted[cand.name] / (repeats * cand.number)
    return times


def summarize(samples: List[float]) -> Dict[str, float]:
    """Median, min, max and the 20th/80th percentiles of per-call times (seconds)."""
    a = np.asarray(samples, dtype=np.float64)
    return {
        "median_s": float(np.median(a)),
        "min_s": float(a.min()),
        "max_s": float(a.max()),
        "p20_s": float(np.percentile(a, 20)),
        "p80_s": float(np.percentile(a, 80)),
        "n_samples": int(a.size),
    }


def saved_bytes(forward: Callable[[], object], exclude: Optional[set] = None) -> int:
    """Bytes kept alive for backward by one forward: the sizes of the distinct storages
    of the tensors autograd saves (seen through saved_tensors_hooks), optionally leaving
    out storages whose data pointers are in ``exclude`` (e.g. a model's parameters)."""
    storages: Dict[int, int] = {}
    exclude = exclude or set()

    def pack(t):
        s = t.untyped_storage()
        ptr = s.data_ptr()
        if ptr not in exclude:
            storages[ptr] = max(storages.get(ptr, 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return int(sum(storages.values()))
