"""torch.compile as a competitor: how bench/run.py and the end-to-end models set it up.

* compiled per shape (``dynamic=False``), one fresh compilation per op, setting and size,
  warmed up by the agreement check (first forward and backward), never inside a timing;
* zero recompiles while measuring: ``guard()`` turns on dynamo's ``error_on_recompile``
  and checks dynamo's counters of compiled graphs before and after;
* the partitioner that splits the joint forward+backward graph: ``eager-saves``
  (AOTAutograd's ``default_partition``: the compiled forward keeps for backward what the
  eager formula keeps) by default, or ``min-cut`` (torch.compile's stock
  ``min_cut_rematerialization_partition``).  For relu, relu6, leaky_relu and prelu the
  min-cut partitioner makes the forward write a bool mask (1 byte per element, smaller than
  the output) for the backward, and on CPU Inductor writes that mask through a generic,
  element-by-element conversion of its vector mask to bool: the forward then costs tens of
  ns per element instead of well under one.  ``eager-saves`` keeps the output instead.
"""
import contextlib
import time

import torch

PARTITIONERS = ("eager-saves", "min-cut")

try:  # Inductor's documented hook for a custom partitioner (torch >= 2.6)
    from torch._inductor.custom_graph_pass import CustomPartitionerFn as _PartitionerBase
except ImportError:  # pragma: no cover - older torch: only the stock partitioner
    _PartitionerBase = None


if _PartitionerBase is not None:
    class EagerSavesPartitioner(_PartitionerBase):
        """AOTAutograd's default partition: saves the forward's tensors the backward uses."""

        def __call__(self, gm, joint_inputs, **kwargs):
            from torch._functorch.partitioners import default_partition
            import inspect
            accepted = inspect.signature(default_partition).parameters
            return default_partition(gm, joint_inputs,
                                     **{k: v for k, v in kwargs.items() if k in accepted})

        def uuid(self):
            return "fused_act-bench-default-partition-1"


def setup(partitioner: str = "eager-saves") -> dict:
    """Global settings for every torch.compile of the bench; returns the compile options."""
    if partitioner not in PARTITIONERS:
        raise ValueError(f"unknown partitioner {partitioner!r}; choose from {PARTITIONERS}")
    import torch._functorch.config as functorch_config
    # The backward phase is timed on a retained graph, which a compiled backward that
    # donates its saved buffers refuses to run twice.
    functorch_config.donated_buffer = False
    if partitioner == "eager-saves":
        if _PartitionerBase is None:
            raise RuntimeError("this torch has no torch._inductor.config.custom_partitioner_fn;"
                               " use --compile-partitioner min-cut")
        return {"custom_partitioner_fn": EagerSavesPartitioner()}
    return {}


def compile_fn(fn, options: dict):
    """A fresh per-shape compilation of ``fn`` (the caches of earlier ones are dropped, so
    no recompile limit is reached across ops and sizes)."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False, options=dict(options) or None)


def graphs_compiled() -> int:
    """Dynamo's count of graphs compiled so far in this process."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


@contextlib.contextmanager
def guard(what: str):
    """Fails if dynamo compiles anything inside the block (a recompile during timing)."""
    import torch._dynamo.config as dynamo_config
    before = graphs_compiled()
    old = dynamo_config.error_on_recompile
    dynamo_config.error_on_recompile = True
    try:
        yield
    finally:
        dynamo_config.error_on_recompile = old
    after = graphs_compiled()
    if after != before:
        raise RuntimeError(f"{what}: torch.compile compiled {after - before} new graph(s) "
                           "while being measured")


def timed_first_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
