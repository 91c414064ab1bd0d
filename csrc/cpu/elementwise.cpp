// CPU elementwise kernels: splits the work across threads (at::parallel_for) and hands
// each chunk to the SIMD kernels of the instruction set chosen at run time
// (kernels_impl.h).  float64 runs the same functors on scalars.  The math is in
// activations.h; nothing here restates a formula.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif
#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

#include "../kernels.h"
#include "kernel_table.h"

namespace fused_act {
namespace cpu {
namespace {

constexpr int64_t kGrain = 32768;     // elements per task, as ATen's elementwise loops
constexpr int64_t kWeightBlock = 4096;  // elements summed in float before going to double

const KernelTable* best_table() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return &kernels_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    return &kernels_avx2;
#endif
  return &kernels_baseline;
}

int rank(const KernelTable* t) {
#if defined(__x86_64__) || defined(_M_X64)
  if (t == &kernels_avx512) return 2;
  if (t == &kernels_avx2) return 1;
#endif
  return 0;
}

const KernelTable* table_named(const std::string& name) {
#if defined(__x86_64__) || defined(_M_X64)
  if (name == "avx512") return &kernels_avx512;
  if (name == "avx2") return &kernels_avx2;
#endif
  if (name == "baseline" || name == "default") return &kernels_baseline;
  return nullptr;
}

// Never more than the CPU supports: asking for more is an error, not a crash later.
const KernelTable* checked_table(const std::string& name) {
  const KernelTable* t = table_named(name);
  TORCH_CHECK(t != nullptr, "fused_act: unknown CPU capability '", name,
              "' (expected avx512, avx2 or baseline)");
  TORCH_CHECK(rank(t) <= rank(best_table()), "fused_act: this CPU does not support '", name,
              "' (best available: ", best_table()->name, ")");
  return t;
}

std::atomic<const KernelTable*>& active_table() {
  static std::atomic<const KernelTable*> table{[] {
    const char* env = std::getenv("FUSED_ACT_CPU_CAPABILITY");
    return (env && *env) ? checked_table(env) : best_table();
  }()};
  return table;
}

Storage storage_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return Storage::f32;
    case at::kHalf: return Storage::f16;
    case at::kBFloat16: return Storage::bf16;
    default: TORCH_CHECK(false, "fused_act: no SIMD kernel for dtype ", t);
  }
}

template <class T> T* at_offset(const at::Tensor& t, int64_t i) {
  return reinterpret_cast<T*>(static_cast<char*>(t.data_ptr()) + i * t.element_size());
}

// Runs fn(begin, end, p) over the runs of [0, n) that share one weight value.
template <class Fn>
void for_each_weight_run(int64_t begin, int64_t end, int64_t inner, int64_t channels, Fn&& fn) {
  for (int64_t o = begin; o < end;) {
    int64_t row = o / inner;
    int64_t stop = std::min(end, (row + 1) * inner);
    fn(o, stop, row % channels);
    o = stop;
  }
}

// Weights that change every few elements (PReLU on (N, C) inputs, channels-last or small
// feature maps) go to the kernels with one weight per element: one kernel call per run of
// one weight costs about as much as a few hundred elements.  The weight of flat offset o
// repeats with period inner * channels; pieces of up to kPiece elements read it from the
// pattern at phase o % period.  Runs shorter than kShortRun always take the pattern; runs
// up to kMediumRun take it while it is small enough to stay in L1/L2 next to the streamed
// data (beyond that it would add a third stream to memory).
constexpr int64_t kShortRun = 64;
constexpr int64_t kMediumRun = 1024;
constexpr int64_t kSmallPattern = int64_t(1) << 14;
constexpr int64_t kPiece = kWeightPiece;

struct WeightPattern {
  int64_t period = 0;
  int64_t size = 0;                // period + kPiece
  std::unique_ptr<float[]> w;      // the weights of phases [0, size)
  const float* data() const { return w.get(); }
};

bool short_runs(int64_t inner, int64_t channels) {
  if (channels <= 1 || inner >= kMediumRun) return false;
  const int64_t period = inner * channels;
  return period <= (inner < kShortRun ? (int64_t(1) << 22) : kSmallPattern);
}

WeightPattern weight_pattern(const double* wp, int64_t inner, int64_t channels) {
  WeightPattern pat;
  pat.period = inner * channels;
  pat.size = pat.period + kPiece;
  pat.w.reset(new float[pat.size]);  // written whole below
  float* out = pat.w.get();
  if (inner == 1) {
    for (int64_t c = 0; c < channels; ++c) out[c] = float(wp[c]);
  } else {
    for (int64_t c = 0; c < channels; ++c) std::fill_n(out + c * inner, inner, float(wp[c]));
  }
  // The rest repeats the first period: copies of what is written so far, each twice as long.
  for (int64_t j = pat.period; j < pat.size;) {
    const int64_t len = std::min(j, pat.size - j);
    std::memcpy(out + j, out, size_t(len) * sizeof(float));
    j += len;
  }
  return pat;
}

// The weights (0-d or 1-D, any float dtype and stride) as opmath values, read in place: a
// tensor conversion here would cost more than the whole kernel on a small input.
std::vector<double> weights_of(const at::Tensor& w) {
  std::vector<double> out(w.numel());
  const int64_t stride = w.dim() == 0 ? 0 : w.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "fused_act weights",
                                  [&] {
    const scalar_t* p = w.const_data_ptr<scalar_t>();
    for (int64_t i = 0; i < int64_t(out.size()); ++i) out[i] = double(p[i * stride]);
  });
  return out;
}

// dw = the per-block partial sums (blocks x channels, in block order) summed per channel,
// rounded once to dw's dtype.
void write_weight_grad(const std::vector<double>& partial, int64_t channels,
                       const at::Tensor& dw) {
  std::vector<double> total(channels, 0.0);
  for (size_t i = 0; i < partial.size(); ++i) total[i % channels] += partial[i];
  const int64_t stride = dw.dim() == 0 ? 0 : dw.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dw.scalar_type(),
                                  "fused_act weight grad", [&] {
    scalar_t* p = dw.mutable_data_ptr<scalar_t>();
    for (int64_t i = 0; i < channels; ++i) p[i * stride] = scalar_t(total[i]);
  });
}

template <class Fn> void visit_weighted(Act act, Fn&& fn) {
  switch (act) {
#define FA_WEIGHTED_CASE(name, F, op) \
  case Act::name: fn(ActTag<F>{}); return;
    FA_FOR_EACH_WEIGHTED(FA_WEIGHTED_CASE)
#undef FA_WEIGHTED_CASE
    default: TORCH_CHECK(false, "fused_act: activation has no weighted form");
  }
}

// Backward kernels that do a few operations per element (two streams in, one out) are
// bound by memory bandwidth: every backward of the piecewise-linear activations, of the
// others the ones that read their output (each functor's streaming_backward in
// activations.h), and the softmax backward (softmax.cpp).  On AMD's AVX-512 CPUs they
// run with 256-bit vectors, which measured about 7% faster than 512-bit ones for such
// loops on Zen 4.  Not on Intel's: on a 2-vCPU Xeon with AMX (CPU family 6, model 167),
// one thread, the softmax backward of 2^22 float32 elements ran 5-15% slower with 256-bit
// vectors than with 512-bit ones (rows of 16, 1024 and 8192, two runs each), relu's
// backward 2-6% slower.
bool streaming(Act act, bool from_output) {
  bool result = false;
  visit_act(act, [&](auto a) { result = decltype(a)::type::streaming_backward(from_output); });
  return result;
}

// float16 / bfloat16 keep the full width: their conversions make such loops
// compute-bound, and 512-bit vectors measured 1.3-1.6x faster there.
const KernelTable* streaming_table(Storage st) {
  const KernelTable* k = active_table().load();
#if defined(__x86_64__) || defined(_M_X64)
  static const bool amd = __builtin_cpu_is("amd");
  if (amd && k == &kernels_avx512 && st == Storage::f32) return &kernels_avx2;
#endif
  return k;
}

}  // namespace
}  // namespace cpu

std::string cpu_capability() { return cpu::active_table().load()->name; }

void set_cpu_capability(const std::string& name) {
  cpu::active_table().store(cpu::checked_table(name));
}

namespace cpu {
const KernelTable* active_kernels() { return active_table().load(); }
const KernelTable* streaming_kernels(Storage st) { return streaming_table(st); }

namespace {
// One data (or unified) cache of cpu0 and the number of logical CPUs that share it.
struct CacheLevel {
  int64_t bytes;
  int64_t sharers;
};

// The number of CPUs in a sysfs CPU list ("0-7,64-71"); 0 if it does not parse.
int64_t count_cpu_list(const std::string& list) {
  int64_t count = 0;
  size_t i = 0;
  while (i < list.size()) {
    size_t end = list.find(',', i);
    if (end == std::string::npos) end = list.size();
    const std::string part = list.substr(i, end - i);
    const size_t dash = part.find('-');
    try {
      if (dash == std::string::npos)
        count += 1;
      else
        count += std::stoll(part.substr(dash + 1)) - std::stoll(part.substr(0, dash)) + 1;
    } catch (...) {
      return 0;
    }
    i = end + 1;
  }
  return count;
}

// cpu0's data and unified caches from Linux sysfs (size "32768K", shared_cpu_list);
// where unknown, one 32 MiB cache of its own.  Read once.
const std::vector<CacheLevel>& data_caches() {
  static const std::vector<CacheLevel> levels = [] {
    std::vector<CacheLevel> found;
    for (int i = 0; i < 8; ++i) {
      const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i);
      std::ifstream type_file(dir + "/type"), size_file(dir + "/size"),
          shared_file(dir + "/shared_cpu_list");
      std::string type, shared;
      int64_t size = 0;
      char unit = 0;
      if (!(type_file >> type) || type == "Instruction" || !(size_file >> size)) continue;
      size_file >> unit;
      if (unit == 'K') size <<= 10;
      if (unit == 'M') size <<= 20;
      if (unit == 'G') size <<= 30;
      const int64_t sharers = (shared_file >> shared) ? count_cpu_list(shared) : 0;
      if (size > 0) found.push_back({size, std::max<int64_t>(1, sharers)});
    }
    if (found.empty()) found.push_back({int64_t(32) << 20, 1});
    return found;
  }();
  return levels;
}

// The cache that `threads` threads get: of each level, their share of it (size x
// threads / the CPUs sharing it, at most all of it).  A cache shared by several cores (an
// L3 per CCX on AMD, per socket on Intel) is not one thread's alone: other threads and
// processes fill it too.
int64_t cache_share(int64_t threads) {
  int64_t total = 0;
  for (const CacheLevel& c : data_caches())
    total += c.bytes / c.sharers * std::min(std::max<int64_t>(threads, 1), c.sharers);
  return total;
}

// The default threshold for a call run by `threads` threads: 3/4 of the cache they get.
int64_t default_nontemporal_threshold(int64_t threads) { return cache_share(threads) / 4 * 3; }

// The threshold set with set_nontemporal_threshold, or -1 for the default rule.
std::atomic<int64_t>& nontemporal_threshold_set() {
  static std::atomic<int64_t> bytes{-1};
  return bytes;
}

// Whether the page in the middle of [out, out + bytes) has never been touched.  glibc maps
// every block above its mmap threshold (which adapts up to 32 MiB) fresh from the OS, and
// the OS zeroes each such page on its first touch, which leaves its lines in the cache: a
// non-temporal store then sends each line to memory a second time instead of completing
// it there.  Measured on a 2-vCPU AMD Zen 5 VM, relu forward of 2^24 float32 elements
// (a 64 MiB output, fresh on every call), one thread: 38.8-41.1 ms with non-temporal
// stores, 34.3-35.3 ms with cached ones (torch: 35.2-35.9 ms; the page faults are most of
// that time either way).  The middle page: the first may hold the allocator's header.
// One system call, made only for outputs far past the cache.
bool untouched_pages(const void* out, int64_t bytes) {
#if defined(__linux__)
  static const long page = sysconf(_SC_PAGESIZE);
  if (out == nullptr || page <= 0 || bytes < 4 * page) return false;
  const uintptr_t mid =
      (reinterpret_cast<uintptr_t>(out) + uintptr_t(bytes) / 2) & ~uintptr_t(page - 1);
  unsigned char resident = 0;
  if (mincore(reinterpret_cast<void*>(mid), size_t(page), &resident) != 0) return false;
  return (resident & 1) == 0;
#else
  (void)out;
  (void)bytes;
  return false;
#endif
}
}  // namespace

bool nontemporal_output(int64_t traffic_bytes, int64_t tasks, const void* out,
                        int64_t out_bytes) {
  const int64_t set = nontemporal_threshold_set().load(std::memory_order_relaxed);
  if (set >= 0) return traffic_bytes > set;
  // The threads at::parallel_for will use: one inside a parallel region, otherwise at
  // most one per task.  A cheap test first: below one thread's share nothing streams.
  static const int64_t one_thread = default_nontemporal_threshold(1);
  if (traffic_bytes <= one_thread) return false;
  const int64_t threads =
      at::in_parallel_region() ? 1 : std::min<int64_t>(at::get_num_threads(), tasks);
  return traffic_bytes > default_nontemporal_threshold(threads) &&
         !untouched_pages(out, out_bytes);
}

// glibc maps every block above its mmap threshold (which adapts up to 32 MiB) fresh from
// the OS, so a large output's pages are all untouched and the kernel's stores would fault
// them in one by one, each fault breaking into the vector loop.  MADV_POPULATE_WRITE (Linux
// 5.14) faults a whole range in one call; each thread takes its share of the pages, as it
// takes its share of the elements next.  Measured on a 2-vCPU Xeon VM (KVM), forward of
// 2^24 float32 elements (a fresh 64 MiB output on every call), median ms, one thread:
// silu 47.1 -> 30.4 (AVX2), 31.5 -> 27.5 (AVX-512), gelu 34.3 -> 29.6 (AVX2), relu 27.5
// -> 26.6; two threads: silu 28.0 -> 16.5 (AVX2), 18.4 -> 16.0 (AVX-512).  The pages are
// the ones the kernel writes next and get no other advice (size, placement); where the
// call is refused (EINVAL: an older kernel) it is not made again.
void prefault_output(void* out, int64_t bytes) {
#if defined(__linux__)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
  constexpr int64_t kMinBytes = int64_t(4) << 20;
  static std::atomic<bool> supported{true};
  if (bytes < kMinBytes || !supported.load(std::memory_order_relaxed) ||
      !untouched_pages(out, bytes))
    return;
  static const long page = sysconf(_SC_PAGESIZE);
  if (page <= 0) return;
  const uintptr_t mask = ~uintptr_t(page - 1);
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(out) + uintptr_t(page - 1)) & mask;
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(out) + uintptr_t(bytes)) & mask;
  if (hi <= lo) return;
  const int64_t pages = int64_t((hi - lo) / uintptr_t(page));
  at::parallel_for(0, pages, kMinBytes / 4 / page, [&](int64_t b, int64_t e) {
    void* start = reinterpret_cast<void*>(lo + uintptr_t(b) * uintptr_t(page));
    if (madvise(start, size_t(e - b) * size_t(page), MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
      supported.store(false, std::memory_order_relaxed);
  });
#else
  (void)out;
  (void)bytes;
#endif
}

void nontemporal_fence() {
#if defined(__SSE__) || defined(_M_X64)  // where simd.h's store_nt streams
  _mm_sfence();
#endif
}
}  // namespace cpu

int64_t nontemporal_threshold() {
  const int64_t set = cpu::nontemporal_threshold_set().load();
  return set >= 0 ? set : cpu::default_nontemporal_threshold(at::get_num_threads());
}

void set_nontemporal_threshold(int64_t bytes) {
  cpu::nontemporal_threshold_set().store(bytes < 0 ? -1 : bytes);
}

using namespace cpu;

namespace {
// Whether a kernel writing `out` (not in place: no shared memory with any input) with
// `traffic` bytes read and written in all should use non-temporal stores.
// `tasks` is the number of pieces at::parallel_for may split the call into.
bool nt_output(const at::Tensor& out, std::initializer_list<const at::Tensor*> inputs,
               int64_t traffic, int64_t tasks) {
  for (const at::Tensor* t : inputs)
    if (t->data_ptr() == out.data_ptr()) return false;
  return nontemporal_output(traffic, tasks, out.data_ptr(), out.nbytes());
}

int64_t tasks_of(int64_t n) { return (n + kGrain - 1) / kGrain; }
}  // namespace

void CpuKernels::forward(Act act, const at::Tensor& x, const at::Tensor& y, double p,
                         double q) {
  const int64_t n = x.numel();
  if (x.scalar_type() == at::kDouble) {
    visit_act(act, [&](auto a) {
      using F = Params<typename decltype(a)::type>;
      const double* xp = x.const_data_ptr<double>();
      double* yp = y.mutable_data_ptr<double>();
      at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) yp[i] = F::forward(xp[i], p, q);
      });
    });
    return;
  }
  const KernelTable* k = active_table().load();
  const Storage st = storage_of(x.scalar_type());
  const bool nt = nt_output(y, {&x}, 2 * x.nbytes(), tasks_of(n));
  prefault_output(y.data_ptr(), y.nbytes());
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    k->forward(act, st, at_offset<const void>(x, b), at_offset<void>(y, b), e - b, float(p),
               float(q), nt);
    if (nt) nontemporal_fence();
  });
}

void CpuKernels::backward(Act act, const at::Tensor& g, const at::Tensor& s, const at::Tensor& dx,
                          double p, double q, bool saved_is_output) {
  const int64_t n = g.numel();
  if (g.scalar_type() == at::kDouble) {
    visit_act(act, [&](auto a) {
      using F = Params<typename decltype(a)::type>;
      const double* gp = g.const_data_ptr<double>();
      const double* sp = s.const_data_ptr<double>();
      double* dp = dx.mutable_data_ptr<double>();
      at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
        if (saved_is_output)
          for (int64_t i = b; i < e; ++i) dp[i] = F::template backward<true>(gp[i], sp[i], p, q);
        else
          for (int64_t i = b; i < e; ++i)
            dp[i] = F::template backward<false>(gp[i], sp[i], p, q);
      });
    });
    return;
  }
  const Storage st = storage_of(g.scalar_type());
  const KernelTable* k =
      streaming(act, saved_is_output) ? streaming_table(st) : active_table().load();
  const bool nt = nt_output(dx, {&g, &s}, 3 * g.nbytes(), tasks_of(n));
  prefault_output(dx.data_ptr(), dx.nbytes());
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    k->backward(act, st, at_offset<const void>(g, b), at_offset<const void>(s, b),
                at_offset<void>(dx, b), e - b, float(p), float(q), saved_is_output, nt);
    if (nt) nontemporal_fence();
  });
}

void CpuKernels::weighted_forward(Act act, const at::Tensor& x, const at::Tensor& w,
                                  const at::Tensor& y, int64_t inner, int64_t channels) {
  const int64_t n = x.numel();
  // The weights as opmath values, read once.
  const std::vector<double> weights = weights_of(w);
  const double* wp = weights.data();
  if (x.scalar_type() == at::kDouble) {
    visit_weighted(act, [&](auto a) {
      using F = typename decltype(a)::type;
      const double* xp = x.const_data_ptr<double>();
      double* yp = y.mutable_data_ptr<double>();
      at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
        for_each_weight_run(b, e, inner, channels, [&](int64_t rb, int64_t re, int64_t c) {
          for (int64_t i = rb; i < re; ++i) yp[i] = F::forward(xp[i], wp[c]);
        });
      });
    });
    return;
  }
  const KernelTable* k = active_table().load();
  const Storage st = storage_of(x.scalar_type());
  const bool nt = nt_output(y, {&x}, 2 * x.nbytes(), tasks_of(n));
  prefault_output(y.data_ptr(), y.nbytes());
  if (short_runs(inner, channels)) {
    const WeightPattern pat = weight_pattern(wp, inner, channels);
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      k->forward_weights(act, st, at_offset<const void>(x, b), at_offset<void>(y, b),
                         pat.data(), pat.period, b % pat.period, e - b, nt);
      if (nt) nontemporal_fence();
    });
    return;
  }
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for_each_weight_run(b, e, inner, channels, [&](int64_t rb, int64_t re, int64_t c) {
      k->forward(act, st, at_offset<const void>(x, rb), at_offset<void>(y, rb), re - rb,
                 float(wp[c]), 0.0f, nt);
    });
    if (nt) nontemporal_fence();
  });
}

void CpuKernels::weighted_backward(Act act, const at::Tensor& g, const at::Tensor& x,
                                   const at::Tensor& w, const at::Tensor& dx, const at::Tensor& dw,
                                   int64_t inner, int64_t channels) {
  const int64_t n = x.numel();
  const bool need_wgrad = dw.defined();
  const std::vector<double> weights = weights_of(w);
  const double* wp = weights.data();
  // Both paths below sum the weight gradient in fixed blocks, each with its own partial
  // sums per channel, added in block order at the end: the result does not depend on the
  // number of threads.
  const KernelTable* k = active_table().load();
  const bool is_double = x.scalar_type() == at::kDouble;
  const Storage st = is_double ? Storage::f32 : storage_of(x.scalar_type());
  const bool nt = !is_double && nt_output(dx, {&g, &x}, 3 * x.nbytes(), tasks_of(n));
  prefault_output(dx.data_ptr(), dx.nbytes());

  if (!is_double && short_runs(inner, channels)) {
    // Fixed blocks of pieces, each summing its weight-gradient terms per phase of the
    // pattern in float, then per channel in double; blocks are summed in order.
    const WeightPattern pat = weight_pattern(wp, inner, channels);
    const int64_t pieces = (n + kPiece - 1) / kPiece;
    const int64_t per_block = kGrain / kPiece;
    const int64_t nblk = (pieces + per_block - 1) / per_block;
    std::vector<double> part(need_wgrad ? nblk * channels : 0, 0.0);
    at::parallel_for(0, nblk, 1, [&](int64_t bb, int64_t be) {
      std::vector<float> acc(need_wgrad ? pat.size : 0);
      for (int64_t blk = bb; blk < be; ++blk) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        const int64_t b = blk * per_block * kPiece, e = std::min(n, b + per_block * kPiece);
        k->backward_weights(act, st, at_offset<const void>(g, b), at_offset<const void>(x, b),
                            at_offset<void>(dx, b), pat.data(),
                            need_wgrad ? acc.data() : nullptr, pat.period, b % pat.period,
                            e - b, nt);
        if (need_wgrad) {
          double* pc = part.data() + blk * channels;
          for (int64_t base = 0; base < pat.size; base += pat.period) {
            const float* a = acc.data() + base;
            const int64_t end = std::min(pat.period, pat.size - base);
            for (int64_t c = 0, j = 0; j < end; ++c) {
              const int64_t stop = std::min(end, j + inner);
              double sum = 0.0;
              for (; j < stop; ++j) sum += a[j];
              pc[c] += sum;
            }
          }
        }
      }
      if (nt) nontemporal_fence();
    });
    if (need_wgrad) write_weight_grad(part, channels, dw);
    return;
  }

  const int64_t nblocks = (n + kGrain - 1) / kGrain;
  std::vector<double> partial(need_wgrad ? nblocks * channels : 0, 0.0);
  visit_weighted(act, [&](auto a) {
    using F = typename decltype(a)::type;
    at::parallel_for(0, nblocks, 1, [&](int64_t bb, int64_t be) {
      for (int64_t blk = bb; blk < be; ++blk) {
        const int64_t b = blk * kGrain, e = std::min(n, b + kGrain);
        double* acc = need_wgrad ? partial.data() + blk * channels : nullptr;
        for_each_weight_run(b, e, inner, channels, [&](int64_t rb, int64_t re, int64_t c) {
          if (is_double) {
            const double* gp = g.const_data_ptr<double>();
            const double* xp = x.const_data_ptr<double>();
            double* dp = dx.mutable_data_ptr<double>();
            double sum = 0;
            for (int64_t i = rb; i < re; ++i) {
              dp[i] = F::template backward<false>(gp[i], xp[i], wp[c]);
              if (need_wgrad) sum += F::weight_grad(gp[i], xp[i], wp[c]);
            }
            if (need_wgrad) acc[c] += sum;
            return;
          }
          for (int64_t sb = rb; sb < re; sb += kWeightBlock) {
            const int64_t se = std::min(re, sb + kWeightBlock);
            double sum = k->backward_weighted(act, st, at_offset<const void>(g, sb),
                                              at_offset<const void>(x, sb),
                                              at_offset<void>(dx, sb), se - sb, float(wp[c]),
                                              need_wgrad, nt);
            if (need_wgrad) acc[c] += sum;
          }
        });
      }
      if (nt) nontemporal_fence();
    });
  });

  if (need_wgrad) write_weight_grad(partial, channels, dw);
}

}  // namespace fused_act
