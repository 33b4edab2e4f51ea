// The library's service operators (schemas in op_schemas.h): _gemm (a CPU GEMM through a
// named backend, for tests and benchmarks), _runtime_info (the CPU path as the next
// operator call would run it: build_info()'s run-time part), _add_openblas_candidate and
// _cpu_workspace (the kernels' scratch cache, cpu/workspace.h).
#include <optional>
#include <sstream>
#include <string>

#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu/workspace.h"
#include "stable.h"

namespace lidvae {
namespace {

// out = alpha * a @ b + beta * base through the named backend.
void gemm_op(Tensor a, Tensor b, Tensor out, std::string backend, double alpha,
             std::optional<Tensor> base, double beta) {
  cpu::GemmBackend which;
  if (backend == "auto") {
    which = cpu::gemm_backend();
  } else if (backend == "aten") {
    which = cpu::GemmBackend::kAten;
  } else if (backend == "openblas") {
    LIDVAE_CHECK(cpu::openblas_available(), "_gemm: ", cpu::openblas_description());
    which = cpu::GemmBackend::kOpenBlas;
  } else {
    LIDVAE_CHECK(false, "_gemm: backend must be auto, aten or openblas, got '", backend, "'");
  }
  cpu::gemm_out_with(which, out, a, b, alpha, base.has_value() ? *base : Tensor(), beta);
}

std::string runtime_info() {
  std::ostringstream os;
  os << "cpu_gemm=" << cpu::gemm_backend_name(cpu::gemm_backend()) << "\n";
  os << "cpu_gemm_backends=aten" << (cpu::openblas_available() ? ",openblas" : "") << "\n";
  os << "cpu_vendor=" << (cpu::intel_cpu() ? "intel" : "other") << "\n";
  os << "openblas=" << cpu::openblas_description() << "\n";
  os << "cpu_isa=" << cpu::isa_name(cpu::select_isa()) << "\n";
  os << "cpu_isas=";
  const char* sep = "";
  for (auto isa : cpu::supported_isas()) {
    os << sep << cpu::isa_name(isa);
    sep = ",";
  }
  os << "\n";
  return os.str();
}

void add_openblas_candidate_op(StrArg path) { cpu::add_openblas_candidate(path); }

std::string cpu_workspace_op(int64_t limit_bytes, bool release) {
  const int64_t released = release ? cpu::release_workspace() : 0;
  const cpu::WorkspaceStats s = cpu::set_workspace_limit(limit_bytes);
  std::ostringstream os;
  os << "cached_bytes=" << s.cached_bytes << "\ncached_blocks=" << s.cached_blocks
     << "\nlimit_bytes=" << s.limit_bytes << "\nhits=" << s.hits << "\nmisses=" << s.misses
     << "\nreleased_bytes=" << released << "\n";
  return os.str();
}

}  // namespace
}  // namespace lidvae

STABLE_TORCH_LIBRARY_IMPL(lidvae_ext, CPU, m) {
  m.impl("_gemm", TORCH_BOX(&lidvae::gemm_op));
}

STABLE_TORCH_LIBRARY_IMPL(lidvae_ext, CompositeExplicitAutograd, m) {
  m.impl("_runtime_info", TORCH_BOX(&lidvae::runtime_info));
  m.impl("_add_openblas_candidate", TORCH_BOX(&lidvae::add_openblas_candidate_op));
  m.impl("_cpu_workspace", TORCH_BOX(&lidvae::cpu_workspace_op));
}
