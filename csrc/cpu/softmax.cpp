// CPU softmax / log-softmax: splits the rows across threads (at::parallel_for) and hands
// each range of rows to the SIMD row kernels of the instruction set chosen at run time
// (softmax_impl.h).  float64 runs the same math of ../softmax.h on scalars, online
// (max, sum) in one pass then the output in a second; backward saves only y.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include "../kernels.h"
#include "../softmax.h"
#include "kernel_table.h"

namespace fused_act {
namespace {

constexpr int64_t kGrain = 32768;  // elements per task

int64_t row_grain(int64_t n) { return std::max<int64_t>(1, kGrain / n); }

cpu::Storage storage_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cpu::Storage::f32;
    case at::kHalf: return cpu::Storage::f16;
    case at::kBFloat16: return cpu::Storage::bf16;
    default: TORCH_CHECK(false, "fused_act: no SIMD softmax kernel for dtype ", t);
  }
}

template <class T> T* row_ptr(const at::Tensor& t, int64_t row, int64_t n) {
  return reinterpret_cast<T*>(static_cast<char*>(t.data_ptr()) + row * n * t.element_size());
}

template <bool kLog>
void forward_rows_double(const double* x, double* y, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r, x += n, y += n) {
    double m = softmax_lowest<double>(), s = 0;
    for (int64_t i = 0; i < n; ++i) softmax_online_update(m, s, x[i]);
    const SoftmaxNorm<double> c = softmax_norm<kLog>(m, s);
    for (int64_t i = 0; i < n; ++i) y[i] = softmax_output<kLog>(x[i], c.shift, c.scale);
  }
}

template <bool kLog>
void backward_rows_double(const double* g, const double* y, double* dx, int64_t rows,
                          int64_t n) {
  for (int64_t r = 0; r < rows; ++r, g += n, y += n, dx += n) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += softmax_backward_term<kLog>(g[i], y[i]);
    for (int64_t i = 0; i < n; ++i) dx[i] = softmax_backward_output<kLog>(g[i], y[i], sum);
  }
}

}  // namespace

void CpuKernels::softmax_forward(const at::Tensor& x, const at::Tensor& y, int64_t n, bool log) {
  const int64_t rows = x.numel() / n;
  if (x.scalar_type() == at::kDouble) {
    const double* xp = x.const_data_ptr<double>();
    double* yp = y.mutable_data_ptr<double>();
    at::parallel_for(0, rows, row_grain(n), [&](int64_t b, int64_t e) {
      if (log)
        forward_rows_double<true>(xp + b * n, yp + b * n, e - b, n);
      else
        forward_rows_double<false>(xp + b * n, yp + b * n, e - b, n);
    });
    return;
  }
  const cpu::KernelTable* k = cpu::active_kernels();
  const cpu::Storage st = storage_of(x.scalar_type());
  at::parallel_for(0, rows, row_grain(n), [&](int64_t b, int64_t e) {
    k->softmax_forward(st, log, row_ptr<const void>(x, b, n), row_ptr<void>(y, b, n), e - b, n);
  });
}

void CpuKernels::softmax_backward(const at::Tensor& g, const at::Tensor& y, const at::Tensor& dx,
                                  int64_t n, bool log) {
  const int64_t rows = g.numel() / n;
  if (g.scalar_type() == at::kDouble) {
    const double* gp = g.const_data_ptr<double>();
    const double* yp = y.const_data_ptr<double>();
    double* dp = dx.mutable_data_ptr<double>();
    at::parallel_for(0, rows, row_grain(n), [&](int64_t b, int64_t e) {
      if (log)
        backward_rows_double<true>(gp + b * n, yp + b * n, dp + b * n, e - b, n);
      else
        backward_rows_double<false>(gp + b * n, yp + b * n, dp + b * n, e - b, n);
    });
    return;
  }
  const cpu::KernelTable* k = cpu::active_kernels();
  const cpu::Storage st = storage_of(g.scalar_type());
  at::parallel_for(0, rows, row_grain(n), [&](int64_t b, int64_t e) {
    k->softmax_backward(st, log, row_ptr<const void>(g, b, n), row_ptr<const void>(y, b, n),
                        row_ptr<void>(dx, b, n), e - b, n);
  });
}

}  // namespace fused_act
