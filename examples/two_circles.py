"""Two circles: a 2-5-5-5-5-1 classifier trained with sigmoid, tanh, ReLU, ReLU6 and
LeakyReLU hidden activations, torch.nn against the same model after fused_act.convert().

    python examples/two_circles.py [--quick] [--out DIR]

Data: sklearn.datasets.make_circles(1000 points, noise 0.1, factor 0.5), 800 for training
and 200 held out.  Adam, learning rate 1e-4, mini-batches of 32, binary cross-entropy on
the logit.  Recorded after each epoch: the mean training loss over the epoch's batches,
the held-out accuracy and the mean absolute gradient of each layer's weights for the loss
over the whole training set: with sigmoid the gradient of the first layers is orders of
magnitude below the last layer's, the vanishing-gradient picture.

Both models start from the same weights and see the batches in the same order; the only
difference is the activation modules.
"""
import sys
import time
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import common

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "relu6": nn.ReLU6,
               "leaky_relu": nn.LeakyReLU}
EXACT = ("relu", "relu6", "leaky_relu")  # the same bits, every step
# sigmoid and tanh differ from torch's in the last bits (a few float32 ULPs); over the
# run these differences must stay far below anything visible on the curves:
LOSS_ATOL = 1e-4       # mean loss per epoch
GRAD_RTOL = 1e-3       # mean |grad| per layer and epoch, relative to its value
ACC_ATOL = 1 / 200     # held-out accuracy: at most one of the 200 points may flip
WIDTHS = (2, 5, 5, 5, 5, 1)
LR = 1e-4
BATCH = 32
DATA_SEED, INIT_SEED, ORDER_SEED = 0, 0, 0


def make_data():
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=1000, noise=0.1, factor=0.5, random_state=DATA_SEED)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32).unsqueeze(1)
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(DATA_SEED))
    train, test = perm[:800], perm[800:]
    return x[train], y[train], x[test], y[test]


def build(act_cls) -> nn.Sequential:
    layers = []
    for i in range(len(WIDTHS) - 1):
        layers.append(nn.Linear(WIDTHS[i], WIDTHS[i + 1]))
        if i < len(WIDTHS) - 2:
            layers.append(act_cls())
    return nn.Sequential(*layers)


def full_gradient(model: nn.Sequential, linears, x, y) -> np.ndarray:
    """Mean |dL/dW| of each layer for the loss over the whole training set."""
    model.zero_grad(set_to_none=True)
    F.binary_cross_entropy_with_logits(model(x), y).backward()
    g = torch.stack([lin.weight.grad.abs().mean() for lin in linears]).double().numpy()
    model.zero_grad(set_to_none=True)
    return g


def train(model: nn.Sequential, data, epochs: int) -> Dict[str, np.ndarray]:
    x_train, y_train, x_test, y_test = data
    linears = [m for m in model if isinstance(m, nn.Linear)]
    opt = torch.optim.Adam(model.parameters(), lr=LR, foreach=True)  # fewer calls per step
    order = torch.Generator().manual_seed(ORDER_SEED)
    loss_curve, acc_curve, grads = [], [], []
    for _ in range(epochs):
        perm = torch.randperm(len(x_train), generator=order)
        losses = []
        for start in range(0, len(x_train), BATCH):
            idx = perm[start:start + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        grads.append(full_gradient(model, linears, x_train, y_train))
        with torch.no_grad():
            acc = ((model(x_test) > 0).float() == y_test).float().mean().item()
        loss_curve.append(torch.stack(losses).mean().item())
        acc_curve.append(acc)
    return {"loss": np.array(loss_curve), "accuracy": np.array(acc_curve),
            "grad": np.array(grads)}  # grad: epochs x layers


def run(epochs: int) -> Dict[str, Dict]:
    data = make_data()
    results = {}
    for name, act_cls in ACTIVATIONS.items():
        torch.manual_seed(INIT_SEED)  # every activation starts from the same weights
        models = common.model_pair(build(act_cls))
        results[name] = {}
        for impl, model in models.items():
            t0 = time.perf_counter()
            results[name][impl] = train(model, data, epochs)
            results[name][impl]["seconds"] = time.perf_counter() - t0
        t, f = results[name]["torch.nn"], results[name]["fused_act"]
        results[name]["diff"] = {
            "identical": all(np.array_equal(t[k], f[k]) for k in ("loss", "accuracy", "grad")),
            "loss": common.max_abs_diff(t["loss"], f["loss"]),
            "accuracy": common.max_abs_diff(t["accuracy"], f["accuracy"]),
            "grad_rel": float(np.max(np.abs(t["grad"] - f["grad"]) / np.abs(t["grad"]))),
        }
    return results


def plot(results: Dict, epochs: int, out: str) -> str:
    plt = common.plt
    names = list(results)
    fig, axes = plt.subplots(2, 1 + len(names), figsize=(4 * (1 + len(names)), 7.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ep = np.arange(1, epochs + 1)
    for j, name in enumerate(names):
        for impl in common.IMPLS:
            r = results[name][impl]
            label = f"{name} ({impl})"
            axes[0, 0].plot(ep, r["loss"], color=colors[j], label=label, **common.STYLE[impl])
            axes[1, 0].plot(ep, r["accuracy"], color=colors[j], label=label,
                            **common.STYLE[impl])
    axes[0, 0].set_title("training loss (BCE)")
    axes[1, 0].set_title("held-out accuracy")
    axes[0, 0].legend(fontsize=7, ncol=1)
    axes[1, 0].set_xlabel("epoch")
    layer_colors = plt.cm.viridis(np.linspace(0, 0.9, len(WIDTHS) - 1))
    for j, name in enumerate(names, start=1):
        ax = axes[0, j]
        for layer in range(len(WIDTHS) - 1):
            for impl in common.IMPLS:
                g = results[name][impl]["grad"][:, layer]
                ax.plot(ep, g, color=layer_colors[layer],
                        label=f"layer {layer + 1}" if impl == "torch.nn" else None,
                        **common.STYLE[impl])
        ax.set_yscale("log")
        ax.set_title(f"{name}: mean |dL/dW| per layer", fontsize=10)
        ax.legend(fontsize=7)
        d = results[name]["diff"]
        ax2 = axes[1, j]
        for layer in range(len(WIDTHS) - 1):
            t = results[name]["torch.nn"]["grad"][:, layer]
            f = results[name]["fused_act"]["grad"][:, layer]
            ax2.plot(ep, (f - t) / t, color=layer_colors[layer], linewidth=1)
        ax2.set_title(("identical bits" if d["identical"] else
                       f"max rel. diff {d['grad_rel']:.1e}, loss {d['loss']:.1e}"),
                      fontsize=9)
        ax2.set_ylabel("(fused_act - torch.nn) / torch.nn", fontsize=8)
        ax2.set_xlabel("epoch")
        ax2.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.suptitle(f"Two circles, 2-5-5-5-5-1, Adam lr {LR:g}, batch {BATCH}, {epochs} epochs: "
                 "torch.nn solid, fused_act dashed")
    fig.tight_layout()
    return common.save(fig, out, "two_circles.png")


def summary(results: Dict, epochs: int, out: str) -> str:
    lines = [f"two_circles: make_circles(1000, noise=0.1, factor=0.5), 800 train / 200 held "
             f"out; 2-5-5-5-5-1, Adam lr {LR:g}, batch {BATCH}, {epochs} epochs; "
             + common.environment_line(), "",
             f"{'activation':<11} {'loss torch':>10} {'fused':>10} {'acc torch':>9} "
             f"{'fused':>6} {'|g1|/|g5| torch':>15} {'identical':>9} {'max|dloss|':>10} "
             f"{'max|dacc|':>9} {'max rel dgrad':>13} {'s torch':>7} {'s fused':>7}"]
    for name, r in results.items():
        t, f, d = r["torch.nn"], r["fused_act"], r["diff"]
        ratio = t["grad"][0, 0] / t["grad"][0, -1]  # first epoch: first layer / last layer
        lines.append(f"{name:<11} {t['loss'][-1]:>10.5f} {f['loss'][-1]:>10.5f} "
                     f"{t['accuracy'][-1]:>9.3f} {f['accuracy'][-1]:>6.3f} {ratio:>15.2e} "
                     f"{str(d['identical']):>9} {d['loss']:>10.1e} {d['accuracy']:>9.3f} "
                     f"{d['grad_rel']:>13.1e} {t['seconds']:>7.1f} {f['seconds']:>7.1f}")
    lines += ["", "|g1|/|g5|: mean |dL/dW| of the first layer over that of the last, after the "
              "first epoch (torch.nn)",
              f"tolerances (tests): bit for bit for {', '.join(EXACT)}; otherwise loss "
              f"{LOSS_ATOL:g}, accuracy {ACC_ATOL:g}, gradient relative {GRAD_RTOL:g}"]
    return common.write_summary(out, "two_circles.txt", lines)


def main(argv=None) -> Dict:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    out = common.setup(args)
    epochs = 3 if args.quick else 200
    results = run(epochs)
    png = plot(results, epochs, out)
    txt = summary(results, epochs, out)
    return {"results": results, "files": [png, txt], "exact": EXACT}


if __name__ == "__main__":
    main(sys.argv[1:])
