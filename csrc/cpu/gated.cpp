// CPU kernels of the gated operators (../gated.h): the work is outer * L output elements
// (L = the elements of one half of one row), split across threads by element, not by row
// (outer can be 1), each thread's range cut at row ends into runs of whole halves that go
// to the SIMD loops of the instruction set in use (kernels_impl.h).  float64 runs the
// same math on scalars.  Nothing here restates a formula.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "../kernels.h"
#include "kernel_table.h"

namespace fused_act {
namespace {

constexpr int64_t kGrain = 32768;  // output elements per task, as the elementwise kernels

cpu::Storage storage_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cpu::Storage::f32;
    case at::kHalf: return cpu::Storage::f16;
    case at::kBFloat16: return cpu::Storage::bf16;
    default: TORCH_CHECK(false, "fused_act: no SIMD gated kernel for dtype ", t);
  }
}

// Calls fn(o, c, len) for the runs of output elements [begin, end) within one row:
// row o, its elements [c, c + len) (of L).
template <class Fn>
void for_each_row_run(int64_t begin, int64_t end, int64_t half, Fn&& fn) {
  for (int64_t i = begin; i < end;) {
    const int64_t o = i / half, c = i - o * half;
    const int64_t len = std::min(end - i, half - c);
    fn(o, c, len);
    i += len;
  }
}

template <class T> T* at_elem(const at::Tensor& t, int64_t i) {
  return reinterpret_cast<T*>(static_cast<char*>(t.data_ptr()) + i * t.element_size());
}

int64_t tasks_of(int64_t n) { return (n + kGrain - 1) / kGrain; }

}  // namespace

void CpuKernels::gated_forward(Gate gate, const at::Tensor& x, const at::Tensor& y,
                               int64_t outer, int64_t half) {
  const int64_t n = outer * half;
  if (x.scalar_type() == at::kDouble) {
    const double p = gate_param(gate);
    visit_gate(gate, [&](auto tag) {
      using Tag = decltype(tag);
      using GM = GatedMath<typename Tag::type>;
      const double* xp = x.const_data_ptr<double>();
      double* yp = y.mutable_data_ptr<double>();
      at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
        for_each_row_run(b, e, half, [&](int64_t o, int64_t c, int64_t len) {
          const double* a = xp + o * 2 * half + c;
          const double* bb = a + half;
          double* out = yp + o * half + c;
          for (int64_t i = 0; i < len; ++i)
            out[i] = Tag::gate_is_second_half ? GM::forward(bb[i], a[i], p)
                                              : GM::forward(a[i], bb[i], p);
        });
      });
    });
    return;
  }
  const cpu::KernelTable* k = cpu::active_kernels();
  const cpu::Storage st = storage_of(x.scalar_type());
  const bool nt = cpu::nontemporal_output(3 * y.nbytes(), tasks_of(n), y.data_ptr(), y.nbytes());
  cpu::prefault_output(y.data_ptr(), y.nbytes());
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for_each_row_run(b, e, half, [&](int64_t o, int64_t c, int64_t len) {
      const int64_t ia = o * 2 * half + c;
      k->gated_forward(gate, st, at_elem<const void>(x, ia), at_elem<const void>(x, ia + half),
                       at_elem<void>(y, o * half + c), len, nt);
    });
    if (nt) cpu::nontemporal_fence();
  });
}

void CpuKernels::gated_backward(Gate gate, const at::Tensor& g, const at::Tensor& x,
                                const at::Tensor& dx, int64_t outer, int64_t half) {
  const int64_t n = outer * half;
  if (x.scalar_type() == at::kDouble) {
    const double p = gate_param(gate);
    visit_gate(gate, [&](auto tag) {
      using Tag = decltype(tag);
      using GM = GatedMath<typename Tag::type>;
      const double* gp = g.const_data_ptr<double>();
      const double* xp = x.const_data_ptr<double>();
      double* dp = dx.mutable_data_ptr<double>();
      at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
        for_each_row_run(b, e, half, [&](int64_t o, int64_t c, int64_t len) {
          const int64_t ia = o * 2 * half + c;
          const double *a = xp + ia, *bb = a + half, *gr = gp + o * half + c;
          double *da = dp + ia, *db = da + half;
          for (int64_t i = 0; i < len; ++i) {
            double& du = Tag::gate_is_second_half ? db[i] : da[i];
            double& dv = Tag::gate_is_second_half ? da[i] : db[i];
            const double u = Tag::gate_is_second_half ? bb[i] : a[i];
            const double v = Tag::gate_is_second_half ? a[i] : bb[i];
            GM::backward(gr[i], u, v, p, du, dv);
          }
        });
      });
    });
    return;
  }
  const cpu::Storage st = storage_of(x.scalar_type());
  // Memory-bound backwards (a compare and a select: reglu) take the streaming table, as
  // the elementwise ones do (elementwise.cpp).
  bool streaming = false;
  visit_gate(gate, [&](auto tag) {
    using F = typename decltype(tag)::type;
    streaming = F::streaming_backward(/*from_output=*/false);
  });
  const cpu::KernelTable* k = streaming ? cpu::streaming_kernels(st) : cpu::active_kernels();
  const bool nt = cpu::nontemporal_output(5 * g.nbytes(), tasks_of(n), dx.data_ptr(), dx.nbytes());
  cpu::prefault_output(dx.data_ptr(), dx.nbytes());
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for_each_row_run(b, e, half, [&](int64_t o, int64_t c, int64_t len) {
      const int64_t ia = o * 2 * half + c;
      k->gated_backward(gate, st, at_elem<const void>(g, o * half + c),
                        at_elem<const void>(x, ia), at_elem<const void>(x, ia + half),
                        at_elem<void>(dx, ia), at_elem<void>(dx, ia + half), len, nt);
    });
    if (nt) cpu::nontemporal_fence();
  });
}

}  // namespace fused_act
