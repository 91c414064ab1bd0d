"""Inside an MLP: gradients at initialisation, training, activation histograms and dead
neurons of the 784-512-256-256-128-10 network with six activations, torch.nn against the
same networks after fused_act.convert().

    python examples/inside_mlp.py [--quick] [--out DIR]

Nothing is downloaded.  The data are a synthetic stand-in for 28x28 grey clothing images:
each image is a sum of a few smooth blobs around the centre, scaled to [-1, 1] as the
tutorials normalise their images, and its label (10 classes) is the arg-max of a fixed
random teacher network (784-256-10, tanh) whose logits are centred over the data set so
that every class occurs.

For each of sigmoid, tanh, ReLU, LeakyReLU (slope 0.01), ELU and Swish (nn.SiLU; convert()
turns it into fused_act.SiLU, which computes what fused_act.Swish() does):

1. gradients at initialisation: the gradient of the loss of one batch of 256 images
   with respect to each layer's weights (distribution per layer);
2. training: SGD with momentum 0.9, learning rate 1e-2, batches of 256, cross-entropy;
   training loss per step and held-out accuracy per epoch;
3. activation histograms of the trained networks (each hidden activation's output on
   1024 held-out images);
4. dead neurons (ReLU): neurons whose output is 0 for every training image, in the
   untrained network, the trained one, and an untrained 10-layer network
   (784-512-256-256-256-256-128-128-128-128-128-10).

torch.nn and fused_act start from the same weights and see the same batches in the same
order.
"""
import sys
import time
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import common

ACTIVATIONS = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU, "swish": nn.SiLU,
}
EXACT = ("relu", "leaky_relu")  # select or scale only: the same bits everywhere
# The others differ from torch's activations in the last bits of float32; after training,
# these must stay invisible:
GRAD_RTOL = 1e-4       # gradient at initialisation, elementwise, relative to the layer's max
LOSS_ATOL = 1e-3       # training loss, every step
ACC_ATOL = 0.005       # held-out accuracy (a few samples at the decision boundary)
HIST_ATOL = 0.002      # activation histograms: fraction of values that change bin
HIDDEN = (512, 256, 256, 128)
DEEP_HIDDEN = (512, 256, 256, 256, 256, 128, 128, 128, 128, 128)
LR, MOMENTUM, BATCH = 1e-2, 0.9, 256
DATA_SEED, TEACHER_SEED, INIT_SEED, ORDER_SEED = 0, 1, 2, 3


# ---------------------------------------------------------------------------- data
def make_images(n: int, gen: torch.Generator, blobs: int = 5, chunk: int = 2048):
    """n synthetic 28x28 images in [-1, 1] (float32, flattened to 784)."""
    grid = torch.arange(28, dtype=torch.float32)
    out = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        cy = 14 + 5 * torch.randn(m, blobs, 1, 1, generator=gen)
        cx = 14 + 4 * torch.randn(m, blobs, 1, 1, generator=gen)
        width = 2 + 4 * torch.rand(m, blobs, 1, 1, generator=gen)
        amp = 0.3 + 0.7 * torch.rand(m, blobs, 1, 1, generator=gen)
        d2 = (grid.view(1, 1, 28, 1) - cy) ** 2 + (grid.view(1, 1, 1, 28) - cx) ** 2
        img = (amp * torch.exp(-d2 / (2 * width ** 2))).sum(1)
        img = img + 0.05 * torch.randn(m, 28, 28, generator=gen)
        out.append(img.clamp(0, 1).reshape(m, 784) * 2 - 1)
    return torch.cat(out)


def make_data(n_train: int, n_test: int):
    gen = torch.Generator().manual_seed(DATA_SEED)
    x = make_images(n_train + n_test, gen)
    torch.manual_seed(TEACHER_SEED)
    teacher = nn.Sequential(nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 10))
    with torch.no_grad():
        logits = teacher(x)
        y = (logits - logits.mean(0)).argmax(1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# --------------------------------------------------------------------------- model
def build(act_cls, hidden=HIDDEN) -> nn.Sequential:
    widths = (784,) + tuple(hidden) + (10,)
    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(act_cls())
    return nn.Sequential(*layers)


def hidden_outputs(model: nn.Sequential, x: torch.Tensor) -> List[torch.Tensor]:
    """The output of every activation module (after each hidden layer)."""
    outs = []
    with torch.no_grad():
        for layer in model:
            x = layer(x)
            if not isinstance(layer, nn.Linear):
                outs.append(x)
    return outs


def dead_neurons(model: nn.Sequential, x: torch.Tensor, chunk: int = 2048) -> List[int]:
    """Per hidden layer, the neurons whose output is 0 for every row of x."""
    alive = None
    for start in range(0, len(x), chunk):
        outs = hidden_outputs(model, x[start:start + chunk])
        now = [(o != 0).any(0) for o in outs]
        alive = now if alive is None else [a | b for a, b in zip(alive, now)]
    return [int((~a).sum()) for a in alive]


def init_gradients(model: nn.Sequential, x, y) -> List[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    grads = [m.weight.grad.detach().clone().flatten() for m in model if isinstance(m, nn.Linear)]
    model.zero_grad(set_to_none=True)
    return grads


def train(model, data, epochs: int) -> Dict:
    x_train, y_train, x_test, y_test = data
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    order = torch.Generator().manual_seed(ORDER_SEED)
    losses, accs = [], []
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=order)
        for start in range(0, len(x_train) - BATCH + 1, BATCH):  # full batches only
            idx = perm[start:start + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            accs.append((model(x_test).argmax(1) == y_test).float().mean().item())
    return {"loss": np.array(losses), "accuracy": np.array(accs)}


# ----------------------------------------------------------------------------- run
def run(n_train: int, n_test: int, epochs: int) -> Dict:
    data = make_data(n_train, n_test)
    x_train, y_train, x_test, y_test = data
    results = {"classes": torch.bincount(y_train, minlength=10).tolist(), "acts": {}}
    for name, act_cls in ACTIVATIONS.items():
        torch.manual_seed(INIT_SEED)
        models = common.model_pair(build(act_cls))
        r = {impl: {} for impl in common.IMPLS}
        for impl, model in models.items():
            r[impl]["grads"] = init_gradients(model, x_train[:BATCH], y_train[:BATCH])
            r[impl]["dead_untrained"] = dead_neurons(model, x_train)
            t0 = time.perf_counter()
            r[impl].update(train(model, data, epochs))
            r[impl]["seconds"] = time.perf_counter() - t0
            r[impl]["hidden"] = [o.flatten() for o in hidden_outputs(model, x_test[:1024])]
            r[impl]["dead_trained"] = dead_neurons(model, x_train)
        results["acts"][name] = r
    torch.manual_seed(INIT_SEED)
    deep = common.model_pair(build(nn.ReLU, DEEP_HIDDEN))
    results["dead_deep"] = {impl: dead_neurons(m, x_train) for impl, m in deep.items()}
    results["diff"] = {name: compare(r) for name, r in results["acts"].items()}
    return results


def histogram_pair(a: torch.Tensor, b: torch.Tensor, bins: int = 50):
    """Histograms of a and b on the same bins (a's range)."""
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        hi = lo + 1e-6
    edges = np.linspace(lo, hi, bins + 1)
    ha, _ = np.histogram(a.numpy(), edges)
    hb, _ = np.histogram(b.clamp(lo, hi).numpy(), edges)
    return edges, ha, hb


def compare(r: Dict) -> Dict:
    t, f = r["torch.nn"], r["fused_act"]
    grad_rel = max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(t["grads"], f["grads"]))
    hist_moved = 0.0
    for a, b in zip(t["hidden"], f["hidden"]):
        _, ha, hb = histogram_pair(a, b)
        hist_moved = max(hist_moved, 0.5 * np.abs(ha - hb).sum() / a.numel())
    identical = (all(torch.equal(a, b) for a, b in zip(t["grads"], f["grads"]))
                 and all(torch.equal(a, b) for a, b in zip(t["hidden"], f["hidden"]))
                 and np.array_equal(t["loss"], f["loss"])
                 and np.array_equal(t["accuracy"], f["accuracy"]))
    return {"identical": identical, "grad_rel": grad_rel,
            "loss": common.max_abs_diff(t["loss"], f["loss"]),
            "accuracy": common.max_abs_diff(t["accuracy"], f["accuracy"]),
            "hist_moved": hist_moved,
            "dead_equal": (t["dead_untrained"] == f["dead_untrained"]
                           and t["dead_trained"] == f["dead_trained"])}


# --------------------------------------------------------------------------- plots
def plot_gradients(results: Dict, out: str) -> str:
    plt = common.plt
    acts = results["acts"]
    n_layers = len(HIDDEN) + 1
    fig, axes = plt.subplots(len(acts), n_layers, figsize=(3 * n_layers, 2.2 * len(acts)))
    for i, (name, r) in enumerate(acts.items()):
        for j in range(n_layers):
            ax = axes[i, j]
            g_t, g_f = r["torch.nn"]["grads"][j], r["fused_act"]["grads"][j]
            edges, h_t, h_f = histogram_pair(g_t, g_f, bins=60)
            ax.stairs(h_t, edges, fill=True, alpha=0.4, label="torch.nn")
            ax.stairs(h_f, edges, color="k", linewidth=0.8, label="fused_act")
            ax.set_yscale("log")
            ax.set_title(f"{name}, layer {j + 1}: std {g_t.std():.1e} / {g_f.std():.1e}",
                         fontsize=8)
            ax.tick_params(labelsize=7)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Gradient of the loss w.r.t. each layer's weights at initialisation, one batch "
                 "of 256 (std: torch.nn / fused_act)", y=1.0)
    fig.tight_layout()
    return common.save(fig, out, "inside_mlp_gradients.png")


def plot_training(results: Dict, epochs: int, out: str) -> str:
    plt = common.plt
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (ax_l, ax_a, ax_d) = plt.subplots(1, 3, figsize=(16, 4.5))
    for k, (name, r) in enumerate(results["acts"].items()):
        for impl in common.IMPLS:
            loss = r[impl]["loss"]
            w = max(1, len(loss) // 50)  # running mean over ~2% of the steps
            smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
            ax_l.plot(np.arange(len(smooth)) + w, smooth, color=colors[k],
                      label=f"{name} ({impl})", **common.STYLE[impl])
            ax_a.plot(np.arange(1, epochs + 1), r[impl]["accuracy"], color=colors[k],
                      marker="o" if impl == "torch.nn" else "x", **common.STYLE[impl])
        d = np.abs(r["fused_act"]["loss"] - r["torch.nn"]["loss"])
        ax_d.plot(np.arange(1, len(d) + 1), np.maximum(d, 1e-12), ".", color=colors[k],
                  markersize=3, label=name + (" (identical)" if results["diff"][name]["identical"]
                                             else ""))
    ax_l.set_title("training loss (running mean)")
    ax_l.set_xlabel("step")
    ax_l.legend(fontsize=7, ncol=2)
    ax_a.set_title("held-out accuracy")
    ax_a.set_xlabel("epoch")
    ax_d.set_yscale("log")
    ax_d.set_title("|loss fused_act - loss torch.nn| per step (1e-12 = equal)")
    ax_d.set_xlabel("step")
    ax_d.legend(fontsize=7)
    for ax in (ax_l, ax_a, ax_d):
        ax.grid(alpha=0.3)
    fig.suptitle(f"784-512-256-256-128-10, SGD lr {LR:g} momentum {MOMENTUM:g}, batch {BATCH}: "
                 "torch.nn solid, fused_act dashed")
    fig.tight_layout()
    return common.save(fig, out, "inside_mlp_training.png")


def plot_activations(results: Dict, out: str) -> str:
    plt = common.plt
    acts = results["acts"]
    n_layers = len(HIDDEN)
    fig, axes = plt.subplots(len(acts), n_layers, figsize=(3 * n_layers, 2.2 * len(acts)))
    for i, (name, r) in enumerate(acts.items()):
        for j in range(n_layers):
            ax = axes[i, j]
            a_t, a_f = r["torch.nn"]["hidden"][j], r["fused_act"]["hidden"][j]
            edges, h_t, h_f = histogram_pair(a_t, a_f)
            ax.stairs(h_t / a_t.numel(), edges, fill=True, alpha=0.4, label="torch.nn")
            ax.stairs(h_f / a_f.numel(), edges, color="k", linewidth=0.8, label="fused_act")
            ax.set_title(f"{name}, hidden layer {j + 1}", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Activations of the trained networks on 1024 held-out images "
                 "(fraction per bin)", y=1.0)
    fig.tight_layout()
    return common.save(fig, out, "inside_mlp_activations.png")


def plot_dead(results: Dict, out: str) -> str:
    plt = common.plt
    relu = results["acts"]["relu"]
    panels = [("ReLU, untrained", [relu[i]["dead_untrained"] for i in common.IMPLS], HIDDEN),
              ("ReLU, trained", [relu[i]["dead_trained"] for i in common.IMPLS], HIDDEN),
              ("ReLU, 10 hidden layers, untrained",
               [results["dead_deep"][i] for i in common.IMPLS], DEEP_HIDDEN)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4), gridspec_kw={"width_ratios": [1, 1, 2]})
    for ax, (title, (t, f), widths) in zip(axes, panels):
        pos = np.arange(len(widths))
        ax.bar(pos - 0.2, 100 * np.array(t) / np.array(widths), 0.4, label="torch.nn")
        ax.bar(pos + 0.2, 100 * np.array(f) / np.array(widths), 0.4, label="fused_act")
        for p, (a, b, w) in enumerate(zip(t, f, widths)):
            ax.annotate(f"{a}|{b}", (p, 100 * max(a, b) / w), xytext=(0, 2),
                        textcoords="offset points", ha="center", fontsize=7)
        top = max(100 * np.maximum(np.array(t), np.array(f)) / np.array(widths))
        ax.set_ylim(0, 1.15 * max(1.0, top))
        ax.set_xticks(pos, [f"{k + 1}\n({w})" for k, w in enumerate(widths)], fontsize=7)
        ax.set_xlabel("hidden layer (width)")
        ax.set_ylabel("dead neurons, %")
        ax.set_title(title + " (counts torch.nn|fused_act)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle("Dead neurons: output 0 for every training image")
    fig.tight_layout()
    return common.save(fig, out, "inside_mlp_dead_neurons.png")


def summary(results: Dict, args_line: str, out: str) -> str:
    lines = [f"inside_mlp: {args_line}; " + common.environment_line(),
             f"training labels per class: {results['classes']}", "",
             f"{'activation':<11} {'loss torch':>10} {'fused':>8} {'acc torch':>9} {'fused':>6} "
             f"{'identical':>9} {'max|dloss|':>10} {'max|dacc|':>9} {'grad rel':>8} "
             f"{'hist moved':>10} {'s torch':>7} {'s fused':>7}"]
    for name, r in results["acts"].items():
        t, f, d = r["torch.nn"], r["fused_act"], results["diff"][name]
        lines.append(f"{name:<11} {t['loss'][-1]:>10.4f} {f['loss'][-1]:>8.4f} "
                     f"{t['accuracy'][-1]:>9.4f} {f['accuracy'][-1]:>6.4f} "
                     f"{str(d['identical']):>9} {d['loss']:>10.1e} {d['accuracy']:>9.4f} "
                     f"{d['grad_rel']:>8.1e} {d['hist_moved']:>10.1e} "
                     f"{t['seconds']:>7.1f} {f['seconds']:>7.1f}")
    lines += ["", "gradient std per layer at initialisation (torch.nn | fused_act):"]
    for name, r in results["acts"].items():
        lines.append(f"  {name:<11} " + "  ".join(
            f"{a.std():.2e}|{b.std():.2e}" for a, b in zip(r["torch.nn"]["grads"],
                                                          r["fused_act"]["grads"])))
    lines += ["", "dead neurons per hidden layer (torch.nn | fused_act):"]
    for name, r in results["acts"].items():
        lines.append(f"  {name:<11} untrained {r['torch.nn']['dead_untrained']} | "
                     f"{r['fused_act']['dead_untrained']}   trained "
                     f"{r['torch.nn']['dead_trained']} | {r['fused_act']['dead_trained']}")
    lines.append(f"  relu, 10 hidden layers, untrained: {results['dead_deep']['torch.nn']} | "
                 f"{results['dead_deep']['fused_act']}")
    lines += ["", "loss/acc: last step's training loss, last epoch's held-out accuracy; "
              "grad rel: max |difference| of the initial gradients over the layer's max |grad|; "
              "hist moved: largest fraction of activations in a different histogram bin",
              f"tolerances (tests): bit for bit for {', '.join(EXACT)}; otherwise gradient "
              f"{GRAD_RTOL:g} relative, loss {LOSS_ATOL:g}, accuracy {ACC_ATOL:g}, histograms "
              f"{HIST_ATOL:g}, dead-neuron counts equal"]
    return common.write_summary(out, "inside_mlp.txt", lines)


def main(argv=None) -> Dict:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    out = common.setup(args)
    n_train, n_test, epochs = (1024, 256, 2) if args.quick else (8192, 2048, 8)
    results = run(n_train, n_test, epochs)
    files = [plot_gradients(results, out), plot_training(results, epochs, out),
             plot_activations(results, out), plot_dead(results, out)]
    files.append(summary(results, f"{n_train} training / {n_test} held-out images, {epochs} "
                         f"epochs, SGD lr {LR:g} momentum {MOMENTUM:g}, batch {BATCH}", out))
    return {"results": results, "files": files, "exact": EXACT}


if __name__ == "__main__":
    main(sys.argv[1:])
