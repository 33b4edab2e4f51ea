// The full-API half of the CUDA emulation: the Python module (cpp_extension) with the
// poison allocator. The operators themselves (csrc/cuda/icnn_cuda.cu on the CPU
// emulation, registered as torch.ops.lidvae_cuda_emu.*) are in emulated_kernels.cpp, on the
// LibTorch stable ABI like the real CUDA library. Built and driven by
// tests/test_cuda_emulation.py; not part of the package.
#include <torch/extension.h>

#include <c10/core/CPUAllocator.h>

#include <cstring>

namespace {

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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("set_poison_allocator", &set_poison_allocator,
             "Fill every new CPU allocation with NaN bytes (on) or restore the allocator (off).");
}
