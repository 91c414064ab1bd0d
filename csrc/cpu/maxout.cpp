// CPU maxout: splits the rows (outer x groups) and, for long rows, their columns across
// threads (at::parallel_for); float32 / float16 / bfloat16 with up to 32 pieces run the
// SIMD kernels of the instruction set in use (maxout_impl.h: columns in the vector lanes,
// or for the last dim, groups of 2, 4 or 8 deinterleaved in registers).  float64, more
// than 32 pieces and the last dim with other pieces run maxout.h's scalar code.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <cstring>

#include "../maxout_ops.h"
#include "kernel_table.h"
#include "maxout_table.h"

namespace fused_act {
namespace {

constexpr int64_t kGrain = 32768;   // input elements per task
constexpr int64_t kColumns = 4096;  // columns per task of a long row

const cpu::MaxoutKernelTable* simd_table() {
  const char* name = cpu::active_kernels()->name;
#if defined(__x86_64__) || defined(_M_X64)
  if (std::strcmp(name, "avx512") == 0) return &cpu::maxout_kernels_avx512;
  if (std::strcmp(name, "avx2") == 0) return &cpu::maxout_kernels_avx2;
#endif
  return &cpu::maxout_kernels_baseline;
}

bool use_simd(at::ScalarType st, const MaxoutShape& s) {
  if (st == at::kDouble || s.pieces > 32) return false;
  return s.inner > 1 || s.pieces == 2 || s.pieces == 4 || s.pieces == 8;
}

cpu::Storage storage_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cpu::Storage::f32;
    case at::kHalf: return cpu::Storage::f16;
    default: return cpu::Storage::bf16;
  }
}

// Calls fn(r0, r1, c0, c1) for blocks of rows [r0, r1) and columns [c0, c1), in parallel:
// whole rows when they are short, else column chunks of one row.
template <class Fn>
void for_each_block(const MaxoutShape& s, const Fn& fn) {
  const int64_t rows = s.outer * s.groups;
  const int64_t row_elems = s.pieces * s.inner;
  if (s.inner <= kColumns) {
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / row_elems),
                     [&](int64_t r0, int64_t r1) { fn(r0, r1, int64_t(0), s.inner); });
    return;
  }
  const int64_t chunks = (s.inner + kColumns - 1) / kColumns;
  at::parallel_for(0, rows * chunks, std::max<int64_t>(1, kGrain / (s.pieces * kColumns)),
                   [&](int64_t b, int64_t e) {
                     for (int64_t t = b; t < e; ++t) {
                       const int64_t r = t / chunks, c0 = (t % chunks) * kColumns;
                       fn(r, r + 1, c0, std::min(s.inner, c0 + kColumns));
                     }
                   });
}

// The pieces for_each_block may split the work into.
int64_t tasks_of(const MaxoutShape& s) {
  const int64_t rows = s.outer * s.groups;
  if (s.inner <= kColumns) {
    const int64_t grain = std::max<int64_t>(1, kGrain / (s.pieces * s.inner));
    return (rows + grain - 1) / grain;
  }
  const int64_t units = rows * ((s.inner + kColumns - 1) / kColumns);
  const int64_t grain = std::max<int64_t>(1, kGrain / (s.pieces * kColumns));
  return (units + grain - 1) / grain;
}

template <class T> char* at_byte(const at::Tensor& t, int64_t elems) {
  return static_cast<char*>(t.data_ptr()) + elems * t.element_size();
}

#define FA_DISPATCH_MAXOUT(TYPE, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, "fused_act_maxout", __VA_ARGS__)

}  // namespace

void CpuMaxout::forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& mask,
                        const MaxoutShape& s) {
  const bool with_mask = mask.defined();
  if (use_simd(x.scalar_type(), s)) {
    const cpu::MaxoutKernelTable* k = simd_table();
    const cpu::Storage st = storage_of(x.scalar_type());
    const int bytes = maxout_word_bytes(s.pieces);
    // y is written once and read by the next layer much later: above the cache share,
    // non-temporal stores skip reading each line of it first (kernel_table.h).
    const bool nt = cpu::nontemporal_output(x.nbytes() + y.nbytes(), tasks_of(s), y.data_ptr(),
                                            y.nbytes());
    cpu::prefault_output(y.data_ptr(), y.nbytes());
    for_each_block(s, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
      k->forward(st, bytes, at_byte<void>(x, r0 * s.pieces * s.inner), at_byte<void>(y, r0 * s.inner),
                 with_mask ? at_byte<void>(mask, r0 * s.inner) : nullptr, r1 - r0, s.pieces,
                 s.inner, c0, c1, nt);
      if (nt) cpu::nontemporal_fence();
    });
    return;
  }
  FA_DISPATCH_MAXOUT(x.scalar_type(), [&] {
    using T = at::opmath_type<scalar_t>;
    visit_word(s.pieces, [&](auto w) {
      using M = typename decltype(w)::type;
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      scalar_t* yp = y.mutable_data_ptr<scalar_t>();
      M* mp = with_mask ? static_cast<M*>(mask.data_ptr()) : nullptr;
      for_each_block(s, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c)
            yp[r * s.inner + c] = scalar_t(maxout_forward_one<T>(
                xp + r * s.pieces * s.inner + c, s.inner, s.pieces,
                mp ? mp + r * s.words * s.inner + c : nullptr));
      });
    });
  });
}

void CpuMaxout::backward(const at::Tensor& g, const at::Tensor& mask, const at::Tensor& dx,
                         const MaxoutShape& s) {
  if (use_simd(g.scalar_type(), s)) {
    const cpu::MaxoutKernelTable* k = simd_table();
    const cpu::Storage st = storage_of(g.scalar_type());
    const int bytes = maxout_word_bytes(s.pieces);
    for_each_block(s, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
      k->backward(st, bytes, at_byte<void>(g, r0 * s.inner), at_byte<void>(mask, r0 * s.inner),
                  at_byte<void>(dx, r0 * s.pieces * s.inner), r1 - r0, s.pieces, s.inner, c0, c1);
    });
    return;
  }
  FA_DISPATCH_MAXOUT(g.scalar_type(), [&] {
    using T = at::opmath_type<scalar_t>;
    visit_word(s.pieces, [&](auto w) {
      using M = typename decltype(w)::type;
      const scalar_t* gp = g.const_data_ptr<scalar_t>();
      const M* mp = static_cast<const M*>(mask.data_ptr());
      scalar_t* dp = dx.mutable_data_ptr<scalar_t>();
      for_each_block(s, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c)
            maxout_backward_one<T>(T(gp[r * s.inner + c]), mp + r * s.words * s.inner + c,
                                   dp + r * s.pieces * s.inner + c, s.inner, s.pieces, s.words);
      });
    });
  });
}

void CpuMaxout::gather(const at::Tensor& t, const at::Tensor& mask, const at::Tensor& out,
                       const MaxoutShape& s) {
  if (use_simd(t.scalar_type(), s)) {
    const cpu::MaxoutKernelTable* k = simd_table();
    const cpu::Storage st = storage_of(t.scalar_type());
    const int bytes = maxout_word_bytes(s.pieces);
    for_each_block(s, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
      k->gather(st, bytes, at_byte<void>(t, r0 * s.pieces * s.inner), at_byte<void>(mask, r0 * s.inner),
                at_byte<void>(out, r0 * s.inner), r1 - r0, s.pieces, s.inner, c0, c1);
    });
    return;
  }
  FA_DISPATCH_MAXOUT(t.scalar_type(), [&] {
    using T = at::opmath_type<scalar_t>;
    visit_word(s.pieces, [&](auto w) {
      using M = typename decltype(w)::type;
      const scalar_t* tp = t.const_data_ptr<scalar_t>();
      const M* mp = static_cast<const M*>(mask.data_ptr());
      scalar_t* op = out.mutable_data_ptr<scalar_t>();
      for_each_block(s, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c)
            op[r * s.inner + c] = scalar_t(maxout_gather_one<T>(
                tp + r * s.pieces * s.inner + c, mp + r * s.words * s.inner + c, s.inner,
                s.pieces, s.words));
      });
    });
  });
}

}  // namespace fused_act
