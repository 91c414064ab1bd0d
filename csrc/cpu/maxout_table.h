// The interface between the CPU maxout operator (cpu/maxout.cpp) and its SIMD kernels
// (cpu/maxout_impl.h, compiled once per instruction set like the other kernels).
#pragma once
#include <stdint.h>

#include "kernel_table.h"

namespace fused_act {
namespace cpu {

// `rows` consecutive rows of one [pieces, inner] input slice each (maxout.h's layout,
// outer and groups merged), the columns [c0, c1) of each: x, g, t, dx point at the first
// row's input slice, y, out, mask at its output row (mask: one word of mask_bytes per
// output, pieces <= 32).  Rows with inner == 1 take only pieces 2, 4 or 8 (the groups
// are then deinterleaved in registers); other pieces with inner == 1 are the caller's.
struct MaxoutKernelTable {
  // y = max over the pieces; mask (when not null) = the bits of the pieces equal to y.
  // nt: y's whole vectors that start aligned go out with non-temporal stores (the caller
  // fences, see kernel_table.h).
  void (*forward)(Storage st, int mask_bytes, const void* x, void* y, void* mask, int64_t rows,
                  int64_t pieces, int64_t inner, int64_t c0, int64_t c1, bool nt);
  // dx = (g / count) * bit, for every piece.
  void (*backward)(Storage st, int mask_bytes, const void* g, const void* mask, void* dx,
                   int64_t rows, int64_t pieces, int64_t inner, int64_t c0, int64_t c1);
  // out = (sum of t over the set bits) / count.
  void (*gather)(Storage st, int mask_bytes, const void* t, const void* mask, void* out,
                 int64_t rows, int64_t pieces, int64_t inner, int64_t c0, int64_t c1);
};

extern const MaxoutKernelTable maxout_kernels_avx512;
extern const MaxoutKernelTable maxout_kernels_avx2;
extern const MaxoutKernelTable maxout_kernels_baseline;

}  // namespace cpu
}  // namespace fused_act
