"""Every activation of fused_act's table and its autograd derivative, fused_act against
torch, with the difference between the two.

    python examples/activation_gallery.py [--quick] [--out DIR]

The activations come from ``fused_act.table.ALL``, so one added to the table appears here
without a change.  Each is drawn in every setting the table lists (slopes, alphas, betas,
PReLU weights), in float32 on x in [-6, 6]:

* left: f(x), torch solid, fused_act dashed;
* middle: df/dx from autograd (backward of f summed), torch solid, fused_act dashed;
* right: fused_act - torch for both, in units of eps * max(1, |torch's value|), with eps
  = 2^-23 the float32 machine epsilon: about ULPs for values above 1, multiples of eps
  for smaller ones (a derivative near 0 such as 1 - tanh(x)^2 at x = 6 is computed from
  an output near 1 and cannot be more accurate than eps in absolute terms).

Elementwise activations are evaluated on x directly.  The others (softmax, log_softmax:
reductions along a row) are evaluated on rows (x, 0) and their first column is drawn,
so softmax appears as softmax((x, 0))[0] = sigmoid(x).
"""
import sys
from typing import Dict, List

import numpy as np
import torch

import common
from fused_act import table

# Activations whose forward and backward select or scale the input (no transcendental
# function): fused_act must give torch's bits exactly.
EXACT = ("relu", "relu6", "leaky_relu", "prelu")
# Everything else: torch.testing.assert_close's float32 default (rtol 1.3e-6, atol 1e-5).
RTOL, ATOL = 1.3e-6, 1e-5


def _evaluate(act, setting, fn, x: torch.Tensor):
    """f(x) and df/dx of one implementation (fn is act.fused or act.reference)."""
    elementwise = act in table.ACTIVATIONS
    if elementwise:
        inp = x.detach().clone().requires_grad_(True)
        y = fn(inp, **setting.kwargs(inp))
        col = y
    else:  # a row operation: rows (x, 0), first column
        rows = torch.stack([x, torch.zeros_like(x)], dim=1).requires_grad_(True)
        y = fn(rows, **setting.kwargs(rows))
        col = y[:, 0]
        inp = rows
    if col.shape != x.shape:
        raise RuntimeError(f"activation_gallery: {act.name} ({setting.id}) gave shape "
                           f"{tuple(col.shape)} for {tuple(x.shape)} points")
    (grad,) = torch.autograd.grad(col.sum(), inp)
    if not elementwise:
        grad = grad[:, 0]
    return col.detach(), grad.detach()


EPS = float(np.finfo(np.float32).eps)


def _scaled(diff: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """diff in units of eps * max(1, |ref|)."""
    return diff / (EPS * np.maximum(1.0, np.abs(ref.astype(np.float64))))


def compare(n_points: int) -> List[Dict]:
    x = torch.linspace(-6.0, 6.0, n_points, dtype=torch.float32)
    rows = []
    for act in table.ALL:
        for setting in act.settings:
            f_t, d_t = _evaluate(act, setting, act.reference, x)
            f_f, d_f = _evaluate(act, setting, act.fused, x)
            rows.append(dict(act=act, setting=setting.id, x=x.numpy(),
                             f_torch=f_t.numpy(), f_fused=f_f.numpy(),
                             d_torch=d_t.numpy(), d_fused=d_f.numpy(),
                             f_equal=bool(torch.equal(f_t, f_f)),
                             d_equal=bool(torch.equal(d_t, d_f)),
                             f_max_abs=common.max_abs_diff(f_t, f_f),
                             d_max_abs=common.max_abs_diff(d_t, d_f),
                             f_close=bool(torch.allclose(f_f, f_t, rtol=RTOL, atol=ATOL)),
                             d_close=bool(torch.allclose(d_f, d_t, rtol=RTOL, atol=ATOL))))
            r = rows[-1]
            r["f_scaled"] = _scaled(r["f_fused"].astype(np.float64) - r["f_torch"], r["f_torch"])
            r["d_scaled"] = _scaled(r["d_fused"].astype(np.float64) - r["d_torch"], r["d_torch"])
    return rows


def plot(rows: List[Dict], out: str) -> str:
    plt = common.plt
    acts = list(dict.fromkeys(r["act"].name for r in rows))
    fig, axes = plt.subplots(len(acts), 3, figsize=(13, 2.3 * len(acts)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(acts):
        mine = [r for r in rows if r["act"].name == name]
        ax_f, ax_d, ax_diff = axes[i]
        for j, r in enumerate(mine):
            c = colors[j % len(colors)]
            for impl, key in (("torch.nn", "torch"), ("fused_act", "fused")):
                label = f"{r['setting']}, {impl}" if j == 0 or impl == "torch.nn" else None
                ax_f.plot(r["x"], r[f"f_{key}"], color=c, label=label if impl == "torch.nn"
                          else None, **common.STYLE[impl])
                ax_d.plot(r["x"], r[f"d_{key}"], color=c, **common.STYLE[impl])
            ax_diff.plot(r["x"], r["f_scaled"], "o", color=c, markersize=2.5, alpha=0.6,
                         label=f"{r['setting']}: f")
            ax_diff.plot(r["x"], r["d_scaled"], "x", color=c, markersize=2.5, alpha=0.6,
                         label=f"{r['setting']}: f'")
        elementwise = mine[0]["act"] in table.ACTIVATIONS
        title = name if elementwise else f"{name}((x, 0))[0]"
        ax_f.set_title(f"{title}: torch solid, fused_act dashed", fontsize=9)
        ax_d.set_title(f"d/dx {title} (autograd)", fontsize=9)
        worst_f = max(np.abs(r["f_scaled"]).max() for r in mine)
        worst_d = max(np.abs(r["d_scaled"]).max() for r in mine)
        ax_diff.set_title(f"(fused_act - torch) / (eps max(1, |torch|)): max {worst_f:.1f} (f), "
                          f"{worst_d:.1f} (f')", fontsize=9)
        ax_f.legend(fontsize=7, loc="upper left")
        ax_diff.legend(fontsize=6, loc="upper left", ncol=2)
        for ax in axes[i]:
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("x")
    fig.suptitle("Every activation of fused_act.table.ALL, float32: torch against fused_act",
                 y=1.0)
    fig.tight_layout()
    return common.save(fig, out, "activation_gallery.png")


def summary(rows: List[Dict], n_points: int, out: str) -> str:
    lines = [f"activation_gallery: {n_points} points in [-6, 6], float32; "
             + common.environment_line(),
             f"exact (bit for bit) expected for {', '.join(EXACT)}; others within "
             f"rtol {RTOL}, atol {ATOL}", "",
             f"{'':<12} {'':<12} {'--- f(x) ---':>27} {'--- df/dx ---':>27}",
             f"{'activation':<12} {'setting':<12} {'equal':>8} {'max|diff|':>9} {'max/eps':>8}"
             f" {'equal':>8} {'max|diff|':>9} {'max/eps':>8}"]
    for r in rows:
        lines.append(f"{r['act'].name:<12} {r['setting']:<12} {str(r['f_equal']):>8} "
                     f"{r['f_max_abs']:>9.2e} {np.abs(r['f_scaled']).max():>8.1f} "
                     f"{str(r['d_equal']):>8} {r['d_max_abs']:>9.2e} "
                     f"{np.abs(r['d_scaled']).max():>8.1f}")
    return common.write_summary(out, "activation_gallery.txt", lines)


def main(argv=None) -> Dict:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    out = common.setup(args)
    n_points = 201 if args.quick else 1201
    rows = compare(n_points)
    png = plot(rows, out)
    txt = summary(rows, n_points, out)
    return {"rows": rows, "files": [png, txt], "exact": EXACT, "rtol": RTOL, "atol": ATOL}


if __name__ == "__main__":
    main(sys.argv[1:])
