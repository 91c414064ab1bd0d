// The interface between the CPU operator code (compiled for the baseline instruction
// set, with torch headers) and the SIMD kernels, which are compiled once per instruction
// set in their own translation units (capability_*.cpp) and chosen at run time.  Only
// plain pointers cross it, so those units include no torch header.
#pragma once
#include <stdint.h>

#include "../activations.h"

namespace fused_act {
namespace cpu {

enum class Storage : int { f32, f16, bf16 };

struct KernelTable {
  const char* name;
  // y[i] = forward(x[i], p)
  void (*forward)(Act act, Storage st, const void* x, void* y, int64_t n, float p);
  // dx[i] = backward(g[i], s[i], p)
  void (*backward)(Act act, Storage st, const void* g, const void* s, void* dx, int64_t n,
                   float p, bool saved_is_output);
  // The per-weight activations (prelu, trainable swish): dx as above from the saved
  // input, and, when need_weight_grad, returns the sum of the weight-gradient terms.
  double (*backward_weighted)(Act act, Storage st, const void* g, const void* x, void* dx,
                              int64_t n, float p, bool need_weight_grad);
};

extern const KernelTable kernels_avx512;
extern const KernelTable kernels_avx2;
extern const KernelTable kernels_baseline;

}  // namespace cpu
}  // namespace fused_act
