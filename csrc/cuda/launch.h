// Launch support shared by the CUDA kernel files: per-device properties, the check that
// this build has code for the running GPU, the shared-memory limit of a kernel, a
// division by a run-time constant without a hardware divide, and the vector accesses of
// streams that do not all sit at the same offset from a 16-byte boundary.
//
// Thread safety: the operators run with the GIL released, so two host threads may launch
// on the same GPU at once.  Every per-device cache below is filled exactly once
// (std::call_once per device), and a kernel's dynamic shared-memory limit is raised once
// per (device, kernel) to the most the kernel can ever use, never lowered: a launch can
// never see a limit set for a smaller launch by another thread.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

namespace fused_act {
namespace cuda_detail {

#define FA_STRINGIFY2(x) #x
#define FA_STRINGIFY(x) FA_STRINGIFY2(x)

// The architectures this library was compiled for, for error messages.
inline const char* built_arch_list() {
#if defined(FA_CUDA_ARCH_LIST)
  return FA_CUDA_ARCH_LIST;
#elif defined(__CUDA_ARCH_LIST__)
  return "compute capabilities x 10 = " FA_STRINGIFY(__CUDA_ARCH_LIST__);
#else
  return "(unknown)";
#endif
}

struct DeviceProps {
  int sms = 0;
  int smem_optin = 0;  // the most shared memory (static + dynamic) one block may use
  int major = 0, minor = 0;
  std::string name;
};

// Calls fill(slot, dev) once per device, whichever thread gets there first.
template <class Slot>
class PerDevice {
 public:
  template <class Fill>
  Slot& get(int dev, Fill&& fill) {
    TORCH_CHECK(dev >= 0 && dev < count_, "fused_act: CUDA device ", dev, " out of range");
    Entry& e = entries_[dev];
    std::call_once(e.once, [&] { fill(e.slot, dev); });
    return e.slot;
  }

 private:
  struct Entry {
    std::once_flag once;
    Slot slot;
  };
  int count_ = c10::cuda::device_count();
  std::unique_ptr<Entry[]> entries_{new Entry[count_ > 0 ? count_ : 1]};
};

inline const DeviceProps& device_props(int dev) {
  static PerDevice<DeviceProps> cache;  // function-local static: thread-safe construction
  return cache.get(dev, [](DeviceProps& p, int d) {
    cudaDeviceProp prop;
    C10_CUDA_CHECK(cudaGetDeviceProperties(&prop, d));
    p.sms = prop.multiProcessorCount;
    p.smem_optin = int(prop.sharedMemPerBlockOptin);
    p.major = prop.major;
    p.minor = prop.minor;
    p.name = prop.name;
  });
}

inline const DeviceProps& current_device_props() {
  return device_props(c10::cuda::current_device());
}

// cudaFuncGetAttributes of `kernel` on the current device, with a clear error when the
// library has no code the GPU can run (no SASS for its architecture and no PTX it can
// JIT): "no kernel image is available" alone names neither the GPU nor the build.
inline cudaFuncAttributes kernel_attributes(const void* kernel) {
  cudaFuncAttributes attr;
  const cudaError_t err = cudaFuncGetAttributes(&attr, kernel);
  if (err == cudaSuccess) return attr;
  (void)cudaGetLastError();  // not sticky; clear it so that later checks do not see it
  const int dev = c10::cuda::current_device();
  if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction ||
      err == cudaErrorUnsupportedPtxVersion || err == cudaErrorInvalidPtx) {
    const DeviceProps& p = device_props(dev);
    TORCH_CHECK(false, "fused_act: this build has no CUDA code for GPU ", dev, " (", p.name,
                ", compute capability ", p.major, ".", p.minor, "); it was built for ",
                built_arch_list(), " (", cudaGetErrorString(err),
                "). Rebuild with TORCH_CUDA_ARCH_LIST=\"", p.major, ".", p.minor,
                "\", or include an older architecture with +PTX.");
  }
  C10_CUDA_CHECK(err);
  return attr;
}

// Checks once per device that the library has code for it (the same architectures are
// compiled for every kernel, so one kernel answers for all).
inline void check_device_once(const void* any_kernel) {
  struct Checked {};
  static PerDevice<Checked> cache;
  cache.get(c10::cuda::current_device(), [&](Checked&, int) { kernel_attributes(any_kernel); });
}

// The dynamic shared memory one launch of `kernel` may use on the current device: the
// block's opt-in limit less the kernel's own static shared memory.  The first call per
// (device, kernel) raises the kernel's limit to that (the default allows only
// 48 KiB - static, which fails launches asking for less than 48 KiB of dynamic memory
// when static + dynamic > 48 KiB).  Later calls only read the cached value.
inline int max_dynamic_smem(const void* kernel) {
  static std::mutex mu;
  static std::map<std::pair<int, const void*>, int> limits;
  const int dev = c10::cuda::current_device();
  std::lock_guard<std::mutex> lock(mu);
  auto it = limits.find({dev, kernel});
  if (it != limits.end()) return it->second;
  const cudaFuncAttributes attr = kernel_attributes(kernel);
  const int limit = device_props(dev).smem_optin - int(attr.sharedSizeBytes);
  TORCH_CHECK(limit > 0, "fused_act: kernel uses all of the block's shared memory");
  if (attr.maxDynamicSharedSizeBytes < limit)
    C10_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, limit));
  limits.emplace(std::make_pair(dev, kernel), limit);
  return limit;
}

// q = n / d and r = n - q * d for 32-bit n and a divisor d >= 1 fixed at launch, by a
// multiply-high and a shift instead of a hardware divide (Granlund and Montgomery's
// round-up method: with l = ceil(log2 d) and m = floor(2^32 (2^l - d) / d) + 1,
// n / d = (umulhi(n, m) + n) >> l for every n < 2^32, the sum taken in 64 bits).
struct FastDivmod {
  uint32_t d = 1, m = 1;
  int shift = 0;

  FastDivmod() = default;
  explicit FastDivmod(uint32_t divisor) : d(divisor) {
    TORCH_CHECK(divisor >= 1, "fused_act: division by zero");
    while ((uint64_t(1) << shift) < divisor) ++shift;
    m = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - divisor)) / divisor + 1);
  }

  __host__ __device__ __forceinline__ uint32_t div(uint32_t n) const {
#ifdef __CUDA_ARCH__
    const uint32_t t = __umulhi(n, m);
#else
    const uint32_t t = uint32_t((uint64_t(n) * m) >> 32);
#endif
    return uint32_t((uint64_t(t) + n) >> shift);
  }
};

// ---- vector accesses and phases -----------------------------------------------------
//
// A stream's phase is its address modulo the vector size (kVec elements, at most 16
// bytes).  The kernels peel each row's (or the tensor's) first elements up to a vector
// boundary of one stream, the lead, and walk the rest in whole vectors of kVec elements:
// the lead's are aligned, and so are those of every stream in the lead's phase.  A
// stream out of phase cannot use vector instructions at those elements (a 128-bit access
// must be 16-byte aligned, and shifting it into place would take two aligned loads and
// a byte permute per vector), so it reads or writes the same kVec elements one by one.
// Its bytes in flight per thread are unchanged (kVec scalar loads issued back to back,
// none waited on before the arithmetic); what it costs is load/store instructions, kVec
// instead of one, while the sectors a warp touches are the same (merged in L1 and L2),
// so the HBM traffic is unchanged.
// Rows move every stream by the same number of elements, so whether two streams share
// a phase is a property of the launch, not of the row.

// kN elements, aligned to their whole size: one vector load or store instruction.
template <class T, int kN>
struct alignas(sizeof(T) * kN) Pack {
  T v[kN];
};

// Elements before the first boundary of kVec elements at or after p (0 when p is on one),
// at most n.  kVec * sizeof(T) is a power of two dividing 16.
template <class T, int kVec = 16 / sizeof(T)>
__host__ __device__ __forceinline__ int head_of(const void* p, int64_t n = INT64_MAX) {
  const int mis = int((reinterpret_cast<uintptr_t>(p) % (kVec * sizeof(T))) / sizeof(T));
  const int h = (kVec - mis) % kVec;
  return h < n ? h : int(n);
}

// Whether a and b have the same phase for vectors of kVec elements.
template <class T, int kVec = 16 / sizeof(T)>
inline bool same_phase(const void* a, const void* b) {
  return (reinterpret_cast<uintptr_t>(a) - reinterpret_cast<uintptr_t>(b)) %
             (kVec * sizeof(T)) == 0;
}

// The lead of k streams (inputs first, then outputs): the first stream whose phase the
// most streams share, so that as many streams as possible run on vectors, and an input
// rather than an output on a tie (a load's latency is what bytes in flight hide; a store
// retires without being waited on).  Bit i of `vec` is set when stream i is in the
// lead's phase (the lead's own bit included).
struct Lead {
  int index;
  unsigned vec;
};

template <class T, int kVec = 16 / sizeof(T)>
Lead pick_lead(std::initializer_list<const void*> ptrs) {
  Lead best{0, 0};
  int best_count = 0, i = 0;
  for (const void* p : ptrs) {
    unsigned mask = 0;
    int count = 0, j = 0;
    for (const void* q : ptrs) {
      if (same_phase<T, kVec>(p, q)) mask |= 1u << j, ++count;
      ++j;
    }
    if (count > best_count) best = {i, mask}, best_count = count;
    ++i;
  }
  return best;
}

// kN elements from p: one vector load when `vec` (p is then aligned to the vector), else
// kN scalar loads of the same elements (a stream out of the lead's phase).
template <int kN, class T>
__device__ __forceinline__ Pack<T, kN> load_vec(const T* p, bool vec) {
  if (vec) return *reinterpret_cast<const Pack<T, kN>*>(p);
  Pack<T, kN> r;
#pragma unroll
  for (int k = 0; k < kN; ++k) r.v[k] = p[k];
  return r;
}

template <int kN, class T>
__device__ __forceinline__ void store_vec(T* p, const Pack<T, kN>& r, bool vec) {
  if (vec) {
    *reinterpret_cast<Pack<T, kN>*>(p) = r;
  } else {
#pragma unroll
    for (int k = 0; k < kN; ++k) p[k] = r.v[k];
  }
}

}  // namespace cuda_detail
}  // namespace fused_act
