"""End-to-end training rows of bench/run.py, built from torch alone (no downloads):

* ``mlp``: the tutorials' MLP, 784-512-256-256-128-10 with ReLU, batch 256, cross-entropy;
* ``convnet``: a small EfficientNet-style network on 3x32x32 images, batch 16: a
  conv-BN-SiLU stem, MBConv blocks (1x1 expansion conv-BN-SiLU, 3x3 depthwise
  conv-BN-SiLU, squeeze-excite with SiLU and Sigmoid, 1x1 projection conv-BN, residual),
  a conv-BN-SiLU head, average pooling, a linear classifier, cross-entropy;
* ``transformer``: one pre-norm transformer block, width 256, 4 heads, sequence 64,
  batch 8: softmax attention (nn.Softmax over the keys) and a SwiGLU MLP
  (w2(SiLU(w1 x) * w3 x), hidden 512); mean squared error against a random target.

Each model is trained with plain SGD as ``torch`` (torch.nn modules), ``fused_act`` (the
same weights after fused_act.convert()) and ``compiled`` (torch.compile of the torch model,
set up as in compiled.py: static shapes, warmed up, no recompile while measured).
Reported: training steps/s (median over interleaved measurements), activation memory
(bytes saved for backward by one forward, parameters excluded; on CPU it stands in for
peak memory, which torch does not track there), on CUDA the peak of
torch.cuda.max_memory_allocated over one step, and the compile time.
"""
import copy
import statistics
import time
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

import compiled as compiled_setup
import fused_act
from mlp import WIDTHS as MLP_WIDTHS
from mlp import build_mlp
from timing import Clock, saved_bytes


# ------------------------------------------------------------------ convnet

def conv_bn_silu(cin, cout, k, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.SiLU())


class SqueezeExcite(nn.Module):
    def __init__(self, channels, reduced):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class MBConv(nn.Module):
    def __init__(self, cin, cout, stride, expand=4):
        super().__init__()
        mid = cin * expand
        self.block = nn.Sequential(
            conv_bn_silu(cin, mid, 1),
            conv_bn_silu(mid, mid, 3, stride, groups=mid),
            SqueezeExcite(mid, max(8, cin // 4)),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


def build_convnet(classes=10):
    return nn.Sequential(
        conv_bn_silu(3, 24, 3, 2),
        MBConv(24, 24, 1), MBConv(24, 40, 2), MBConv(40, 40, 1), MBConv(40, 80, 2),
        conv_bn_silu(80, 256, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, classes))


# ------------------------------------------------------------------ transformer

class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        att = self.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.w2(self.act(self.w1(x)) * self.w3(x))


class GeluMLP(nn.Module):
    """The MLP of BERT / GPT-2 blocks: Linear, GELU, Linear."""

    def __init__(self, dim, hidden, approximate="none"):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = nn.GELU(approximate=approximate)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim=256, heads=4, hidden=512, mlp="swiglu"):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = SwiGLU(dim, hidden) if mlp == "swiglu" else GeluMLP(dim, 2 * hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# ------------------------------------------------------------------ registry

def _classification(batch, shape, classes=10):
    def make(device, dtype, gen):
        x = torch.randn(batch, *shape, generator=gen, device=device, dtype=dtype)
        target = torch.randint(0, classes, (batch,), generator=gen, device=device)
        return x, target
    return make


def _regression(batch, shape):
    def make(device, dtype, gen):
        x = torch.randn(batch, *shape, generator=gen, device=device, dtype=dtype)
        return x, torch.randn(batch, *shape, generator=gen, device=device, dtype=dtype)
    return make


MODELS = {
    # name: (builder, batch maker, loss, description)
    "mlp": (lambda: build_mlp(nn.ReLU), _classification(256, (MLP_WIDTHS[0],)),
            F.cross_entropy, "MLP " + "-".join(map(str, MLP_WIDTHS)) + ", ReLU, batch 256"),
    "convnet": (build_convnet, _classification(16, (3, 32, 32)), F.cross_entropy,
                "EfficientNet-style MBConv net, SiLU + SE Sigmoid, 3x32x32, batch 16"),
    "transformer": (Block, _regression(8, (64, 256)), F.mse_loss,
                    "transformer block d256 h4 seq64, softmax attention + SwiGLU, batch 8"),
    "transformer_gelu": (lambda: Block(mlp="gelu"), _regression(8, (64, 256)), F.mse_loss,
                         "transformer block d256 h4 seq64, softmax attention + GELU MLP "
                         "(hidden 1024), batch 8"),
}


def _step(model, opt, loss_fn, x, target):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), target)
    loss.backward()
    opt.step()
    return loss


def run_model(name: str, device: torch.device, dtype: torch.dtype, steps: int, repeats: int,
              warmup: int = 2, compile_options=None, seed: int = 0) -> Dict:
    build, make_batch, loss_fn, description = MODELS[name]
    torch.manual_seed(seed)
    base = build().to(device=device, dtype=dtype).train()
    gen = torch.Generator(device=device).manual_seed(seed)
    x, target = make_batch(device, dtype, gen)
    variants = {"torch": base, "fused_act": fused_act.convert(copy.deepcopy(base))}
    fused_types = sorted({type(m).__name__ for m in variants["fused_act"].modules()
                          if type(m).__module__.startswith("fused_act")})
    result = {"model": name, "description": description,
              "fused_modules": ",".join(fused_types), "steps_per_measurement": steps}

    # Same weights, same batch: the losses of one forward agree (eval mode would change
    # BatchNorm, so this runs in training mode on copies).
    with torch.no_grad():
        losses = {k: loss_fn(copy.deepcopy(m)(x), target).float().item()
                  for k, m in variants.items()}
    result["loss_match"] = bool(abs(losses["torch"] - losses["fused_act"])
                                <= 1e-2 * max(1.0, abs(losses["torch"])))

    params = {k: {p.untyped_storage().data_ptr() for p in m.parameters()}
              for k, m in variants.items()}
    for k, m in variants.items():
        result[f"{k}_saved_bytes"] = saved_bytes(lambda: m(x), exclude=params[k])

    steps_fns = {}
    for k, m in variants.items():
        opt = torch.optim.SGD(m.parameters(), lr=1e-3)
        steps_fns[k] = (lambda m, opt: lambda: _step(m, opt, loss_fn, x, target))(m, opt)
    if compile_options is not None:
        eager = copy.deepcopy(base)
        cm = compiled_setup.compile_fn(eager, compile_options)
        opt = torch.optim.SGD(eager.parameters(), lr=1e-3)
        steps_fns["compiled"] = lambda: _step(cm, opt, loss_fn, x, target)
        t0 = time.perf_counter()
        steps_fns["compiled"]()  # compiles forward and backward
        result["compile_s"] = round(time.perf_counter() - t0, 2)

    for fn in steps_fns.values():
        for _ in range(warmup):
            fn()

    clock = Clock(device)
    samples = {k: [] for k in steps_fns}
    guard = (compiled_setup.guard(f"model {name}") if compile_options is not None
             else _nullcontext())
    with guard:
        names = list(steps_fns)
        for r in range(repeats):
            order = names[r % len(names):] + names[:r % len(names)]  # rotate the order
            for k in order:
                samples[k].append(1.0 / clock.time_loop(steps_fns[k], steps))
    for k, s in samples.items():
        result[f"{k}_steps_per_s"] = statistics.median(s)
        result[f"{k}_steps_per_s_min"] = min(s)
        result[f"{k}_steps_per_s_max"] = max(s)

    if device.type == "cuda":
        for k, fn in steps_fns.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            fn()
            torch.cuda.synchronize()
            result[f"{k}_peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return result


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
