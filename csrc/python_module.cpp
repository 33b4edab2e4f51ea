// The pybind11 module lidvae_ext._C: the build's configuration. It includes no torch
// header and links no torch library, so it loads beside any torch; the operators live in
// the stable-ABI library lidvae_ext/_kernels (torch.ops.lidvae_ext), and the run-time
// part of build_info() (GEMM backend, OpenBLAS, ISA) comes from its _runtime_info operator
// (lidvae_ext/_extension.py merges the two).
#include <pybind11/pybind11.h>

#include <string>

#ifndef LIDVAE_TORCH_VERSION
#define LIDVAE_TORCH_VERSION "unknown"
#endif
#ifndef LIDVAE_CUDA_ARCH_LIST
#define LIDVAE_CUDA_ARCH_LIST ""
#endif
// How the operators bind to torch (setup.py's ABI_ROUTE, docs/wheel.md).
#ifndef LIDVAE_ABI
#define LIDVAE_ABI "stable"
#endif
// The oldest torch the stable-ABI library runs with (its TORCH_TARGET_VERSION).
#ifndef LIDVAE_TORCH_MIN
#define LIDVAE_TORCH_MIN "2.10"
#endif

namespace {

bool built_with_cuda() {
#ifdef LIDVAE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

pybind11::dict build_info() {
  pybind11::dict info;
  info["torch_version"] = std::string(LIDVAE_TORCH_VERSION);
  info["torch_min"] = std::string(LIDVAE_TORCH_MIN);
  info["with_cuda"] = built_with_cuda();
  info["cuda_arch_list"] = std::string(LIDVAE_CUDA_ARCH_LIST);
  info["abi"] = std::string(LIDVAE_ABI);
  info["dtypes"] = pybind11::make_tuple("float32", "float64");
  info["activations"] = pybind11::make_tuple("leaky_relu", "softplus");
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, module) {
  module.doc() = "lidvae_ext build configuration (operators live in torch.ops.lidvae_ext)";
  module.def("build_info", &build_info, "Build configuration of the compiled kernels.");
  module.def("built_with_cuda", &built_with_cuda, "Whether CUDA kernels were compiled in.");
}
