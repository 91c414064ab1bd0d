"""Pieces every example shares: the command line, the output folder, figure saving and
the torch.nn / fused_act pair of one model (same initial weights)."""
import argparse
import copy
import os
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")  # files only: the examples run on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import fused_act  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "figures")
DPI = 80  # the committed pictures stay small
IMPLS = ("torch.nn", "fused_act")
STYLE = {"torch.nn": dict(linestyle="-", linewidth=2.2, alpha=0.55),
         "fused_act": dict(linestyle="--", linewidth=1.2)}


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="a small, fast run (the one the test suite makes)")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help="folder for the PNGs and the text summary (default: examples/figures)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's choice)")
    return p


def setup(args) -> str:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    return args.out


def model_pair(model: nn.Module) -> Dict[str, nn.Module]:
    """{'torch.nn': model, 'fused_act': convert(deep copy)}: the same weights, the torch.nn
    activations swapped for fused ones.  Fails if convert() replaced nothing, so that a
    comparison of a model with itself never passes for a comparison."""
    fused = fused_act.convert(copy.deepcopy(model))
    swapped = [type(m).__name__ for m in fused.modules()
               if type(m).__module__.startswith("fused_act")]
    if not swapped:
        raise RuntimeError(f"fused_act.convert() found no torch.nn activation in {model}")
    return {"torch.nn": model, "fused_act": fused}


def save(fig, out: str, name: str) -> str:
    path = os.path.join(out, name)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def write_summary(out: str, name: str, lines: List[str]) -> str:
    path = os.path.join(out, name)
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    print("\n".join(lines))
    return path


def environment_line() -> str:
    return (f"torch {torch.__version__}, fused_act {fused_act.__version__} "
            f"(CPU kernels: {fused_act.cpu_capability()}), {torch.get_num_threads()} threads")


def max_abs_diff(a, b) -> float:
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max()) if a.numel() else 0.0


def fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3g}"
