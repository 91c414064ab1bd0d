"""Fits the erfc approximation behind the CPU kernels' GELU (csrc/cpu/simd.h, fa_normcdf_general).

    erfc(a) ~= t * exp(-a^2 + Q(2t - 1)),   t = 1 / (1 + C a),   a >= 0

Q is a polynomial of degree N.  t maps [0, inf) onto (0, 1], and log(erfc(a) / t) + a^2 is
smooth in t (log(C / sqrt(pi)) at t = 0, from erfc's asymptote), so one polynomial covers
every a: no intervals, no blends.  It is written in s = 2t - 1 in [-1, 1], where its
coefficients are small (below 0.7) and Horner's rounding errors stay small.  An absolute error
in Q is a relative error in erfc, so the coefficients are fitted for the least maximum
absolute error of Q on a dense grid of a in [0, A_END] (least squares, weights updated by
Lawson's iteration), then rounded to float32.

The rounded formula is then measured as the kernel evaluates it, in float32 (the division,
Estrin's scheme in s), for GELU(x) = x * Phi(x), Phi(x) = erfc(-x/sqrt(2))/2, on a grid of x in
[-13, 6]: the relative error of GELU, in units of 2^-23, against float64 (for x > 0 the kernel
forms 1 - erfc(x/sqrt(2))/2).  The exponent -x^2/2 + Q is taken exactly here: the kernel
carries x^2 as a float and its rounding error (an FMA gives it) into the exp's argument
reduction.  Without that, the float rounding of x^2, an absolute error of up to 2^-24 x^2/2
in the exponent, alone gives 2^-24 x^2/2 of relative error: 150 x 2^-23 at x = -13.

Run:  python tools/fit_erfc.py [N C]      (the kernel's: 9 0.5; Estrin's scheme needs N = 9)
"""
import math
import sys

import numpy as np

A_END = 9.3  # erfc(9.3) is below float32's smallest subnormal


def target(a):
    t = 1 / (1 + C * a)
    erfc = np.array([math.erfc(v) for v in a])
    return t, np.log(erfc / t) + a * a


def fit(n, iters=300, points=6000):
    k = np.arange(points)
    a = A_END * (1 - np.cos(np.pi * (k + 0.5) / points)) / 2
    a = np.concatenate([[0.0], a, [A_END]])
    t, q = target(a)
    V = (2 * t - 1)[:, None] ** np.arange(n + 1)
    w = np.ones_like(t)
    best = None
    for _ in range(iters):
        sw = np.sqrt(w)
        c, *_ = np.linalg.lstsq(V * sw[:, None], q * sw, rcond=None)
        err = np.abs(V @ c - q)
        if best is None or err.max() < best[0]:
            best = (err.max(), c)
        w = w * err
        w = w / w.sum()
    return best


def estrin32(c32, s):
    """Q(s) in float32 as the kernel evaluates it (Estrin's scheme: pairs, then powers)."""
    f = np.float32
    c = [f(v) for v in c32]
    s2 = (s * s).astype(f)
    s4 = (s2 * s2).astype(f)
    pair = [(c[k + 1] * s + c[k]).astype(f) for k in range(0, 10, 2)]
    low = (pair[0] + (s2 * pair[1]).astype(f)).astype(f)
    mid = (pair[2] + (s2 * pair[3]).astype(f)).astype(f)
    high = (mid + (s4 * pair[4]).astype(f)).astype(f)
    return (low + (s4 * high).astype(f)).astype(f)


def measure(c32):
    x = np.linspace(-13, 6, 400001).astype(np.float32)
    a = (np.abs(x) * np.float32(0.70710678)).astype(np.float32)
    t = (np.float32(1) / (np.float32(1) + np.float32(C) * a)).astype(np.float32)
    q = estrin32(c32, (np.float32(2) * t - np.float32(1)).astype(np.float32))
    e = np.exp(-(x.astype(np.float64) ** 2) / 2 + q.astype(np.float64)).astype(np.float32)
    h = (np.float32(0.5) * t * e).astype(np.float32)
    phi = np.where(x < 0, h, np.float32(1) - h).astype(np.float32)
    y = (x * phi).astype(np.float32)
    truth = np.array([float(v) * 0.5 * math.erfc(-float(v) / math.sqrt(2)) for v in x])
    ok = np.abs(truth) > 1e-37
    for lo, hi in ((-13, -4), (-4, -1), (-1, 0), (0, 1), (1, 6)):
        m = ok & (x >= lo) & (x < hi)
        r = np.abs(y[m] - truth[m]) / np.abs(truth[m]) / 2.0 ** -23
        print(f"  x in [{lo:3}, {hi:2}): max relative error {r.max():5.2f} x 2^-23")
    return (np.abs(y[ok] - truth[ok]) / np.abs(truth[ok])).max() / 2.0 ** -23


if __name__ == "__main__":
    N = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    C = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
    err, c = fit(N)
    print(f"degree {N}, C = {C}: max |Q error| {err:.3g} (relative error of erfc) before rounding")
    c32 = c.astype(np.float32)
    print("coefficients, s^0 first:", ", ".join(float(v).hex() for v in c32))
    print(f"rounded formula in float32: max relative error of GELU {measure(c32):.2f} x 2^-23")
