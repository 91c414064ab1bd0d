"""Fits the tables behind the CPU kernels' GELU(erf) forward (csrc/cpu/simd.h, normcdf_table).

For u = |x| < 3.75 the forward takes Phi(-u) from one of N polynomials, chosen by
i = round(K u), K = N/4 (a lane-wise table lookup, one permute per coefficient):

    Phi(-u) ~= C_i(t),   t = K u - i in [-1/2, 1/2],   i = 0 .. N-1,

with N = 8 polynomials of degree 6 on intervals of width 1/2 for AVX2 (a 256-bit permute
picks from 8 entries) and N = 16 of degree 5 on intervals of width 1/4 for AVX-512 (a
512-bit permute picks from 16: one coefficient, one permute and one multiply-add fewer), and
GELU(x) = max(x, 0) - u Phi(-u) (one multiply-add: x Phi(-u) below 0, x - x Phi(-u) above).
The kernel evaluates C_i at s = u - i/K = t/K with the coefficient of t^k scaled by K^k,
which gives the same bits as evaluating at t (every step is scaled by a power of two).  The
interval width is a power of two so that s is exact (u and i/K are within a factor of two
of each other).  Each C_i is a polynomial of degree D in t fitted for the least maximum
relative error of Phi(-u) (Lawson's reweighting of a least-squares fit on Chebyshev points),
then rounded to float32 one coefficient at a time from the constant up, the later ones
refitted after each rounding.

The rounded table is measured as the kernel evaluates it (float32 Horner with fused
multiply-adds) on every float in [2^-12, 3.75) that a stride of S floats hits, plus the ends
of each interval: the largest relative error of GELU against float64, in units of 2^-23, on
[-3.75, 0] and [0, 3.75].

Run:  python tools/fit_normcdf_table.py [D S N]   (the kernels': 6 97 8 and 5 97 16)
"""
import sys

import numpy as np
from scipy.special import ndtr

ENTRIES = 8  # or 16 (the third argument)
RANGE = 3.75  # the table covers u < 3.75
K = ENTRIES // 4  # intervals of width 1/K: i = round(K u)


def target(u):
    return ndtr(-u)


def interval(i):
    """The range of t = K u - i that entry i serves (u in [0, RANGE))."""
    return (0.0 if i == 0 else -0.5), min(0.5, K * RANGE - i)


def lawson_fit(t, y, fixed, d, iterations=200):
    """Coefficients k >= len(fixed) of a degree-d polynomial in t minimising max |p - y| / y."""
    k0 = len(fixed)
    known = sum(c * t ** k for k, c in enumerate(fixed))
    v = t[:, None] ** np.arange(k0, d + 1)
    w = np.ones_like(t)
    best = None
    for _ in range(iterations):
        sw = np.sqrt(w) / y
        c, *_ = np.linalg.lstsq(v * sw[:, None], (y - known) * sw, rcond=None)
        err = np.abs(known + v @ c - y) / y
        if best is None or err.max() < best[0]:
            best = (err.max(), c)
        w = w * err
        w /= w.sum()
    return best


def fit_entry(i, d, points=4000):
    lo, hi = interval(i)
    k = np.arange(points)
    t = lo + (hi - lo) * (1 - np.cos(np.pi * (k + 0.5) / points)) / 2
    t = np.concatenate([[lo], t, [hi]])
    y = target((i + t) / K)
    coefs = []
    while len(coefs) <= d:
        err, c = lawson_fit(t, y, coefs, d)
        coefs.append(float(np.float32(c[0])))
    err = np.abs(sum(c * t ** k for k, c in enumerate(coefs)) - y) / y
    return coefs, err.max()


def fma32(a, b, c):
    return (a.astype(np.float64) * b + c).astype(np.float32)


def gelu32(x, table):
    """The kernel's evaluation, in float32 with fused multiply-adds."""
    f = np.float32
    x = x.astype(f)
    u = np.abs(x)
    i = np.rint(u * f(K)).astype(np.int64)
    s = (u - i.astype(f) * f(1.0 / K)).astype(f)
    d = table.shape[1] - 1
    scaled = (table * np.float32(K) ** np.arange(d + 1)).astype(f)  # exact
    h = scaled[i, d]
    for k in range(d - 1, -1, -1):
        h = fma32(h, s, scaled[i, k])
    return fma32(-u, h, np.where(x < 0, f(0), x))  # max(x, 0), -0 kept


def main():
    global ENTRIES, K
    d = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    stride = int(sys.argv[2]) if len(sys.argv) > 2 else 97
    ENTRIES = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    K = ENTRIES // 4
    table = np.zeros((ENTRIES, d + 1), np.float32)
    worst_fit = 0.0
    for i in range(ENTRIES):
        c, e = fit_entry(i, d)
        table[i] = c
        worst_fit = max(worst_fit, e)
    print(f"degree {d}: largest relative error of the rounded polynomials {worst_fit:.2e}")
    first = np.float32(2.0 ** -12).view(np.int32)
    last = np.float32(RANGE).view(np.int32) - 1
    bits = np.arange(first, last + 1, stride, dtype=np.int32)
    ends = np.array([(i + s * 0.5) / K for i in range(ENTRIES) for s in (-1, 1)], np.float32)
    ends = ends[(ends > 0) & (ends < RANGE)]
    near = (ends.view(np.int32)[:, None] + np.arange(-3, 4)).ravel()
    u = np.concatenate([bits, near]).view(np.float32)
    u = u[(u >= 2.0 ** -12) & (u < RANGE)]
    for name, x in (("[-3.75, 0]", -u), ("[0, 3.75]", u)):
        y = gelu32(x, table).astype(np.float64)
        ref = x.astype(np.float64) * ndtr(x.astype(np.float64))
        err = np.abs(y - ref) / np.abs(ref) / 2.0 ** -23
        print(f"GELU on {name}: largest relative error {err.max():.2f} x 2^-23 "
              f"({len(x)} points)")
    print(f"coefficients of s^k (row k of the kernel's table), entry i = round({K}u) across:")
    for k in range(d + 1):
        row = [float(np.float32(c * float(K) ** k)) for c in table[:, k]]
        print("  {" + ", ".join(c.hex().replace("0000000p", "p") for c in row) + "},")


if __name__ == "__main__":
    main()
