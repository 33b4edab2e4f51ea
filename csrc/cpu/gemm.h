// The one matrix-product entry of the CPU kernels, with run-time selectable backends.
//
//   aten      ATen's mm/addmm (torch's MKL or its bundled BLAS), called through the stable
//             ABI (csrc/stable.h): always available.
//   openblas  OpenBLAS of the PyPI package scipy-openblas32 (symbols prefixed scipy_),
//             loaded with dlopen at first use — never linked — so the extension builds
//             and runs without it (ATen then, with a one-line notice on stderr). Where
//             from: LIDVAE_OPENBLAS_LIB if set (then only there), else the path the
//             installed scipy_openblas32 package reports, the build-time path, the
//             package next to this library in site-packages, the soname.
//
// The backend is read from LIDVAE_CPU_GEMM=auto|aten|openblas at every operator call
// (auto, the default: aten on Intel CPUs, where torch's MKL GEMMs are the faster ones;
// elsewhere openblas when it loads, else aten); an explicit `openblas` that cannot load is an
// error. OpenBLAS runs single-threaded inside torch's parallel_for over
// blocks of the output (split_gemm), so torch's intra-op thread count is the only
// thread count and one thread pool (OpenMP) does every pass: no second pool whose
// spinning workers would compete with the row passes for the cores.
#pragma once

#include "stable.h"

#include <string>

namespace lidvae {
namespace cpu {

enum class GemmBackend { kAten, kOpenBlas };

// The backend LIDVAE_CPU_GEMM asks for, resolved against what loads and the CPU (see above).
GemmBackend gemm_backend();

// Whether the CPU is an Intel one (the auto choice of backend).
bool intel_cpu();

// "aten" / "openblas".
const char* gemm_backend_name(GemmBackend backend);

// Whether OpenBLAS loaded, and a one-line description: version, core, path — or why not.
bool openblas_available();
std::string openblas_description();

// Registers a candidate path of libscipy_openblas.so (the Python module passes the one the
// scipy_openblas32 package reports) to try before the built-in ones. Only effective
// before the library is first loaded.
void add_openblas_candidate(const std::string& path);

// out = alpha * a @ b + beta * base, on 2-D float32/float64 views with one unit stride
// each (row-major or transposed; out row-major). `base` undefined: beta is ignored (0);
// `base` may be `out` itself (accumulate). Views the backend cannot take go to ATen.
void gemm_out(const Tensor& out, const Tensor& a, const Tensor& b, double alpha = 1.0,
              const Tensor& base = Tensor(), double beta = 0.0);

// The same with an explicit backend (tests and benchmarks: the _gemm operator).
void gemm_out_with(GemmBackend backend, const Tensor& out, const Tensor& a,
                   const Tensor& b, double alpha, const Tensor& base, double beta);

// out += a @ b
inline void gemm_acc(const Tensor& out, const Tensor& a, const Tensor& b) {
  gemm_out(out, a, b, 1.0, out, 1.0);
}

}  // namespace cpu
}  // namespace lidvae
