// Baseline build of the CPU kernels: whatever the compiler targets by default (SSE2 on
// x86-64, NEON on arm64), with half conversions done in integer arithmetic.
#define FA_CPU_CAP baseline
#define FA_VEC_BYTES 16
#include "kernels_impl.h"
