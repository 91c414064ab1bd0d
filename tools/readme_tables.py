"""Markdown tables for the README from the JSON file of one `bench/run.py` run.

    python tools/readme_tables.py bench/results/cpu-float32.json --sizes 2^20,2^22
    python tools/readme_tables.py RUN.json --style targets      # with fused_act's spread
    python tools/readme_tables.py RUN.json --below               # rows under 1.0x torch
    python tools/readme_tables.py ONE.json TWO.json --style ratios --labels "1 thread,2 threads"

default: per size, one row per op: forward and backward time of fused_act and torch, and
fused_act's speedup against torch and every other competitor of the run (composite,
compiled, onnxruntime).  targets: fused_act's time with its spread (half the min-max
range of its samples), torch's, and the ratio.  --below: every (op, size, phase) whose
median ratio is under 1.0x, with both spreads.  ratios: one row per (op, size), a cell per
(run, phase): torch's time / fused_act's and fused_act's spread, for runs of the same
sizes in other configurations (threads, instruction sets).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from report import _index, fmt_time, spread  # noqa: E402

COMPETITORS = (("composite", "composite"), ("compiled", "compiled"), ("onnxruntime", "ORT"))


def parse_size(text):
    text = text.strip()
    if text.startswith("2^"):
        return 2 ** int(text[2:])
    return int(text)


def size_label(n):
    k = n.bit_length() - 1
    return f"2^{k}" if n == 1 << k else str(n)


def ratio(impls, other):
    if other not in impls or "fused_act" not in impls:
        return None
    return impls[other]["median_s"] / impls["fused_act"]["median_s"]


def cell(r):
    return "-" if r is None else f"{r:.2f}x"


def default_table(idx, size, phases):
    present = {impl for (_, s, _), impls in idx.items() if s == size for impl in impls}
    others = [(k, name) for k, name in COMPETITORS if k in present]
    head, rule = ["op"], ["---"]
    for phase in phases:
        cols = [f"{phase}: fused_act", "torch", "vs torch"]
        cols += [f"vs {name}" for k, name in others
                 if any(k in impls for (_, s, p), impls in idx.items() if s == size and p == phase)]
        head += cols
        rule += ["---"] * len(cols)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(rule) + "|"]
    labels = [lab for (lab, s, p) in idx if s == size and p == phases[0]]
    for lab in labels:
        cells = [lab]
        for phase in phases:
            impls = idx.get((lab, size, phase), {})
            f = impls.get("fused_act")
            t = impls.get("torch")
            cells += [fmt_time(f["median_s"]) if f else "-", fmt_time(t["median_s"]) if t else "-",
                      cell(ratio(impls, "torch"))]
            for k, _ in others:
                if any(k in i for (_, s, p), i in idx.items() if s == size and p == phase):
                    cells.append(cell(ratio(impls, k)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_table(idx, size, phases):
    head = ["op"]
    for phase in phases:
        head += [f"{phase} fused_act", "torch", "**vs torch**"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    labels = [lab for (lab, s, p) in idx if s == size and p == phases[0]]
    for lab in labels:
        cells = [lab]
        for phase in phases:
            impls = idx.get((lab, size, phase), {})
            f, t = impls.get("fused_act"), impls.get("torch")
            if not f or not t:
                cells += ["-", "-", "-"]
                continue
            cells += [f"{fmt_time(f['median_s'])} ±{spread(f) * 100:.0f}%",
                      fmt_time(t["median_s"]), cell(ratio(impls, "torch"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios_table(idxs, labels, sizes, phases):
    head = ["op", "elements"] + [f"{phase}, {lab}" for lab in labels for phase in phases]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    ops = [lab for (lab, s, p) in idxs[0] if s == sizes[0] and p == phases[0]]
    for op in ops:
        for size in sizes:
            cells = [op, size_label(size)]
            for idx in idxs:
                for phase in phases:
                    impls = idx.get((op, size, phase), {})
                    r = ratio(impls, "torch")
                    cells.append("-" if r is None else
                                 f"{r:.2f}x ±{spread(impls['fused_act']) * 100:.0f}%")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def below(idx):
    out = []
    for (lab, size, phase), impls in idx.items():
        r = ratio(impls, "torch")
        if r is not None and r < 1.0:
            out.append(f"{lab} {size_label(size)} {phase}: {r:.2f}x (fused_act ±"
                       f"{spread(impls['fused_act']) * 100:.0f}%, torch ±"
                       f"{spread(impls['torch']) * 100:.0f}%)")
    total = sum(1 for impls in idx.values() if ratio(impls, "torch") is not None)
    return f"{len(out)} of {total} rows below 1.0x torch\n" + "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("json", nargs="+")
    p.add_argument("--sizes", default=None, help="comma-separated, e.g. 2^20,2^22 (default: all)")
    p.add_argument("--phases", default="forward,backward")
    p.add_argument("--style", choices=("default", "targets", "ratios"), default="default")
    p.add_argument("--labels", default=None, help="ratios: one label per JSON file")
    p.add_argument("--below", action="store_true")
    a = p.parse_args()
    idxs = []
    for path in a.json:
        with open(path) as f:
            idxs.append(_index(json.load(f)["kernels"]))
    idx = idxs[0]
    if a.below:
        for path, one in zip(a.json, idxs):
            print(f"{path}: {below(one)}")
        return
    sizes = ([parse_size(s) for s in a.sizes.split(",")] if a.sizes
             else sorted({s for (_, s, _) in idx}))
    phases = a.phases.split(",")
    if a.style == "ratios":
        labels = a.labels.split(",") if a.labels else [os.path.basename(p) for p in a.json]
        print(ratios_table(idxs, labels, sizes, phases))
        return
    for size in sizes:
        print(f"{size_label(size)} elements:\n")
        table = default_table if a.style == "default" else targets_table
        print(table(idx, size, phases))
        print()


if __name__ == "__main__":
    main()
