"""`python -m fused_act`: what this build of fused_act is and can run on."""
import sys

import fused_act


def main() -> int:
    b = fused_act.backends()
    cuda = "no CUDA kernels"
    if b["cuda_built"]:
        archs = ", ".join(b["cuda_gencode"] or []) or b["cuda_arch_list"] or "unknown"
        cuda = (f"CUDA toolkit {b['cuda_toolkit'] or 'unknown'}, compiled for {archs}; "
                f"{'a GPU is' if b['cuda_available'] else 'no GPU'} available here")
    rows = [
        ("fused_act", f"{fused_act.__version__} ({fused_act.__file__})"),
        ("built against", f"torch {b['torch_built_against'] or 'unknown'}"
                          f"{' (debug build)' if b['debug_build'] else ''}"),
        ("running with", f"torch {b['torch_running']}, Python {sys.version.split()[0]}"),
        ("CPU kernels", f"{', '.join(b['cpu_kernels'] or ['unknown'])} compiled in; "
                        f"in use: {b['cpu_capability']}"),
        ("CUDA", cuda),
        ("non-temporal", f"stores above {b['cpu_nontemporal_threshold']} bytes per call"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
