"""Fits the rational approximation of tanh used by the CPU kernels (csrc/cpu/simd.h).

    tanh(x) ~= min(1, x * P(x^2) / Q(x^2))   for 0 <= x <= CLAMP,   P(0) = Q(0) = 1

P and Q are polynomials in t = x^2 of degrees M and N.  The coefficients are chosen for
the least maximum relative error on [0, FIT_END] (a linearized rational fit on a dense grid,
the weights updated by Lawson's iteration until the error equioscillates), then rounded to
float32.  The relative error of the rounded formula is then measured over every float in
[2^-12, CLAMP], evaluated in float32 in the kernel's order of operations (Horner in t), with
fused multiply-adds (AVX2, AVX-512) and without (SSE2).  Inputs beyond CLAMP are clamped to
it, where the formula exceeds 1 and is capped: +-inf give exactly +-1.

With P(0) = Q(0) = 1 a tiny |x| gives exactly x (P and Q round to 1), subnormals included.

Run:  python tools/fit_tanh.py [M N FIT_END]      (the kernel's: 4 4 9.02)
"""
import sys

import numpy as np


def fit(m, n, clamp, iters=400, points=20000):
    """(max relative error, P, Q) for tanh on [0, clamp], coefficients of t^0 first."""
    # Chebyshev-distributed points in x on (0, clamp]; t = x^2 scaled to u = t / clamp^2.
    k = np.arange(points)
    x = clamp * (1 - np.cos(np.pi * (k + 0.5) / points)) / 2 + 1e-6
    x = np.concatenate([x, [clamp]])
    t = x * x
    s = clamp * clamp
    u = t / s
    f = np.tanh(x) / x  # the function P/Q approximates, f(0) = 1
    # Unknowns: p_1..p_m, q_1..q_n (p_0 = q_0 = 1).  Residual of the linearized problem:
    # (P(u) - f Q(u)) / (f Qprev(u))  ~  relative error of P/Q.
    A = np.concatenate([u[:, None] ** np.arange(1, m + 1), -f[:, None] * u[:, None] ** np.arange(1, n + 1)], axis=1)
    b = f - 1.0
    w = np.ones_like(u)
    qprev = np.ones_like(u)
    best = None
    for _ in range(iters):
        scale = np.sqrt(w) / (f * qprev)
        sol, *_ = np.linalg.lstsq(A * scale[:, None], b * scale, rcond=None)
        p = np.concatenate([[1.0], sol[:m]])
        q = np.concatenate([[1.0], sol[m:]])
        P = np.polynomial.polynomial.polyval(u, p)
        Q = np.polynomial.polynomial.polyval(u, q)
        err = P / Q / f - 1
        emax = np.abs(err).max()
        if best is None or emax < best[0]:
            best = (emax, p.copy(), q.copy())
        qprev = Q
        w = w * np.abs(err)
        w /= w.sum()
    emax, p, q = best
    # back to coefficients of t: c_k / s^k
    return emax, p / s ** np.arange(m + 1), q / s ** np.arange(n + 1)


def horner32(c, t):
    """Horner's scheme in float32 with a fused multiply-add per step (emulated: the
    product of two floats is exact in float64, the sum rounded once more to float32)."""
    r = np.full_like(t, np.float32(c[-1]))
    for a in c[-2::-1]:
        r = (r.astype(np.float64) * t.astype(np.float64) + np.float64(np.float32(a))).astype(np.float32)
    return r


def horner32_nofma(c, t):
    """The same without fused multiply-adds (the baseline SSE2 kernels)."""
    r = np.full_like(t, np.float32(c[-1]))
    for a in c[-2::-1]:
        r = (r * t + np.float32(a)).astype(np.float32)
    return r


def evaluate(p32, q32, x, horner):
    t = x * x
    return x * horner(p32, t) / horner(q32, t)


CLAMP = 10.0  # |x| is clamped here before the rational is evaluated


def main():
    m, n, fit_end = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])) if len(sys.argv) > 3 else (4, 4, 9.02)
    emax, p, q = fit(m, n, fit_end)
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    print(f"M={m} N={n} fitted on [0, {fit_end}]: max relative error {emax:.3g} (float64 coefficients)")
    # Past the end of the fit x P/Q grows above 1 (it is capped to 1): at the input clamp it
    # must exceed 1 by far more than the rounding error, so that +-inf give exactly +-1.
    r64 = CLAMP * np.polynomial.polynomial.polyval(CLAMP ** 2, p32.astype(np.float64)) / \
        np.polynomial.polynomial.polyval(CLAMP ** 2, q32.astype(np.float64))
    print(f"  at the input clamp {CLAMP}: x P/Q - 1 = {r64 - 1:.3g} = {(r64 - 1) / 2**-23:.1f} x 2^-23")
    # Every float in [2^-12, CLAMP] (below, P and Q round to 1 and the result is x).
    lo, hi = np.float32(2.0 ** -12).view(np.int32), np.float32(CLAMP).view(np.int32)
    bits = np.arange(lo, hi + 1, dtype=np.int32)
    for name, horner in (("FMA", horner32), ("no FMA", horner32_nofma)):
        w = 0.0
        for chunk in np.array_split(bits, 64):
            x = chunk.view(np.float32)
            y = np.minimum(evaluate(p32, q32, x, horner), np.float32(1))
            w = max(w, float(np.abs(y / np.tanh(x.astype(np.float64)) - 1).max()))
        at_clamp = evaluate(p32, q32, np.array([CLAMP], np.float32), horner)[0]
        print(f"  float32 evaluation ({name}), output capped at 1: max relative error "
              f"{w:.3g} = {w / 2**-23:.2f} x 2^-23 over every float in [2^-12, {CLAMP}]; "
              f"at the clamp {float(at_clamp)!r} before the cap")
    for name, c in (("P", p32), ("Q", q32)):
        print(f"  {name} (t^0 first): " + ", ".join(float(v).hex() for v in c))
        print(f"     " + ", ".join(f"{float(v):.9g}" for v in c))


if __name__ == "__main__":
    main()
