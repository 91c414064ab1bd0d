"""End-to-end check: training steps/s and memory of a small MLP, torch's activation
modules against the same model after fused_act.convert().

Model 784 -> 512 -> 256 -> 256 -> 128 -> 10 with the activation after every hidden
layer, batch 256 of synthetic data, cross-entropy, plain SGD.
"""
import copy
import statistics
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

import fused_act
from timing import Clock, saved_bytes

WIDTHS = (784, 512, 256, 256, 128, 10)
BATCH = 256


def build_mlp(make_activation) -> nn.Sequential:
    layers = []
    for i in range(len(WIDTHS) - 1):
        layers.append(nn.Linear(WIDTHS[i], WIDTHS[i + 1]))
        if i < len(WIDTHS) - 2:
            layers.append(make_activation())
    return nn.Sequential(*layers)


def torch_activation_factory(act):
    kwargs = dict(act.module_kwargs)
    if act.torch_module is nn.Softmax and "dim" not in kwargs:
        kwargs["dim"] = -1
    return lambda: act.torch_module(**kwargs)


def _train_step(model, opt, x, target):
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    opt.step()
    return loss


def run_mlp(act, device: torch.device, dtype: torch.dtype, steps: int, repeats: int,
            warmup: int = 2, seed: int = 0) -> Dict:
    """Steps/s (median over interleaved repeats of ``steps`` steps), activation memory
    (bytes saved for backward by one forward, parameters excluded) and, on CUDA, the peak
    memory of one training step."""
    torch.manual_seed(seed)
    base = build_mlp(torch_activation_factory(act)).to(device=device, dtype=dtype)
    models = {"torch": base, "fused_act": fused_act.convert(copy.deepcopy(base))}
    fused_types = sorted({type(m).__name__ for m in models["fused_act"].modules()
                          if type(m).__module__.startswith("fused_act")})
    x = torch.randn(BATCH, WIDTHS[0], device=device, dtype=dtype)
    target = torch.randint(0, WIDTHS[-1], (BATCH,), device=device)
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in models.items()}
    clock = Clock(device)

    # Same weights, same batch: the first losses agree (a check that convert() kept the model).
    with torch.no_grad():
        l_t = F.cross_entropy(models["torch"](x), target).float().item()
        l_f = F.cross_entropy(models["fused_act"](x), target).float().item()
    loss_match = abs(l_t - l_f) <= 1e-2 * max(1.0, abs(l_t))

    result = {"op": act.name, "torch_module": act.torch_module.__name__,
              "fused_modules": ",".join(fused_types), "batch": BATCH,
              "widths": "-".join(map(str, WIDTHS)), "steps_per_measurement": steps,
              "loss_match": bool(loss_match)}
    for name, model in models.items():
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        result[f"{name}_saved_bytes"] = saved_bytes(lambda: model(x), exclude=params)
        for _ in range(warmup):
            _train_step(model, opts[name], x, target)

    samples = {name: [] for name in models}
    for r in range(repeats):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for name in order:
            t = clock.time_loop(lambda: _train_step(models[name], opts[name], x, target), steps)
            samples[name].append(1.0 / t)
    for name in models:
        result[f"{name}_steps_per_s"] = statistics.median(samples[name])
        result[f"{name}_steps_per_s_min"] = min(samples[name])
        result[f"{name}_steps_per_s_max"] = max(samples[name])

    if device.type == "cuda":
        for name, model in models.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            _train_step(model, opts[name], x, target)
            torch.cuda.synchronize()
            result[f"{name}_peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return result
