"""Tolerances and comparisons shared by the tests."""
import torch

# float32/float64: compared with torch's own kernel in the same dtype, (rtol, atol).
TOLERANCES = {
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-12, 1e-14),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
}

# Unit roundoff * 2 (one ULP at worst) and the smallest subnormal of the low-precision dtypes.
_ULP = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}
_TINY = {torch.float16: 2.0 ** -24, torch.bfloat16: 2.0 ** -133}


def close(actual, expected, dtype=None, equal_nan=True, msg=""):
    dtype = dtype or expected.dtype
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=equal_nan,
                               msg=lambda m: f"{msg}\n{m}")


def within_rounding(actual, reference64, scale=None, msg=""):
    """Low-precision check against a float64 reference: the error may be one ULP of the
    result (the final rounding) plus, for a backward, one ULP of each saved value times
    the gradient it multiplies (`scale` = |grad| * (1 + |saved|)): the rounding of the
    saved tensor is the only other error a fused kernel computing in float makes."""
    dtype = actual.dtype
    eps, tiny = _ULP[dtype], _TINY[dtype]
    ref = reference64.to(torch.float64)
    # A finite reference beyond the dtype's range is the dtype's infinity.
    ref = torch.where(torch.isfinite(ref) & ~torch.isfinite(ref.to(dtype)), ref.to(dtype).double(),
                      ref)
    err = (actual.to(torch.float64) - ref).abs()
    bound = eps * ref.abs() + tiny
    if scale is not None:
        bound = bound + eps * scale.to(torch.float64)
    finite = torch.isfinite(ref)
    bad = finite & (err > bound)
    assert not bad.any(), (
        f"{msg}: {int(bad.sum())} elements beyond rounding error; worst err "
        f"{err[bad].max().item():.3g} at bound {bound[bad][err[bad].argmax()].item():.3g}")
    # Non-finite references must be reproduced exactly (inf, -inf, nan).
    a, r = actual[~finite].to(torch.float64), ref[~finite]
    assert torch.equal(torch.isnan(a), torch.isnan(r)), f"{msg}: NaN pattern differs"
    assert torch.equal(a[~torch.isnan(a)], r[~torch.isnan(r)]), f"{msg}: infinities differ"
