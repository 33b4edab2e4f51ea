// The pybind11 module lidvae_ext._C. Importing it loads this shared library,
// which runs the TORCH_LIBRARY registrations in ops.cpp and the backends.
// The module itself only exposes build information and capability queries.
#include <torch/extension.h>

#include <string>

#ifndef LIDVAE_TORCH_VERSION
#define LIDVAE_TORCH_VERSION "unknown"
#endif
#ifndef LIDVAE_CUDA_ARCH_LIST
#define LIDVAE_CUDA_ARCH_LIST ""
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
  info["with_cuda"] = built_with_cuda();
  info["cuda_arch_list"] = std::string(LIDVAE_CUDA_ARCH_LIST);
  info["openmp"] = static_cast<bool>(AT_PARALLEL_OPENMP);
  info["dtypes"] = pybind11::make_tuple("float32", "float64");
  info["activations"] = pybind11::make_tuple("leaky_relu", "softplus");
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "lidvae_ext compiled kernels (operators live in torch.ops.lidvae_ext)";
  module.def("build_info", &build_info, "Build configuration of the compiled kernels.");
  module.def("built_with_cuda", &built_with_cuda, "Whether CUDA kernels were compiled in.");
}
