"""Fits the rational behind the CPU kernels' fast GELU(erf) path (csrc/cpu/simd.h, normcdf_tail_fast).

    Phi(-u) = exp(-u^2/2) * R(u),   R(u) = erfcx(u / sqrt(2)) / 2 ~= P(u) / Q(u),   u = |x|

R is entire and smooth on [0, inf): 1/2 at 0, falling like 1/(u sqrt(2 pi)).  A rational of
degree (4, 5) in u covers [0, 14.5] to about 6e-9 relative, and every coefficient of P and Q
comes out positive, so for u >= 0 float32 evaluation adds no cancellation.  The fit is a
linearised least-squares fit of the relative error (P - R Q) / (R Q_prev) on Chebyshev points,
with Lawson's reweighting towards the minimax error; the kernel's coefficients are the result
rounded to float32 (the constant term of Q is 1).

The rounded rational is then measured as the kernel evaluates it (float32, the pairs then u^2
and u^4), against float64, on a grid of u: the largest relative error of R, in units of 2^-23.

Run:  python tools/fit_normcdf.py [M N A]        (the kernel's: 4 5 14.5)
"""
import sys

import numpy as np
from scipy.special import erfcx


def target(u):
    return 0.5 * erfcx(u / np.sqrt(2.0))


def fit(m, n, a, points=6000, iterations=300):
    k = np.arange(points)
    u = np.concatenate([[0.0], a * (1 - np.cos(np.pi * (k + 0.5) / points)) / 2, [a]])
    y = target(u)
    scale = max(a, 1.0)
    s = u / scale
    vp = s[:, None] ** np.arange(m + 1)
    vq = s[:, None] ** np.arange(1, n + 1)
    q_prev = np.ones_like(u)
    w = np.ones_like(u)
    best = None
    for _ in range(iterations):
        lhs = np.hstack([vp, -y[:, None] * vq]) / (y * q_prev)[:, None]
        sw = np.sqrt(w)
        c, *_ = np.linalg.lstsq(lhs * sw[:, None], sw / q_prev, rcond=None)
        p, q = c[: m + 1], c[m + 1:]
        qv = 1 + vq @ q
        err = np.abs((vp @ p) / qv - y) / y
        if best is None or err.max() < best[0]:
            best = (err.max(), p, q)
        q_prev = qv
        w = w * err
        w /= w.sum()
    e, p, q = best
    return (e, p / scale ** np.arange(m + 1),
            np.concatenate([[1.0], q / scale ** np.arange(1, n + 1)]))


def as_float32_eval(p, q, u):
    """P(u)/Q(u) in float32, P and Q by pairs then powers of u (the kernel's order)."""
    f = np.float32
    u = u.astype(f)
    p, q = p.astype(f), q.astype(f)

    def poly(c):
        pairs = [c[i] + (c[i + 1] * u if i + 1 < len(c) else f(0)) for i in range(0, len(c), 2)]
        u2 = u * u
        u4 = u2 * u2
        out = pairs[0] + u2 * pairs[1]
        return out + u4 * pairs[2] if len(pairs) > 2 else out

    return poly(p) / poly(q)


def main():
    m, n, a = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])) if len(sys.argv) > 3 \
        else (4, 5, 14.5)
    e, p, q = fit(m, n, a)
    print(f"degree ({m}, {n}) on [0, {a}]: max relative error {e:.3g} before rounding")
    print("P:", ", ".join(float(np.float32(c)).hex() for c in p))
    print("Q:", ", ".join(float(np.float32(c)).hex() for c in q))
    u = np.linspace(0, a, 200001)
    r = as_float32_eval(p, q, u).astype(np.float64)
    print(f"rounded, float32 evaluation: {np.max(np.abs(r / target(u) - 1)) / 2.0 ** -23:.2f}"
          " x 2^-23 relative")


if __name__ == "__main__":
    main()
