// AVX2 + FMA + F16C build of the CPU kernels.  One vector is one 256-bit register: GCC
// lowers vector types wider than the target's registers to slow code.
#if defined(__x86_64__) || defined(_M_X64)
// Headers with inline code come first, compiled for the baseline target.
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmath>
#include <utility>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx2,fma,f16c")
#endif
#define FA_HAVE_F16C 1
#define FA_HAVE_AVX2 1
#define FA_CPU_CAP avx2
#define FA_VEC_BYTES 32
#include "kernels_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
