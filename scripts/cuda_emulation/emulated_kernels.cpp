// The stable-ABI half of the CUDA emulation (see emulated_ops.cpp): builds
// csrc/cuda/icnn_cuda.cu (host + kernel code, unchanged) against the CPU emulation in
// cuda_emu.h and registers its two operators as torch.ops.lidvae_cuda_emu.icnn_forward /
// icnn_backward on CPU tensors, on the LibTorch stable ABI as the real CUDA library does.
// Used by tests/test_cuda_emulation.py and run_tsan.sh; not part of the package.
#ifndef LIDVAE_CUDA_EMULATION
#define LIDVAE_CUDA_EMULATION 1
#endif
#ifndef TORCH_TARGET_VERSION
#define TORCH_TARGET_VERSION 0x020a000000000000  // torch 2.10, as setup.py builds the kernels
#endif

#include <torch/csrc/stable/library.h>

#include "cuda_emu.h"
#include "op_schemas.h"

namespace lidvae::cuda {
// The fused kernels' `extern __shared__` array.
alignas(16) unsigned char fused_smem_raw[emu::kSmemBytes];
}  // namespace lidvae::cuda

#include "cuda/icnn_cuda.cu"

namespace {

const bool kSmemHooked = [] {
  emu::smem_base = lidvae::cuda::fused_smem_raw;
  return true;
}();

}  // namespace

STABLE_TORCH_LIBRARY(lidvae_cuda_emu, m) {
  m.def(lidvae::kIcnnForwardSchema);
  m.def(lidvae::kIcnnBackwardSchema);
}

STABLE_TORCH_LIBRARY_IMPL(lidvae_cuda_emu, CPU, m) {
  m.impl("icnn_forward", TORCH_BOX(&lidvae::cuda::icnn_forward_cuda));
  m.impl("icnn_backward", TORCH_BOX(&lidvae::cuda::icnn_backward_cuda));
}
