// Binds the CUDA kernels (elementwise.cu) to the operators for the CUDA dispatch key.
#include "../ops_impl.h"
#include "../gated_ops.h"
#include "../softmax_ops.h"

TORCH_LIBRARY_IMPL(fused_act, CUDA, m) {
  fused_act::register_device_impls<fused_act::CudaKernels>(m);
  fused_act::register_softmax_impls<fused_act::CudaKernels>(m);
  fused_act::register_gated_impls<fused_act::CudaKernels>(m);
}
