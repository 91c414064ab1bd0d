"""The steady-allocator option of bench/run.py (--steady-alloc).

With glibc's defaults a large allocation (above the mmap threshold, which glibc raises
up to 32 MiB as large blocks are freed) is a fresh mmap: every page of a new output is
faulted in and zeroed by the kernel on first touch, and freeing it returns the pages to
the OS.  Every implementation pays it, per call, on top of its own work.  ``steady()``
makes glibc serve every block from its heap and keep freed memory (no mmap, no trim), so
a call reuses pages that are already mapped, as a long-running training process does
once its caching pattern has settled.  The same, without code, from the shell:

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 python bench/run.py

Call it before torch is imported: it changes how later allocations are served.
"""
import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes a C int


def steady():
    """Sets glibc's mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2 GiB - 1).
    Returns a description for the results, or raises RuntimeError where it cannot."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as err:
        raise RuntimeError(f"--steady-alloc needs glibc's mallopt: {err}") from None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_MAX, 0) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        raise RuntimeError("--steady-alloc: glibc refused mallopt(M_MMAP_MAX / "
                           "M_TRIM_THRESHOLD)")
    return {"mallopt": {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": TRIM_THRESHOLD}}
