// The interface between the CPU operator code (compiled for the baseline instruction
// set, with torch headers) and the SIMD kernels, which are compiled once per instruction
// set in their own translation units (capability_*.cpp) and chosen at run time.  Only
// plain pointers cross it, so those units include no torch header.
#pragma once
#include <stdint.h>

#include "../activations.h"
#include "../gated.h"

namespace fused_act {
namespace cpu {

enum class Storage : int { f32, f16, bf16 };

// Elements per stretch of a weight pattern (KernelTable::forward_weights): the pattern
// slice a stretch reads stays in L1 next to the streamed data.
constexpr int64_t kWeightPiece = 1024;

struct KernelTable {
  const char* name;
  // Every kernel that writes an output takes `nt`: write it with non-temporal stores
  // (see nontemporal_output; the output must not alias an input).  The caller ends each
  // thread's share of such calls with nontemporal_fence().
  // y[i] = forward(x[i], p, q)
  void (*forward)(Act act, Storage st, const void* x, void* y, int64_t n, float p, float q,
                  bool nt);
  // dx[i] = backward(g[i], s[i], p, q)
  void (*backward)(Act act, Storage st, const void* g, const void* s, void* dx, int64_t n,
                   float p, float q, bool saved_is_output, bool nt);
  // The per-weight activations (prelu, trainable swish): dx as above from the saved
  // input, and, when need_weight_grad, returns the sum of the weight-gradient terms.
  double (*backward_weighted)(Act act, Storage st, const void* g, const void* x, void* dx,
                              int64_t n, float p, bool need_weight_grad, bool nt);
  // The same with one weight per element from a repeating pattern: element i has the
  // weight w[(phase + i) % period], where w holds the pattern for phases
  // [0, period + kWeightPiece) (for weights that change every few elements: PReLU on
  // (N, C) inputs, small feature maps).  acc (same layout as w), when not null, gets the
  // weight-gradient term of each element added at its phase.
  void (*forward_weights)(Act act, Storage st, const void* x, void* y, const float* w,
                          int64_t period, int64_t phase, int64_t n, bool nt);
  void (*backward_weights)(Act act, Storage st, const void* g, const void* x, void* dx,
                           const float* w, float* acc, int64_t period, int64_t phase,
                           int64_t n, bool nt);
  // Softmax (log = false) or log-softmax over `rows` contiguous rows of n elements each
  // (../softmax.h): y = softmax(x) per row, and dx from the gradient g and the output y.
  // There, `nt` applies to rows of whole vectors that all start vector-aligned.
  void (*softmax_forward)(Storage st, bool log, const void* x, void* y, int64_t rows,
                          int64_t n, bool nt);
  void (*softmax_backward)(Storage st, bool log, const void* g, const void* y, void* dx,
                           int64_t rows, int64_t n, bool nt);
  // The same along a dim of n values at stride `inner` (not the last dim), for the
  // columns [c0, c1) of one slice starting at x (g, y, dx).
  void (*softmax_forward_inner)(Storage st, bool log, const void* x, void* y, int64_t n,
                                int64_t inner, int64_t c0, int64_t c1);
  void (*softmax_backward_inner)(Storage st, bool log, const void* g, const void* y, void* dx,
                                 int64_t n, int64_t inner, int64_t c0, int64_t c1);
  // Gated ops (../gated.h) on n elements of one row: y[i] = act(u[i]) * v[i] from its
  // halves a, b ((u, v) = (b, a) when the gate is the second half, else (a, b)); and
  // da, db from the incoming gradient g and the halves.  With nt, da and db use
  // non-temporal stores only where they sit at the same offset from a vector boundary.
  void (*gated_forward)(Gate gate, Storage st, const void* a, const void* b, void* y,
                        int64_t n, bool nt);
  void (*gated_backward)(Gate gate, Storage st, const void* g, const void* a, const void* b,
                         void* da, void* db, int64_t n, bool nt);
};

extern const KernelTable kernels_avx512;
extern const KernelTable kernels_avx2;
extern const KernelTable kernels_baseline;

// The table in use (set_cpu_capability); defined in elementwise.cpp.
const KernelTable* active_kernels();
// The table for memory-bound loops on storage st: the active one, with 256-bit vectors in
// place of 512-bit ones for float32 (see elementwise.cpp).
const KernelTable* streaming_kernels(Storage st);

// Whether a kernel that reads and writes `traffic_bytes` in all, split by at::parallel_for
// into at most `tasks` pieces, should write its output with non-temporal stores: when that
// traffic exceeds nontemporal_threshold() (by default 3/4 of the cache the threads that
// run it get: their share of each cache level, see elementwise.cpp), the output would
// leave the cache before anyone reads it, and a non-temporal store saves the read of each
// output line that a cached store makes first: a third of the traffic of a one-in-one-out
// kernel.  Given the output's memory (out, out_bytes), the default rule also keeps cached
// stores for an output whose pages are still untouched (fresh from the OS, see
// elementwise.cpp).
bool nontemporal_output(int64_t traffic_bytes, int64_t tasks, const void* out = nullptr,
                        int64_t out_bytes = 0);

// Before a kernel writes `out` (`bytes` long): when the output is large (4 MiB or more) and
// its pages have never been touched (see elementwise.cpp), faults them all in first, each
// thread its share of the pages in one system call, instead of one page fault at a time in
// the middle of the kernel's vector loop.  Nothing else about the memory changes.
void prefault_output(void* out, int64_t bytes);

// Orders the non-temporal stores this thread made before its later stores (an sfence on
// x86; nothing where the kernels make none): called once at the end of a thread's share
// of work, before another thread may read the output.
void nontemporal_fence();

}  // namespace cpu
}  // namespace fused_act
