// AVX-512 build of the CPU kernels (chosen at run time when the CPU has AVX-512 F/BW/VL/DQ).
#if defined(__x86_64__) || defined(_M_X64)
// GCC's own AVX-512 intrinsics (_mm512_min_ps, ...) pass _mm512_undefined_ps() as their
// unused merge operand, which -Wuninitialized reports at every inlined use (the state that
// applies is the one where the header is included).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// Headers with inline code come first, compiled for the baseline target.
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmath>
#include <utility>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif
#define FA_HAVE_F16C 1
#define FA_HAVE_AVX512 1
#define FA_CPU_CAP avx512
#define FA_VEC_BYTES 64
#include "kernels_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
