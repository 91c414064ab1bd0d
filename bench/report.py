"""Terminal tables, data files (JSON, CSV) and plots (PNG) for bench/run.py."""
import csv
import json
import os
from collections import OrderedDict

PHASES = ("forward", "backward", "fwd+bwd")
COMPETITORS = ("torch", "composite", "compiled", "onnxruntime")
FRAC_COPY_CLIP = 3.0  # upper limit of the y axis of the bandwidth plot


# ---------------------------------------------------------------- formatting helpers

def fmt_time(seconds):
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def fmt_size(n):
    if n > 0 and n & (n - 1) == 0:
        return f"2^{n.bit_length() - 1}"
    return str(n)


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def spread(row):
    """Half the min-max range, relative to the median."""
    return (row["max_s"] - row["min_s"]) / (2 * row["median_s"])


def render(headers, rows, align=None):
    """A plain-text table; ``align`` is a string of 'l'/'r' per column."""
    align = align or "l" * 2 + "r" * (len(headers) - 2)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells):
        out = []
        for c, w, a in zip(cells, widths, align):
            out.append(str(c).ljust(w) if a == "l" else str(c).rjust(w))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def _labels(rows):
    """'op' alone, 'op[setting]' when an op appears with several settings, and 'op/row'
    when it appears with several row lengths (softmax)."""
    settings, widths = {}, {}
    for r in rows:
        settings.setdefault(r["op"], set()).add(r["setting"])
        widths.setdefault(r["op"], set()).add(r.get("row"))

    def label(r):
        text = r["op"] if len(settings[r["op"]]) == 1 else f"{r['op']}[{r['setting']}]"
        return text if len(widths[r["op"]]) == 1 else f"{text}/{r.get('row')}"
    return label


def _index(rows):
    """(label, size, phase) -> {impl: row}, in first-seen order."""
    label = _labels(rows)
    idx = OrderedDict()
    for r in rows:
        idx.setdefault((label(r), r["size"], r["phase"]), {})[r["impl"]] = r
    return idx


# ---------------------------------------------------------------- terminal

def _compile_text(env):
    setup = env.get("compile_setup")
    if not env.get("compile") or not setup:
        return "off"
    return f"on (per shape, {setup['partitioner']} partitioner)"


def _ort_text(env):
    o = env.get("onnxruntime")
    return f"{o['version']} (forward, float32)" if o else "off"


def header(env):
    caps = env.get("fused_act_backends", {}).get("cpu_capability")
    dev = env["device_name"]
    if env["device"] == "cpu":
        dev += f", {env['threads']} thread{'s' if env['threads'] != 1 else ''}" + (f", fused_act CPU kernels: {caps}" if caps else "")
        if env.get("torch_cpu_capability"):
            dev += f", torch CPU kernels: {env['torch_cpu_capability'].lower()}"
            if env.get("onednn_max_cpu_isa"):
                dev += f" (oneDNN at most {env['onednn_max_cpu_isa'].lower()})"
    sizes = ", ".join(fmt_size(n) for n in env["sizes"])
    text = (f"fused_act {env['fused_act_version']} vs torch {env['torch_version']} on "
            f"{env['device']} ({dev}), {env['dtype']}\n"
            f"sizes (elements): {sizes}; {env['repeats']} interleaved measurements per "
            f"implementation; torch.compile {_compile_text(env)}"
            f"; ONNX Runtime {_ort_text(env)}; allocator: "
            + ("steady (glibc mmap off, no trim)" if env.get("steady_alloc")
               else "glibc defaults"))
    load, cores = env.get("load_average_1min"), env.get("usable_cores")
    if env["device"] == "cpu" and load is not None and cores and load > 0.5 * cores:
        text += (f"\nnote: the machine is busy (load average {load:.1f} on {cores} cores "
                 "before the start): CPU figures will be noisy"
                 + ("; --threads 1 is less affected" if env["threads"] > 1 else ""))
    return text


def kernel_tables(rows):
    idx = _index(rows)
    out = []
    for phase in PHASES:
        present = [c for c in COMPETITORS
                   if any(c in v for k, v in idx.items() if k[2] == phase)]
        headers = ["op", "size", "fused_act", "+-", "GB/s", "%copy", "pf/call"]
        for c in present:
            headers += [c, f"vs {c}"]
        headers += ["torch %copy", "copy GB/s"]
        body = []
        for (label, size, ph), impls in idx.items():
            if ph != phase:
                continue
            f = impls["fused_act"]
            line = [label, fmt_size(size), fmt_time(f["median_s"]), f"{spread(f):.0%}",
                    f"{f['gbps']:.1f}", f"{f['frac_copy']:.0%}",
                    "-" if f.get("page_faults_per_call") is None
                    else f"{f['page_faults_per_call']:.0f}"]
            for c in present:
                r = impls.get(c)
                line += [fmt_time(r["median_s"]) if r else "-",
                         fmt_ratio(r["fused_speedup"]) if r else "-"]
            t = impls.get("torch")
            line += [f"{t['frac_copy']:.0%}" if t else "-", f"{f['copy_gbps']:.1f}"]
            body.append(line)
        out.append(f"\n== {phase} ==\n" + render(headers, body))
    out.append(
        "\nTimes are medians per call; +- is half the min-max range relative to the median.\n"
        "GB/s = bytes an ideal kernel moves / time (forward: read x + write y; backward: "
        "read grad + saved tensor, write dx; fwd+bwd: both); %copy = that bandwidth as a "
        "fraction of torch.empty_like(x).copy_(x) timed in the same rounds; pf/call = "
        "fused_act's minor page faults per call (fresh pages of new outputs; see "
        "--steady-alloc).\n"
        "'vs X' = time of X / time of fused_act (above 1: fused_act is faster).")
    return "\n".join(out)


def saved_table(rows):
    """Bytes saved for backward, as multiples of the input's bytes, at the largest size."""
    label = _labels(rows)
    fwd = [r for r in rows if r["phase"] == "forward" and r["impl"] != "copy"]
    top = {}
    for r in fwd:
        top[label(r)] = max(top.get(label(r), 0), r["size"])
    largest = OrderedDict()
    for r in fwd:
        if r["size"] == top[label(r)]:
            largest.setdefault(label(r), {"size": r["size"]})[r["impl"]] = r
    impls = ["fused_act"] + [c for c in COMPETITORS
                             if any(c in v for v in largest.values())]
    body = []
    for key, v in largest.items():
        line = [key, fmt_size(v["size"])]
        for i in impls:
            r = v.get(i)
            line.append("-" if r is None or r["saved_bytes"] is None else
                        f"{r['saved_bytes'] / r['input_bytes']:.2f}x ({fmt_bytes(r['saved_bytes'])})")
        body.append(line)
    return ("\n== bytes saved for backward (multiple of the input's bytes) ==\n"
            + render(["op", "size"] + impls, body))


def mlp_table(mlp_rows, env):
    if not mlp_rows:
        return ""
    cuda = env["device"] == "cuda"
    headers = ["op", "modules", "torch steps/s", "fused steps/s", "speedup",
               "torch act mem", "fused act mem"]
    if cuda:
        headers += ["torch peak", "fused peak"]
    headers.append("same loss")
    body = []
    for m in mlp_rows:
        line = [m["op"], f"{m['torch_module']} -> {m['fused_modules'] or '(none)'}",
                f"{m['torch_steps_per_s']:.1f}", f"{m['fused_act_steps_per_s']:.1f}",
                fmt_ratio(m["fused_act_steps_per_s"] / m["torch_steps_per_s"]),
                fmt_bytes(m["torch_saved_bytes"]), fmt_bytes(m["fused_act_saved_bytes"])]
        if cuda:
            line += [fmt_bytes(m.get("torch_peak_bytes")), fmt_bytes(m.get("fused_act_peak_bytes"))]
        line.append("yes" if m["loss_match"] else "NO")
        body.append(line)
    note = ("act mem = bytes autograd saves for backward in one forward (parameters "
            "excluded), counted with saved_tensors_hooks")
    if cuda:
        note += "; peak = torch.cuda.max_memory_allocated over one training step"
    else:
        note += "; on CPU it stands in for peak memory, which torch does not track there"
    m0 = mlp_rows[0]
    return (f"\n== MLP {m0['widths']}, batch {m0['batch']}, SGD, cross-entropy: training "
            f"steps/s (median), torch modules vs fused_act.convert() ==\n"
            + render(headers, body, align="ll" + "r" * (len(headers) - 2)) + f"\n{note}")


def models_table(model_rows, env):
    if not model_rows:
        return ""
    cuda = env["device"] == "cuda"
    variants = [v for v in ("torch", "fused_act", "compiled")
                if any(f"{v}_steps_per_s" in m for m in model_rows)]
    headers = ["model"] + [f"{v} steps/s" for v in variants]
    headers += ["fused/torch"] + (["fused/compiled"] if "compiled" in variants else [])
    headers += ["torch act mem", "fused act mem"]
    if cuda:
        headers += [f"{v} peak" for v in variants]
    headers += ["compile s", "same loss"]
    body = []
    for m in model_rows:
        sps = {v: m.get(f"{v}_steps_per_s") for v in variants}
        line = [m["model"]] + [f"{sps[v]:.2f}" if sps[v] else "-" for v in variants]
        line.append(fmt_ratio(sps["fused_act"] / sps["torch"]))
        if "compiled" in variants:
            line.append(fmt_ratio(sps["fused_act"] / sps["compiled"]) if sps["compiled"]
                        else "-")
        line += [fmt_bytes(m["torch_saved_bytes"]), fmt_bytes(m["fused_act_saved_bytes"])]
        if cuda:
            line += [fmt_bytes(m.get(f"{v}_peak_bytes")) for v in variants]
        line += [f"{m['compile_s']:.1f}" if m.get("compile_s") is not None else "-",
                 "yes" if m["loss_match"] else "NO"]
        body.append(line)
    notes = "\n".join(f"  {m['model']}: {m['description']}; fused_act modules: "
                      f"{m['fused_modules'] or '(none)'}" for m in model_rows)
    return ("\n== end to end: training steps/s (median, SGD), torch.nn vs fused_act.convert() "
            "vs torch.compile of the torch model ==\n"
            + render(headers, body, align="l" + "r" * (len(headers) - 1)) + "\n" + notes
            + "\nact mem = bytes saved for backward by one forward (parameters excluded); "
            "compile s = the compiled model's first training step")


def tables(rows, mlp_rows, env, model_rows=()):
    parts = [kernel_tables(rows), saved_table(rows), mlp_table(mlp_rows, env),
             models_table(model_rows, env)]
    bad = sorted({(r["op"], r["impl"]) for r in rows if r.get("agrees_with_torch") is False})
    if bad:
        parts.append("\nWARNING: outputs or gradients differ from torch's beyond the dtype "
                     "tolerance for: " + ", ".join(f"{o}/{i}" for o, i in bad))
    if env.get("compile_time_s"):
        parts.append("\ntorch.compile, compile time = first forward+backward of each "
                     "per-shape compilation (s), not in any figure above:\n  " + "\n  ".join(
                         f"{k}: " + ", ".join(f"{fmt_size(int(n))} {v:.1f}"
                                              for n, v in per.items())
                         for k, per in env["compile_time_s"].items()))
    return "\n".join(p for p in parts if p)


# ---------------------------------------------------------------- files

def write_files(out_dir, env, rows, mlp_rows, plot=True, model_rows=()):
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{env['device']}-{env['dtype']}")
    paths = []

    with open(stem + ".json", "w") as f:
        json.dump({"environment": env, "kernels": rows, "mlp": mlp_rows,
                   "models": list(model_rows)}, f, indent=1)
    paths.append(stem + ".json")

    if rows:
        with open(stem + ".csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        paths.append(stem + ".csv")
    if mlp_rows:
        fields = list(OrderedDict((k, None) for m in mlp_rows for k in m))
        with open(stem + "-mlp.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(mlp_rows)
        paths.append(stem + "-mlp.csv")

    if model_rows:
        fields = list(OrderedDict((k, None) for m in model_rows for k in m))
        with open(stem + "-models.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(model_rows)
        paths.append(stem + "-models.csv")

    if plot and rows:
        paths += plot_files(stem, env, rows)
    return paths


def _legend(fig, axes):
    """One legend for the figure, right of the plots."""
    handles, labels = axes[0][0].get_legend_handles_labels()
    for row in axes:
        for ax in row:
            h, lb = ax.get_legend_handles_labels()
            if len(lb) > len(labels):
                handles, labels = h, lb
    top = 1 - 0.7 / fig.get_figheight()  # room for a two-line title
    fig.tight_layout(rect=(0, 0, 0.9, top))
    fig.legend(handles, labels, loc="center right", fontsize=9)


def plot_files(stem, env, rows):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    except ImportError:
        print("matplotlib is not installed: no plot written")
        return []
    idx = _index(rows)
    labels = list(OrderedDict((k[0], None) for k in idx))
    colors = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    present = [c for c in COMPETITORS if any(c in v for v in idx.values())]
    title = (f"fused_act on {env['device']} ({env['device_name']}), {env['dtype']}, "
             f"torch {env['torch_version']}")
    ratio_fmt = FuncFormatter(lambda v, _: f"{v:g}")

    def series(label, phase, impl, key):
        pts = [(size, impls[impl][key]) for (lb, size, ph), impls in idx.items()
               if lb == label and ph == phase and impl in impls
               and impls[impl][key] is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    def setup_axis(ax, x_label=True):
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        if x_label:
            ax.set_xlabel("elements")

    paths = []
    # 1. speed of fused_act relative to each competitor, per phase
    fig, axes = plt.subplots(len(present), len(PHASES), squeeze=False,
                             figsize=(5 * len(PHASES), 3.6 * len(present)), sharex=True)
    for i, comp in enumerate(present):
        for j, phase in enumerate(PHASES):
            ax = axes[i][j]
            for k, label in enumerate(labels):
                xs, ys = series(label, phase, comp, "fused_speedup")
                if xs:
                    ax.plot(xs, ys, marker="o", color=colors(k), label=label)
            ax.axhline(1.0, color="black", lw=0.8)
            setup_axis(ax, x_label=i == len(present) - 1)
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ratio_fmt)
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{phase}: time({comp}) / time(fused_act)", fontsize=10)
    _legend(fig, axes)
    fig.suptitle(title + "\nabove 1: fused_act is faster", fontsize=11)
    paths.append(stem + "-speedup.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 2. fraction of copy bandwidth: fused_act solid, torch dashed
    fig, axes = plt.subplots(1, len(PHASES), squeeze=False, figsize=(5 * len(PHASES), 4))
    for j, phase in enumerate(PHASES):
        ax = axes[0][j]
        for k, label in enumerate(labels):
            xs, ys = series(label, phase, "fused_act", "frac_copy")
            if xs:
                ax.plot(xs, ys, marker="o", color=colors(k), label=label)
            xs, ys = series(label, phase, "torch", "frac_copy")
            if xs:
                ax.plot(xs, ys, ls="--", marker=".", color=colors(k), alpha=0.7)
        ax.axhline(1.0, color="black", lw=0.8)
        setup_axis(ax)
        # A noisy outlier (a copy slowed down by another process) would flatten the rest.
        clipped = ax.get_ylim()[1] > FRAC_COPY_CLIP
        ax.set_ylim(0, min(ax.get_ylim()[1], FRAC_COPY_CLIP))
        ax.set_title(f"{phase}: bandwidth / copy bandwidth"
                     + (f" (clipped at {FRAC_COPY_CLIP:g})" if clipped else ""), fontsize=10)
    _legend(fig, axes)
    fig.suptitle(title + "\nsolid: fused_act, dashed: torch", fontsize=11)
    paths.append(stem + "-bandwidth.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
