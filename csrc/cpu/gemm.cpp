// CPU GEMM backends of the fused kernels (see gemm.h).
#include "cpu/gemm.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#ifndef LIDVAE_OPENBLAS_BUILD_PATH
#define LIDVAE_OPENBLAS_BUILD_PATH ""
#endif

namespace lidvae {
namespace cpu {
namespace {

// The CBLAS entry points, declared here so that the build needs no OpenBLAS headers.
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*,
                         int, float, float*, int);
using DgemmFn = void (*)(int, int, int, int, int, int, double, const double*, int,
                         const double*, int, double, double*, int);
using SetThreadsFn = void (*)(int);
using GetThreadsFn = int (*)();
using NameFn = char* (*)();

struct OpenBlas {
  bool loaded = false;
  std::string path, error, config, core;
  SgemmFn sgemm = nullptr;
  DgemmFn dgemm = nullptr;
  SetThreadsFn set_threads = nullptr;
  GetThreadsFn get_threads = nullptr;
};

std::mutex& candidates_mutex() {
  static std::mutex m;
  return m;
}
std::vector<std::string>& candidates() {
  static std::vector<std::string> c;
  return c;
}

// <directory of this shared object>/../scipy_openblas32/lib/libscipy_openblas.so: where the
// package sits next to an installed lidvae_ext in site-packages.
std::string sibling_package_path() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&sibling_package_path), &info) == 0 || !info.dli_fname)
    return "";
  std::string self(info.dli_fname);
  const auto slash = self.rfind('/');
  if (slash == std::string::npos) return "";
  return self.substr(0, slash) + "/../scipy_openblas32/lib/libscipy_openblas.so";
}

bool try_load(const std::string& path, OpenBlas& lib, std::string& why) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    why = err ? err : "dlopen failed";
    return false;
  }
  lib.sgemm = reinterpret_cast<SgemmFn>(dlsym(handle, "scipy_cblas_sgemm"));
  lib.dgemm = reinterpret_cast<DgemmFn>(dlsym(handle, "scipy_cblas_dgemm"));
  lib.set_threads = reinterpret_cast<SetThreadsFn>(dlsym(handle, "scipy_openblas_set_num_threads"));
  lib.get_threads = reinterpret_cast<GetThreadsFn>(dlsym(handle, "scipy_openblas_get_num_threads"));
  auto config = reinterpret_cast<NameFn>(dlsym(handle, "scipy_openblas_get_config"));
  auto core = reinterpret_cast<NameFn>(dlsym(handle, "scipy_openblas_get_corename"));
  if (!lib.sgemm || !lib.dgemm || !lib.set_threads || !lib.get_threads) {
    why = path + ": no scipy_cblas_sgemm/dgemm/openblas_set_num_threads symbols";
    dlclose(handle);
    return false;
  }
  lib.path = path;
  lib.config = config ? config() : "OpenBLAS";
  lib.core = core ? core() : "?";
  // Single-threaded calls: the kernels split each product over torch's threads (gemm.h).
  lib.set_threads(1);
  lib.loaded = true;
  return true;
}

const OpenBlas& openblas() {
  static const OpenBlas lib = [] {
    OpenBlas out;
    std::vector<std::string> paths;
    // An explicit LIDVAE_OPENBLAS_LIB is the only candidate (and a path that does not load
    // means "no OpenBLAS"); otherwise the package's path, the build's, the one next to
    // this library, the plain soname.
    const char* env = std::getenv("LIDVAE_OPENBLAS_LIB");
    if (env && *env) {
      paths.emplace_back(env);
    } else {
      {
        std::lock_guard<std::mutex> guard(candidates_mutex());
        paths.insert(paths.end(), candidates().begin(), candidates().end());
      }
      if (std::strlen(LIDVAE_OPENBLAS_BUILD_PATH) > 0) paths.emplace_back(LIDVAE_OPENBLAS_BUILD_PATH);
      if (auto sibling = sibling_package_path(); !sibling.empty()) paths.push_back(sibling);
      paths.emplace_back("libscipy_openblas.so");
    }
    std::string errors;
    for (const auto& path : paths) {
      std::string why;
      if (try_load(path, out, why)) return out;
      if (errors.empty()) errors = why;  // the first (most specific) reason
    }
    out.error = "scipy-openblas32 not found (" + errors + ")";
    return out;
  }();
  return lib;
}

// Parsed LIDVAE_CPU_GEMM: 0 auto, 1 aten, 2 openblas.
int requested_backend() {
  const char* env = std::getenv("LIDVAE_CPU_GEMM");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "auto") == 0) return 0;
  if (std::strcmp(env, "aten") == 0) return 1;
  if (std::strcmp(env, "openblas") == 0) return 2;
  LIDVAE_CHECK(false, "LIDVAE_CPU_GEMM must be auto, aten or openblas, got '", env, "'");
}

// Leading dimension and transpose flag of a (rows, cols) view for row-major CBLAS, or
// false when neither of its strides is 1 (or it does not fit 32-bit indices).
bool cblas_layout(const Tensor& t, int& trans, int& ld) {
  const int64_t r = t.size(0), c = t.size(1), s0 = t.stride(0), s1 = t.stride(1);
  if ((s1 == 1 || c == 1) && (r == 1 || s0 >= std::max<int64_t>(c, 1))) {
    trans = kNoTrans;
    const int64_t l = r == 1 ? std::max<int64_t>(c, 1) : s0;
    if (l > INT_MAX) return false;
    ld = static_cast<int>(l);
    return true;
  }
  if ((s0 == 1 || r == 1) && (c == 1 || s1 >= std::max<int64_t>(r, 1))) {
    trans = kTrans;
    const int64_t l = c == 1 ? std::max<int64_t>(r, 1) : s1;
    if (l > INT_MAX) return false;
    ld = static_cast<int>(l);
    return true;
  }
  return false;
}

void aten_gemm(const Tensor& out, const Tensor& a, const Tensor& b, double alpha,
               const Tensor& base, double beta) {
  if (!base.defined()) {
    if (alpha == 1.0) mm_out(out, a, b); else addmm_out_cpu(out, out, a, b, 0.0, alpha);
  } else {
    addmm_out_cpu(out, base, a, b, beta, alpha);  // base may be out itself (ATen's addmm_)
  }
}

// One CBLAS call on the block rows [r0, r1) x cols [c0, c1) of out.
template <typename T, typename Fn>
void cblas_block(Fn gemm, int ta, int tb, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                 int64_t k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
                 int ldc) {
  const T* a_blk = ta == kNoTrans ? a + r0 * lda : a + r0;
  const T* b_blk = tb == kNoTrans ? b + c0 : b + c0 * ldb;
  gemm(kRowMajor, ta, tb, static_cast<int>(r1 - r0), static_cast<int>(c1 - c0),
       static_cast<int>(k), alpha, a_blk, lda, b_blk, ldb, beta, c + r0 * ldc + c0, ldc);
}

template <typename T, typename Fn>
void openblas_gemm(Fn gemm, const Tensor& out, const Tensor& a, const Tensor& b,
                   int ta, int lda, int tb, int ldb, int ldc, T alpha, T beta) {
  const int64_t m = out.size(0), n = out.size(1), k = a.size(1);
  const T* a_p = a.const_data_ptr<T>();
  const T* b_p = b.const_data_ptr<T>();
  T* c_p = out.mutable_data_ptr<T>();
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  // Below ~1 MFLOP a split costs more than it saves. (In double: m, n, k <= INT_MAX each,
  // so the int64_t product m * n * k could overflow.)
  const bool split = threads > 1 && static_cast<double>(m) * static_cast<double>(n) *
                                            static_cast<double>(k) >= double(1 << 19);
  if (!split) {
    cblas_block<T>(gemm, ta, tb, 0, m, 0, n, k, alpha, a_p, lda, b_p, ldb, beta, c_p, ldc);
    return;
  }
  // Split the longer side of out into `threads` blocks (multiples of 16 where possible);
  // each thread runs a single-threaded OpenBLAS call on its block.
  const bool by_rows = m >= n;
  const int64_t extent = by_rows ? m : n;
  const int64_t step = std::max<int64_t>(1, ((extent + threads - 1) / threads + 15) / 16 * 16);
  const int64_t blocks = (extent + step - 1) / step;
  parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t lo = blk * step, hi = std::min(extent, lo + step);
      if (by_rows) {
        cblas_block<T>(gemm, ta, tb, lo, hi, 0, n, k, alpha, a_p, lda, b_p, ldb, beta, c_p, ldc);
      } else {
        cblas_block<T>(gemm, ta, tb, 0, m, lo, hi, k, alpha, a_p, lda, b_p, ldb, beta, c_p, ldc);
      }
    }
  });
}

}  // namespace

void add_openblas_candidate(const std::string& path) {
  std::lock_guard<std::mutex> guard(candidates_mutex());
  candidates().push_back(path);
}

bool openblas_available() { return openblas().loaded; }

std::string openblas_description() {
  const OpenBlas& lib = openblas();
  if (!lib.loaded) return lib.error;
  return lib.config + "; core " + lib.core + "; " + lib.path;
}

bool intel_cpu() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool intel = [] {
    __builtin_cpu_init();
    return __builtin_cpu_is("intel") != 0;
  }();
  return intel;
#else
  return false;
#endif
}

const char* gemm_backend_name(GemmBackend backend) {
  return backend == GemmBackend::kOpenBlas ? "openblas" : "aten";
}

GemmBackend gemm_backend() {
  const int want = requested_backend();
  if (want == 1) return GemmBackend::kAten;
  if (want == 2) {
    LIDVAE_CHECK(openblas_available(), "LIDVAE_CPU_GEMM=openblas but ", openblas_description());
    return GemmBackend::kOpenBlas;
  }
  // auto: on Intel CPUs torch's own GEMMs (MKL in the x86 wheels) beat OpenBLAS's at the
  // kernels' shapes (2-vCPU Xeon, 2 threads: every C1-C4 step 1-12 % faster, docs/benchmarks.md);
  // elsewhere (AMD: MKL's slower generic paths) OpenBLAS's kernels ran about twice ATen's rate.
  if (openblas_available()) return intel_cpu() ? GemmBackend::kAten : GemmBackend::kOpenBlas;
  static std::once_flag notice;
  std::call_once(notice, [] {
    std::fprintf(stderr, "lidvae_ext: CPU GEMMs use ATen: %s\n", openblas_description().c_str());
  });
  return GemmBackend::kAten;
}

void gemm_out_with(GemmBackend backend, const Tensor& out, const Tensor& a,
                   const Tensor& b, double alpha, const Tensor& base, double beta) {
  LIDVAE_CHECK(a.dim() == 2 && b.dim() == 2 && out.dim() == 2 && a.size(1) == b.size(0) &&
                  out.size(0) == a.size(0) && out.size(1) == b.size(1),
               "gemm_out: sizes out ", shape_str(out), " = a ", shape_str(a), " @ b ", shape_str(b));
  const auto dtype = out.scalar_type();
  int ta = 0, tb = 0, tc = 0, lda = 0, ldb = 0, ldc = 0;
  // CBLAS takes 32-bit ints (scipy-openblas32): a size or leading dimension past INT_MAX
  // goes to ATen (mm / addmm, 64-bit sizes) instead. Block offsets (cblas_block) are
  // int64_t, and OpenBLAS indexes with 64-bit BLASLONG internally, so operands of more than
  // 2^31 elements are fine (tests/test_large_index.py).
  const bool fits = a.size(1) <= INT_MAX && out.size(0) <= INT_MAX && out.size(1) <= INT_MAX;
  const bool usable = backend == GemmBackend::kOpenBlas && openblas_available() && fits &&
                      is_floating(dtype) && a.scalar_type() == dtype &&
                      b.scalar_type() == dtype && (!base.defined() || base.scalar_type() == dtype) &&
                      out.is_cpu() && a.is_cpu() && b.is_cpu() &&
                      cblas_layout(a, ta, lda) && cblas_layout(b, tb, ldb) &&
                      cblas_layout(out, tc, ldc) && tc == kNoTrans;
  if (!usable) {
    aten_gemm(out, a, b, alpha, base, beta);
    return;
  }
  if (out.numel() == 0) return;
  if (base.defined() && !same_view(base, out)) copy_into(out, base);
  if (!base.defined()) beta = 0.0;
  if (a.size(1) == 0) {  // empty sum: out = beta * base
    if (beta == 0.0) {
      fill_zero(out);
    } else if (dtype == ScalarType::Float) {
      scale_<float>(out, static_cast<float>(beta));
    } else {
      scale_<double>(out, beta);
    }
    return;
  }
  const OpenBlas& lib = openblas();
  if (dtype == ScalarType::Float) {
    openblas_gemm<float>(lib.sgemm, out, a, b, ta, lda, tb, ldb, ldc, static_cast<float>(alpha),
                         static_cast<float>(beta));
  } else {
    openblas_gemm<double>(lib.dgemm, out, a, b, ta, lda, tb, ldb, ldc, alpha, beta);
  }
}

void gemm_out(const Tensor& out, const Tensor& a, const Tensor& b, double alpha,
              const Tensor& base, double beta) {
  gemm_out_with(gemm_backend(), out, a, b, alpha, base, beta);
}

}  // namespace cpu
}  // namespace lidvae
