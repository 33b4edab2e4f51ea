// Builds csrc/cuda/icnn_cuda.cu (host + kernel code, unchanged) against the
// CPU emulation in cuda_emu.h and registers its two operators as
// torch.ops.lidvae_cuda_emu.icnn_forward / icnn_backward on CPU tensors.
// Built and driven by tests/test_cuda_emulation.py; not part of the package.
#ifndef LIDVAE_CUDA_EMULATION
#define LIDVAE_CUDA_EMULATION 1
#endif

#include <torch/extension.h>

#include <c10/core/CPUAllocator.h>

#include <cstring>

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

// Wraps the default CPU allocator and fills every new allocation with NaN
// bytes, so outputs and workspaces that a kernel forgets to write show up.
struct PoisonAllocator final : c10::Allocator {
  c10::Allocator* base = nullptr;
  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr p = base->allocate(n);
    if (n > 0 && p.get() != nullptr) std::memset(p.get(), 0xFF, n);
    return p;
  }
  c10::DeleterFnPtr raw_deleter() const override { return base->raw_deleter(); }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

PoisonAllocator g_poison;

void set_poison_allocator(bool on) {
  static c10::Allocator* original = c10::GetCPUAllocator();
  if (on) {
    g_poison.base = original;
    c10::SetCPUAllocator(&g_poison, /*priority=*/100);
  } else {
    c10::SetCPUAllocator(original, /*priority=*/100);
  }
}

}  // namespace

TORCH_LIBRARY(lidvae_cuda_emu, m) {
  m.def(lidvae::kIcnnForwardSchema);
  m.def(lidvae::kIcnnBackwardSchema);
}

TORCH_LIBRARY_IMPL(lidvae_cuda_emu, CPU, m) {
  m.impl("icnn_forward", &lidvae::cuda::icnn_forward_cuda);
  m.impl("icnn_backward", &lidvae::cuda::icnn_backward_cuda);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("set_poison_allocator", &set_poison_allocator,
             "Fill every new CPU allocation with NaN bytes (on) or restore the allocator (off).");
}
