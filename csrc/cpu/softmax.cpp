// CPU softmax / log-softmax: splits the rows across threads (at::parallel_for) and hands
// each range of rows to the SIMD row kernels of the instruction set chosen at run time
// (softmax_impl.h); along a middle dim, chunks of columns of each [n, inner] slice go
// to the column kernels instead.  float64 runs the same math of ../softmax.h on scalars, online
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
// The pieces at::parallel_for may split `rows` rows of n into.
int64_t row_tasks(int64_t rows, int64_t n) { return (rows + row_grain(n) - 1) / row_grain(n); }

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

// float64 along a middle dim: the columns [c0, c1) of one [n, inner] slice.
template <bool kLog>
void forward_columns_double(const double* x, double* y, int64_t n, int64_t inner, int64_t c0,
                            int64_t c1) {
  for (int64_t c = c0; c < c1; ++c) {
    double m = softmax_lowest<double>(), s = 0;
    for (int64_t k = 0; k < n; ++k) softmax_online_update(m, s, x[k * inner + c]);
    const SoftmaxNorm<double> nm = softmax_norm<kLog>(m, s);
    for (int64_t k = 0; k < n; ++k)
      y[k * inner + c] = softmax_output<kLog>(x[k * inner + c], nm.shift, nm.scale);
  }
}

template <bool kLog>
void backward_columns_double(const double* g, const double* y, double* dx, int64_t n,
                             int64_t inner, int64_t c0, int64_t c1) {
  for (int64_t c = c0; c < c1; ++c) {
    double sum = 0;
    for (int64_t k = 0; k < n; ++k) sum += softmax_backward_term<kLog>(g[k * inner + c], y[k * inner + c]);
    for (int64_t k = 0; k < n; ++k)
      dx[k * inner + c] = softmax_backward_output<kLog>(g[k * inner + c], y[k * inner + c], sum);
  }
}

constexpr int64_t kColumnChunk = 64;  // columns per task along a middle dim

// Calls fn(slice offset in elements, c0, c1) for every chunk of columns, in parallel.
template <class Fn>
void for_each_column_chunk(int64_t numel, int64_t n, int64_t inner, const Fn& fn) {
  const int64_t outer = numel / (n * inner);
  const int64_t chunks = (inner + kColumnChunk - 1) / kColumnChunk;
  const int64_t grain = std::max<int64_t>(1, kGrain / (n * kColumnChunk));
  at::parallel_for(0, outer * chunks, grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / chunks, c0 = (t % chunks) * kColumnChunk;
      fn(o * n * inner, c0, std::min(inner, c0 + kColumnChunk));
    }
  });
}

template <class T> T* at_elem(const at::Tensor& t, int64_t i) {
  return reinterpret_cast<T*>(static_cast<char*>(t.data_ptr()) + i * t.element_size());
}

}  // namespace

void CpuKernels::softmax_forward_inner(const at::Tensor& x, const at::Tensor& y, int64_t n,
                                       int64_t inner, bool log) {
  if (x.scalar_type() == at::kDouble) {
    for_each_column_chunk(x.numel(), n, inner, [&](int64_t off, int64_t c0, int64_t c1) {
      const double* xp = x.const_data_ptr<double>() + off;
      double* yp = y.mutable_data_ptr<double>() + off;
      if (log)
        forward_columns_double<true>(xp, yp, n, inner, c0, c1);
      else
        forward_columns_double<false>(xp, yp, n, inner, c0, c1);
    });
    return;
  }
  const cpu::KernelTable* k = cpu::active_kernels();
  const cpu::Storage st = storage_of(x.scalar_type());
  for_each_column_chunk(x.numel(), n, inner, [&](int64_t off, int64_t c0, int64_t c1) {
    k->softmax_forward_inner(st, log, at_elem<const void>(x, off), at_elem<void>(y, off), n,
                             inner, c0, c1);
  });
}

void CpuKernels::softmax_backward_inner(const at::Tensor& g, const at::Tensor& y,
                                        const at::Tensor& dx, int64_t n, int64_t inner,
                                        bool log) {
  if (g.scalar_type() == at::kDouble) {
    for_each_column_chunk(g.numel(), n, inner, [&](int64_t off, int64_t c0, int64_t c1) {
      const double* gp = g.const_data_ptr<double>() + off;
      const double* yp = y.const_data_ptr<double>() + off;
      double* dp = dx.mutable_data_ptr<double>() + off;
      if (log)
        backward_columns_double<true>(gp, yp, dp, n, inner, c0, c1);
      else
        backward_columns_double<false>(gp, yp, dp, n, inner, c0, c1);
    });
    return;
  }
  const cpu::KernelTable* k = cpu::active_kernels();
  const cpu::Storage st = storage_of(g.scalar_type());
  for_each_column_chunk(g.numel(), n, inner, [&](int64_t off, int64_t c0, int64_t c1) {
    k->softmax_backward_inner(st, log, at_elem<const void>(g, off), at_elem<const void>(y, off),
                              at_elem<void>(dx, off), n, inner, c0, c1);
  });
}

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
  const bool nt = cpu::nontemporal_output(2 * x.nbytes(), row_tasks(rows, n), y.data_ptr(),
                                          y.nbytes());
  cpu::prefault_output(y.data_ptr(), y.nbytes());
  at::parallel_for(0, rows, row_grain(n), [&](int64_t b, int64_t e) {
    k->softmax_forward(st, log, row_ptr<const void>(x, b, n), row_ptr<void>(y, b, n), e - b, n, nt);
    if (nt) cpu::nontemporal_fence();
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
  const cpu::Storage st = storage_of(g.scalar_type());
  const cpu::KernelTable* k = cpu::streaming_kernels(st);
  const bool nt = cpu::nontemporal_output(3 * g.nbytes(), row_tasks(rows, n), dx.data_ptr(),
                                          dx.nbytes());
  cpu::prefault_output(dx.data_ptr(), dx.nbytes());
  at::parallel_for(0, rows, row_grain(n), [&](int64_t b, int64_t e) {
    k->softmax_backward(st, log, row_ptr<const void>(g, b, n), row_ptr<const void>(y, b, n),
                        row_ptr<void>(dx, b, n), e - b, n, nt);
    if (nt) cpu::nontemporal_fence();
  });
}

}  // namespace fused_act
