// The pybind11 module lidvae_ext._C. Importing it loads this shared library,
// which runs the TORCH_LIBRARY registrations in ops.cpp and the backends.
// The module itself only exposes build information and capability queries.
#include <torch/extension.h>

#include <string>

#include "cpu/gemm.h"
#include "cpu/isa.h"

#ifndef LIDVAE_TORCH_VERSION
#define LIDVAE_TORCH_VERSION "unknown"
#endif
#ifndef LIDVAE_CUDA_ARCH_LIST
#define LIDVAE_CUDA_ARCH_LIST ""
#endif
// How this module binds to torch (setup.py's ABI_ROUTE, docs/wheel.md).
#ifndef LIDVAE_ABI
#define LIDVAE_ABI "per-torch"
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
  info["abi"] = std::string(LIDVAE_ABI);
  info["openmp"] = static_cast<bool>(AT_PARALLEL_OPENMP);
  info["dtypes"] = pybind11::make_tuple("float32", "float64");
  info["activations"] = pybind11::make_tuple("leaky_relu", "softplus");
  // The CPU path as the next operator call would run it (LIDVAE_CPU_GEMM / LIDVAE_CPU_ISA).
  info["cpu_gemm"] = std::string(lidvae::cpu::gemm_backend_name(lidvae::cpu::gemm_backend()));
  pybind11::list backends;
  backends.append("aten");
  if (lidvae::cpu::openblas_available()) backends.append("openblas");
  info["cpu_gemm_backends"] = pybind11::tuple(backends);
  info["openblas"] = lidvae::cpu::openblas_description();
  info["cpu_isa"] = std::string(lidvae::cpu::isa_name(lidvae::cpu::select_isa()));
  pybind11::list isas;
  for (auto isa : lidvae::cpu::supported_isas()) isas.append(std::string(lidvae::cpu::isa_name(isa)));
  info["cpu_isas"] = pybind11::tuple(isas);
  return info;
}

// Tells the GEMM loader where the scipy_openblas32 package (if importable) keeps its library.
void register_openblas_package() {
  try {
    auto spec = pybind11::module_::import("importlib.util").attr("find_spec")("scipy_openblas32");
    if (spec.is_none()) return;
    auto package = pybind11::module_::import("scipy_openblas32");
    auto path = pybind11::module_::import("os.path").attr("join")(
        package.attr("get_lib_dir")(), package.attr("get_library")(true));
    lidvae::cpu::add_openblas_candidate(path.cast<std::string>());
  } catch (const pybind11::error_already_set&) {
    // a broken package is the same as none: the loader's other candidates, else ATen
  }
}

// out = alpha * a @ b + beta * base through the named backend (tests, benchmarks).
void gemm_for_tests(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out,
                    const std::string& backend, double alpha, const c10::optional<at::Tensor>& base,
                    double beta) {
  lidvae::cpu::GemmBackend which;
  if (backend == "auto") {
    which = lidvae::cpu::gemm_backend();
  } else if (backend == "aten") {
    which = lidvae::cpu::GemmBackend::kAten;
  } else if (backend == "openblas") {
    TORCH_CHECK(lidvae::cpu::openblas_available(), "_gemm: ", lidvae::cpu::openblas_description());
    which = lidvae::cpu::GemmBackend::kOpenBlas;
  } else {
    TORCH_CHECK(false, "_gemm: backend must be auto, aten or openblas, got '", backend, "'");
  }
  lidvae::cpu::gemm_out_with(which, out, a, b, alpha, base.has_value() ? *base : at::Tensor(), beta);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "lidvae_ext compiled kernels (operators live in torch.ops.lidvae_ext)";
  module.def("build_info", &build_info, "Build configuration of the compiled kernels.");
  module.def("built_with_cuda", &built_with_cuda, "Whether CUDA kernels were compiled in.");
  module.def("_gemm", &gemm_for_tests, "out = alpha * a @ b + beta * base through a CPU GEMM backend.",
             pybind11::arg("a"), pybind11::arg("b"), pybind11::arg("out"),
             pybind11::arg("backend") = "auto", pybind11::arg("alpha") = 1.0,
             pybind11::arg("base") = pybind11::none(), pybind11::arg("beta") = 0.0);
  register_openblas_package();
}
