"""Speed where it shows: fused_act's modules against the hand-written activation classes
of the tutorials (and torch.nn's modules), forward + backward of the 784-512-256-256-128-10
MLP and of its activations alone.

    python examples/speed.py [--quick] [--out DIR] [--threads N]

The hand-written classes are what the tutorials define to show the formulas:
sigmoid 1 / (1 + exp(-x)), tanh (e^x - e^-x) / (e^x + e^-x), ReLU x * (x > 0),
LeakyReLU where(x > 0, x, 0.1 x), ELU where(x > 0, x, alpha (e^x - 1)) and
Swish x * sigmoid(x).  fused_act's modules: Sigmoid, Tanh, ReLU, LeakyReLU(0.1), ELU and
Swish.

Timing follows the project's benchmark (bench/timing.py): every variant measured in one
process, after warm-up, interleaved in a shuffled order each round, each measurement
long enough to be timed, and the median over the rounds reported.  The three variants of
one activation share the weights and the input; before timing, their outputs and
gradients are compared.
"""
import copy
import os
import sys
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import common
import fused_act

sys.path.insert(0, os.path.join(os.path.dirname(common.HERE), "bench"))
from timing import Candidate, Clock, interleaved  # noqa: E402  (the project's timing rules)

CLOCK = Clock(torch.device("cpu"))


# -------------------------------------------------- the tutorials' hand-written classes
class HandSigmoid(nn.Module):
    def forward(self, x):
        return 1 / (1 + torch.exp(-x))


class HandTanh(nn.Module):
    def forward(self, x):
        e_pos, e_neg = torch.exp(x), torch.exp(-x)
        return (e_pos - e_neg) / (e_pos + e_neg)


class HandReLU(nn.Module):
    def forward(self, x):
        return x * (x > 0).float()


class HandLeakyReLU(nn.Module):
    def __init__(self, alpha=0.1):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return torch.where(x > 0, x, self.alpha * x)


class HandELU(nn.Module):
    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return torch.where(x > 0, x, self.alpha * (torch.exp(x) - 1))


class HandSwish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


# name -> (hand-written, fused_act, torch.nn) module factories
VARIANTS = {
    "sigmoid": (HandSigmoid, fused_act.Sigmoid, nn.Sigmoid),
    "tanh": (HandTanh, fused_act.Tanh, nn.Tanh),
    "relu": (HandReLU, fused_act.ReLU, nn.ReLU),
    "leaky_relu": (HandLeakyReLU, lambda: fused_act.LeakyReLU(0.1), lambda: nn.LeakyReLU(0.1)),
    "elu": (HandELU, fused_act.ELU, nn.ELU),
    "swish": (HandSwish, fused_act.Swish, nn.SiLU),
}
NAMES = ("hand-written", "fused_act", "torch.nn")
WIDTHS = (784, 512, 256, 256, 128, 10)
EXACT = ("relu", "leaky_relu")  # fused_act gives torch.nn's bits
RTOL, ATOL = 1e-5, 1e-6  # otherwise: outputs and gradients, float32


def build(make_act) -> nn.Sequential:
    layers = []
    for i in range(len(WIDTHS) - 1):
        layers.append(nn.Linear(WIDTHS[i], WIDTHS[i + 1]))
        if i < len(WIDTHS) - 2:
            layers.append(make_act())
    return nn.Sequential(*layers)


def with_activation(base: nn.Sequential, make_act) -> nn.Sequential:
    """A copy of base (same weights) with its activations built by make_act."""
    model = copy.deepcopy(base)
    for i, layer in enumerate(model):
        if not isinstance(layer, nn.Linear):
            model[i] = make_act()
    return model


def forward_backward(model, x, target):
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    return loss


def activation_inputs(base, x):
    """The pre-activations of the MLP's hidden layers for the batch x (leaf tensors)."""
    inputs, h = [], x
    with torch.no_grad():
        for layer in base:
            if isinstance(layer, nn.Linear):
                h = layer(h)
            else:
                inputs.append(h.clone().requires_grad_(True))
                h = torch.relu(h)
    return inputs


def activations_only(acts, inputs, grads):
    for act, inp, g in zip(acts, inputs, grads):
        inp.grad = None
        act(inp).backward(g)


def check(models: Dict[str, nn.Module], x, target) -> Dict:
    """Loss, output and gradients of each variant against torch.nn's."""
    out = {}
    for name, model in models.items():
        model.zero_grad(set_to_none=True)
        y = model(x)
        F.cross_entropy(y, target).backward()
        out[name] = [y.detach()] + [p.grad.detach().clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
    ref = out["torch.nn"]
    return {name: {"equal": all(torch.equal(a, b) for a, b in zip(v, ref)),
                   "close": all(torch.allclose(a, b, rtol=RTOL, atol=ATOL) for a, b in zip(v, ref)),
                   "max_abs": max(common.max_abs_diff(a, b) for a, b in zip(v, ref))}
            for name, v in out.items()}


def run(batch: int, repeats: int, min_time: float) -> Dict:
    torch.manual_seed(0)
    x = torch.randn(batch, WIDTHS[0])
    target = torch.randint(0, WIDTHS[-1], (batch,))
    base = build(nn.ReLU)
    inputs = activation_inputs(base, x)
    grads = [torch.randn_like(t) for t in inputs]
    results = {}
    for act_name, makers in VARIANTS.items():
        models = {n: with_activation(base, m) for n, m in zip(NAMES, makers)}
        r = {"check": check(models, x, target)}
        cands = [Candidate(n, lambda k, m=m: CLOCK.time_loop(lambda: forward_backward(m, x, target), k))
                 for n, m in models.items()]
        mlp = interleaved(cands, repeats=repeats, min_time=min_time)
        acts = {n: [m() for _ in inputs] for n, m in zip(NAMES, makers)}
        cands = [Candidate(n, lambda k, a=a: CLOCK.time_loop(lambda: activations_only(a, inputs, grads), k))
                 for n, a in acts.items()]
        alone = interleaved(cands, repeats=repeats, min_time=min_time)
        r["mlp"] = {n: float(np.median(v)) for n, v in mlp.items()}
        r["alone"] = {n: float(np.median(v)) for n, v in alone.items()}
        r["mlp_samples"], r["alone_samples"] = mlp, alone
        results[act_name] = r
    return results


def plot(results: Dict, batch: int, repeats: int, out: str) -> str:
    plt = common.plt
    names = list(results)
    pos = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    panels = (("mlp", f"whole MLP, forward + backward (batch {batch})"),
              ("alone", f"the four activations alone, forward + backward (batch {batch})"))
    for ax, (key, title) in zip(axes, panels):
        for k, (other, color) in enumerate((("hand-written", "C1"), ("torch.nn", "C0"))):
            ratio = [results[n][key][other] / results[n][key]["fused_act"] for n in names]
            bars = ax.bar(pos + (k - 0.5) * 0.38, ratio, 0.38, color=color,
                          label=f"{other} time / fused_act time")
            for b, v in zip(bars, ratio):
                ax.text(b.get_x() + b.get_width() / 2, v + 0.02, f"{v:.2f}", ha="center",
                        fontsize=7)
        top = max(results[n][key][o] / results[n][key]["fused_act"]
                  for n in names for o in ("hand-written", "torch.nn"))
        ax.set_ylim(0, 1.3 * max(top, 1.0))  # room for the legend above the bars
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.set_xticks(pos, names)
        ax.set_ylabel("speed-up of fused_act (above 1: faster)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.suptitle(f"fused_act against the tutorials' hand-written activations and torch.nn; "
                 f"median of {repeats} interleaved rounds, {torch.get_num_threads()} thread(s)")
    fig.tight_layout()
    return common.save(fig, out, "speed.png")


def summary(results: Dict, batch: int, repeats: int, out: str) -> str:
    lines = [f"speed: 784-512-256-256-128-10, batch {batch}, float32, forward + backward, "
             f"median of {repeats} interleaved rounds; " + common.environment_line(), "",
             f"{'activation':<11} {'MLP fused':>10} {'hand':>9} {'torch.nn':>9} "
             f"{'hand/fused':>10} {'nn/fused':>8} | {'acts fused':>10} {'hand':>9} "
             f"{'torch.nn':>9} {'hand/fused':>10} {'nn/fused':>8} | fused vs torch.nn "]
    for name, r in results.items():
        m, a, c = r["mlp"], r["alone"], r["check"]["fused_act"]
        lines.append(
            f"{name:<11} {m['fused_act'] * 1e3:>8.2f}ms {m['hand-written'] * 1e3:>7.2f}ms "
            f"{m['torch.nn'] * 1e3:>7.2f}ms {m['hand-written'] / m['fused_act']:>9.2f}x "
            f"{m['torch.nn'] / m['fused_act']:>7.2f}x | {a['fused_act'] * 1e3:>8.3f}ms "
            f"{a['hand-written'] * 1e3:>7.3f}ms {a['torch.nn'] * 1e3:>7.3f}ms "
            f"{a['hand-written'] / a['fused_act']:>9.2f}x {a['torch.nn'] / a['fused_act']:>7.2f}x | "
            + ("identical" if c["equal"] else f"max |diff| {c['max_abs']:.1e}"))
    lines += ["", "x/fused: time of x over time of fused_act (above 1: fused_act is faster); "
              "the last column compares the output and every parameter gradient of one "
              "forward + backward with torch.nn's"]
    return common.write_summary(out, "speed.txt", lines)


def main(argv=None) -> Dict:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    out = common.setup(args)
    batch, repeats, min_time = (64, 3, 0.002) if args.quick else (1024, 11, 0.1)
    results = run(batch, repeats, min_time)
    files = [plot(results, batch, repeats, out), summary(results, batch, repeats, out)]
    return {"results": results, "files": files, "exact": EXACT, "rtol": RTOL, "atol": ATOL}


if __name__ == "__main__":
    main(sys.argv[1:])
