// CUDA implementation of the ICNN operators (DESIGN.md §3): host code.
//
// Same semantics, validation and outputs as csrc/cpu/icnn_cpu.cpp. Two paths
// (kernels in icnn_cuda_kernels.cuh; design notes in docs/cuda.md):
//   * fused: H in {16, 32, 64, 128} and the weights fit in shared memory —
//     one launch for the forward, one (+ a small deterministic reduction) for
//     the backward;
//   * generic: any H — the CPU algorithm step for step, with cuBLAS GEMMs
//     through torch (aten::mm.out / mv.out via the dispatcher, addmm / addmv through
//     the AOTI C shims; they honour torch's allow_tf32 settings) and fused
//     elementwise kernels in between.
// The environment variable LIDVAE_CUDA_FUSED selects the path: unset / "auto"
// (fused when supported, else generic), "0" (always generic), "1" (always
// fused; an error when the shape is not supported).
//
// LibTorch stable ABI (like the CPU kernels, csrc/stable.h; docs/wheel.md): the device
// guard is torch::stable::accelerator::DeviceGuard, kernels go to torch's current
// stream of the device (AOTI C shim aoti_torch_get_current_cuda_stream), the current
// device and its limits come from the CUDA runtime (cudaGetDevice,
// cudaDeviceGetAttribute).
//
// LIDVAE_CUDA_EMULATION (never set by setup.py/CMake) is for
// scripts/cuda_emulation, which runs this file unchanged on the CPU: it swaps
// the CUDA runtime, the guard, the stream and the <<<>>> launch in launch_kernel() for
// CPU stand-ins, and registers the operators under a test-only namespace.
#ifndef LIDVAE_CUDA_EMULATION
#ifndef USE_CUDA
#define USE_CUDA  // the CUDA declarations of the AOTI C shim (aoti_torch_get_current_cuda_stream)
#endif
#include <torch/csrc/stable/accelerator.h>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda/device_ops.h"
#include "cuda/icnn_cuda_kernels.cuh"
#include "icnn_activations.h"
#include "icnn_checks.h"
#include "icnn_outputs.h"
#include "stable.h"

#ifndef LIDVAE_CUDA_ARCH_LIST
#define LIDVAE_CUDA_ARCH_LIST ""
#endif

namespace lidvae {
namespace cuda {

// Trivial kernel whose attributes are queried once per device: when the
// binary holds no image for the GPU's architecture the query fails.
__global__ void icnn_arch_probe_kernel(int* __restrict__ unused) {  // never dereferenced
  (void)unused;
}

namespace {

constexpr int kMaxDevices = 64;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A failed CUDA runtime call is an error naming the call (C10_CUDA_CHECK).
#define LIDVAE_CUDA_CHECK(expr)                                                                     \
  do {                                                                                              \
    const cudaError_t lidvae_err = (expr);                                                          \
    LIDVAE_CHECK(lidvae_err == cudaSuccess, "lidvae_ext: CUDA error: ", cudaGetErrorString(lidvae_err), \
                 " (", #expr, ")");                                                                 \
  } while (0)

int current_device() {
  int device = 0;
  LIDVAE_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

// torch's current stream of the current device.
[[maybe_unused]] cudaStream_t current_stream() {
#ifdef LIDVAE_CUDA_EMULATION
  return nullptr;
#else
  void* stream = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(current_device(), &stream));
  return static_cast<cudaStream_t>(stream);
#endif
}

#ifdef LIDVAE_CUDA_EMULATION
using DeviceGuard = emu::DeviceGuard;
#else
using DeviceGuard = torch::stable::accelerator::DeviceGuard;
#endif

// Per-device limits the launch configuration needs, queried once per device.
struct DeviceLimits {
  int sms;         // multiprocessors
  int64_t smem;    // opt-in dynamic shared memory per block, bytes
};

DeviceLimits device_limits() {
  static std::array<std::atomic<int>, kMaxDevices> sms_cache{};
  static std::array<std::atomic<int>, kMaxDevices> smem_cache{};
  const int device = current_device();
  const bool cacheable = device >= 0 && device < kMaxDevices;
  if (cacheable) {
    const int sms = sms_cache[device].load(std::memory_order_relaxed);
    const int smem = smem_cache[device].load(std::memory_order_relaxed);
    if (sms > 0 && smem > 0) return {sms, smem};
  }
  int sms = 0, smem = 0;
  LIDVAE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  LIDVAE_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (cacheable) {
    sms_cache[device].store(sms, std::memory_order_relaxed);
    smem_cache[device].store(smem, std::memory_order_relaxed);
  }
  return {sms, smem};
}

// "NAME (compute capability X.Y)" of the current device, for error messages.
std::string device_description(int* major_out = nullptr, int* minor_out = nullptr) {
  const int device = current_device();
  cudaDeviceProp prop;
  LIDVAE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  if (major_out != nullptr) *major_out = prop.major;
  if (minor_out != nullptr) *minor_out = prop.minor;
  return "cuda:" + std::to_string(static_cast<int>(device)) + " (" + prop.name + ", compute capability " +
         std::to_string(prop.major) + "." + std::to_string(prop.minor) + ")";
}

// A GPU whose architecture is not in the compiled list gets a readable error
// on first use (instead of "no kernel image is available" from a launch):
// the probe kernel's attributes exist only if the binary can run here.
void check_arch_supported() {
  static std::array<std::atomic<bool>, kMaxDevices> supported{};
  const int device = current_device();
  const bool cacheable = device >= 0 && device < kMaxDevices;
  if (cacheable && supported[device].load(std::memory_order_relaxed)) return;
  cudaFuncAttributes attributes;
  const cudaError_t err = cudaFuncGetAttributes(&attributes, icnn_arch_probe_kernel);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear it: the error is reported below
    int major = 0, minor = 0;
    const std::string where = device_description(&major, &minor);
    LIDVAE_CHECK(false, "lidvae_ext: the CUDA kernels were compiled for TORCH_CUDA_ARCH_LIST=\"",
                LIDVAE_CUDA_ARCH_LIST, "\", which has no code for ", where, " (CUDA: ",
                cudaGetErrorString(err), "). Rebuild for this GPU with TORCH_CUDA_ARCH_LIST=\"", major,
                ".", minor,
                "\" pip install --no-build-isolation --force-reinstall --no-deps . "
                "(or use backend='reference').");
  }
  if (cacheable) supported[device].store(true, std::memory_order_relaxed);
}

enum class PathMode { Auto, Generic, Fused };

PathMode path_mode() {
  const char* env = std::getenv("LIDVAE_CUDA_FUSED");
  if (env == nullptr || *env == '\0') return PathMode::Auto;
  const std::string value(env);
  if (value == "auto") return PathMode::Auto;
  if (value == "0") return PathMode::Generic;
  if (value == "1") return PathMode::Fused;
  LIDVAE_CHECK(false,
              "lidvae_ext: LIDVAE_CUDA_FUSED must be 'auto' (default), '0' (cuBLAS path) or '1' "
              "(fused kernels, error when unsupported), got '",
              value, "'");
}

// Column block [layer*H, (layer+1)*H) of a (B, *) row-major matrix.
inline Tensor block(const Tensor& t, int64_t layer, int64_t hidden) {
  return narrowed(t, 1, layer * hidden, hidden);
}

int64_t num_sms() { return device_limits().sms; }

// Launches `kernel` on the current stream, then checks the launch.
template <typename... KArgs, typename... Args>
void launch_kernel(void (*kernel)(KArgs...), int64_t grid, int block, int64_t smem_bytes, Args&&... args) {
#ifdef LIDVAE_CUDA_EMULATION
  LIDVAE_EMU_LAUNCH(kernel, dim3(static_cast<unsigned>(grid)), dim3(static_cast<unsigned>(block)),
                    static_cast<size_t>(smem_bytes), std::forward<Args>(args)...);
#else
  kernel<<<static_cast<unsigned>(grid), static_cast<unsigned>(block), static_cast<size_t>(smem_bytes),
           current_stream()>>>(std::forward<Args>(args)...);
#endif
  LIDVAE_CUDA_CHECK(cudaGetLastError());
}

// Grid for the grid-stride elementwise kernels (total > 0 work items).
unsigned elementwise_grid(int64_t total) {
  return static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>(ceil_div(total, kElementwiseThreads), num_sms() * 32)));
}

// Grid for the one-warp-per-row kernels.
unsigned rows_grid(int64_t rows) {
  return static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>(ceil_div(rows, kRowsPerBlock), num_sms() * 32)));
}

// ---------------------------------------------------------------------------
// Generic path (any width): the CPU algorithm with cuBLAS GEMMs.
// ---------------------------------------------------------------------------

template <typename T, Activation act>
void launch_act_columns(T* out, int64_t out_ld, int64_t out_off, const T* pre, int64_t pre_ld,
                        int64_t pre_off, int64_t rows, int64_t cols, int64_t H, T slope) {
  launch_kernel(icnn_act_columns_kernel<T, act>, elementwise_grid(rows * cols), kElementwiseThreads, 0,
                out, out_ld, out_off, pre, pre_ld, pre_off, rows, cols, H, slope);
}

template <typename T, Activation act>
void launch_dact_scale(T* out, int64_t out_ld, int64_t out_off, const T* pre, int64_t pre_ld,
                       int64_t pre_off, const T* x, int64_t x_ld, int64_t x_off, int64_t rows,
                       int64_t cols, int64_t H, T slope) {
  launch_kernel(icnn_dact_scale_kernel<T, act>, elementwise_grid(rows * cols), kElementwiseThreads, 0,
                out, out_ld, out_off, pre, pre_ld, pre_off, x, x_ld, x_off, rows, cols, H, slope);
}

template <typename T, Activation act>
void generic_forward(const Tensor& y, const Tensor& A, const Tensor& b, const Tensor& W,
                     const Tensor& w_out, T alpha, T slope, const IcnnDims& dims, Tensor& psi,
                     Tensor& grad, Tensor& pre, Tensor& upstream) {
  const int64_t B = dims.batch, K = dims.in_dim, H = dims.hidden, L = dims.layers, M = dims.stacked;
  const int64_t LHs = (L - 1) * H;  // saved upstream width
  const bool padded = K < dims.dim;  // y stands for [y, 0]: only A's first K columns meet it

  // Every input product A_l y + b_l in one GEMM: pre = b + y A^T.
  device::addmm_out(pre, b, y, padded ? transposed(narrowed(A, 1, 0, K)) : transposed(A), 1.0, 1.0);
  T* pre_p = pre.mutable_data_ptr<T>();

  // Forward through the layers; z holds z_{l-1} while layer l is formed.
  Tensor z = empty({B, H}, y);
  T* z_p = z.mutable_data_ptr<T>();
  launch_act_columns<T, act>(z_p, H, 0, pre_p, M, 0, B, H, H, slope);
  for (int64_t l = 1; l < L; ++l) {
    device::addmm_acc(block(pre, l, H), z, transposed(pick(W, 0, l - 1)));
    launch_act_columns<T, act>(z_p, H, 0, pre_p, M, l * H, B, H, H, slope);
  }

  // Output layer, potential and the first reverse step (e_{L-1} = delta_L w_out
  // is not saved: the backward rebuilds it from a_L).
  Tensor delta = empty({B, M}, y);
  T* delta_p = delta.mutable_data_ptr<T>();
  T* up_p = upstream.mutable_data_ptr<T>();
  launch_kernel(icnn_forward_output_kernel<T, act>, rows_grid(B), kElementwiseThreads, 0, pre_p,
                psi.mutable_data_ptr<T>(), delta_p, z_p, y.mutable_data_ptr<T>(), w_out.mutable_data_ptr<T>(), B, K, H, L, alpha,
                slope);

  // Remaining reverse steps: e_{l-1} = W_l^T delta_l, delta_{l-1} = sigma'(a_{l-1}) e_{l-1}.
  for (int64_t l = L - 1; l >= 1; --l) {
    Tensor e_prev = block(upstream, l - 1, H);
    mm_out(e_prev, block(delta, l, H), pick(W, 0, l - 1));
    launch_dact_scale<T, act>(delta_p, M, (l - 1) * H, pre_p, M, (l - 1) * H, up_p, LHs, (l - 1) * H, B,
                              H, H, slope);
  }
  // grad = sum_l A_l^T delta_l + alpha [y, 0]: one GEMM with the stacked A.
  if (!padded) {
    device::addmm_out(grad, y, delta, A, /*beta=*/alpha, /*alpha=*/1.0);
  } else {
    mm_out(grad, delta, A);
    if (alpha != T(0)) device::add_scaled(narrowed(grad, 1, 0, K), y, alpha);
  }
}

template <typename T, Activation act>
void generic_backward(const Tensor* grad_psi, const Tensor& v, const Tensor& y, const Tensor& A,
                      const Tensor& W, const Tensor& w_out, const Tensor& grad, const Tensor& pre,
                      const Tensor& upstream, T alpha, T slope, bool need_input_grad,
                      const IcnnDims& dims, Tensor& grad_y, Tensor& grad_A, Tensor& grad_b,
                      Tensor& grad_W, Tensor& grad_w_out) {
  using F = Act<act>;
  constexpr bool kCurved = F::kHiddenCurvature;
  const int64_t B = dims.batch, K = dims.in_dim, H = dims.hidden, L = dims.layers, M = dims.stacked;
  const int64_t LH = L * H;
  const bool padded = K < dims.dim;  // y stands for [y, 0]
  const T* pre_p = pre.mutable_data_ptr<T>();
  const T* up_p = upstream.mutable_data_ptr<T>();
  const T* wo_p = w_out.mutable_data_ptr<T>();

  // Tangent of the forward pass along v: adot = A v (+ W_l zdot_{l-1}), zdot = sigma'(a) adot.
  Tensor tan = device::mm(v, transposed(A));  // (B, M)
  const T* tan_p = tan.mutable_data_ptr<T>();
  Tensor ztan = empty({B, LH}, y);  // zdot_0 .. zdot_{L-1}
  T* zt_p = ztan.mutable_data_ptr<T>();
  launch_dact_scale<T, act>(zt_p, LH, 0, pre_p, M, 0, tan_p, M, 0, B, H, H, slope);
  for (int64_t l = 1; l < L; ++l) {
    device::addmm_acc(block(tan, l, H), block(ztan, l - 1, H), transposed(pick(W, 0, l - 1)));
    launch_dact_scale<T, act>(zt_p, LH, l * H, pre_p, M, l * H, tan_p, M, l * H, B, H, H, slope);
  }

  // Sensitivities delta = sigma'(a) * e (delta_L = sigma'(a_L)), recomputed from the saved e.
  Tensor delta = empty({B, M}, y);
  launch_kernel(icnn_delta_kernel<T, act>, elementwise_grid(B * M), kElementwiseThreads, 0,
                delta.mutable_data_ptr<T>(), pre_p, up_p, wo_p, B, H, L, slope);

  // The CPU path skips an all-zero grad_psi after a host-side check; here a
  // defined grad_psi is always used (no device synchronisation; the extra
  // terms are exact zeros then).
  const bool has_u = grad_psi != nullptr;

  // Primal activations z_l (the potential's own gradient, curvature terms).
  Tensor zprim;
  if (has_u || kCurved) {
    zprim = empty({B, LH}, y);
    launch_act_columns<T, act>(zprim.mutable_data_ptr<T>(), LH, 0, pre_p, M, 0, B, LH, H, slope);
  }

  // Curvature adjoints r. Leaky ReLU: only r_0 = sigma_0''(a_0) adot_0 e_0 is non-zero.
  Tensor r = empty({B, kCurved ? M : H}, y);
  T* r_p = r.mutable_data_ptr<T>();
  if (!kCurved) {
    launch_kernel(icnn_r0_kernel<T, act>, elementwise_grid(B * H), kElementwiseThreads, 0, r_p, pre_p,
                  tan_p, up_p, wo_p, B, H, L, slope);
  } else {
    launch_kernel(icnn_r_out_kernel<T, act>, rows_grid(B), kElementwiseThreads, 0, r_p, pre_p, tan_p,
                  zt_p, wo_p, B, H, L, slope);
    Tensor back = L > 1 ? empty({B, H}, y) : Tensor();
    for (int64_t l = L - 1; l >= 1; --l) {
      mm_out(back, block(r, l, H), pick(W, 0, l - 1));
      launch_kernel(icnn_r_hidden_kernel<T, act>, elementwise_grid(B * H), kElementwiseThreads, 0, r_p,
                    pre_p, tan_p, up_p, back.mutable_data_ptr<T>(), B, H, L, (l - 1) * H, slope);
    }
  }

  // The potential's own gradient enters through z~ = zdot + u z and v~ = v + u y.
  Tensor v_mix = v;
  if (has_u) {
    device::add_mul_col(ztan, zprim, *grad_psi);
    v_mix = torch::stable::clone(v);
    device::add_mul_col(narrowed(v_mix, 1, 0, K), y, *grad_psi);
  }

  // Weight gradients: dW_l = delta_l^T z~_{l-1} (+ r_l^T z_{l-1}).
  for (int64_t l = 1; l < L; ++l) {
    Tensor gW = pick(grad_W, 0, l - 1);
    mm_out(gW, transposed(block(delta, l, H)), block(ztan, l - 1, H));
    if (kCurved) device::addmm_acc(gW, transposed(block(r, l, H)), block(zprim, l - 1, H));
  }
  mv_out(grad_w_out, transposed(block(ztan, L - 1, H)), pick(delta, 1, M - 1));
  if (kCurved) device::addmv_acc(grad_w_out, transposed(block(zprim, L - 1, H)), pick(r, 1, M - 1));

  // dA = delta^T v~ + r^T y; db = u^T delta + sum_batch r.
  mm_out(grad_A, transposed(delta), v_mix);
  Tensor grad_A_in = padded ? narrowed(grad_A, 1, 0, K) : grad_A;  // the columns y meets
  if (kCurved) {
    device::addmm_acc(grad_A_in, transposed(r), y);
    sum0_out(grad_b, r);
  } else {
    device::addmm_acc(narrowed(grad_A_in, 0, 0, H), transposed(r), y);
    fill_zero(grad_b);
    sum0_out(narrowed(grad_b, 0, 0, H), r);
  }
  if (has_u) device::addmv_acc(grad_b, transposed(delta), *grad_psi);

  // dy = u grad + sum_l A_l^T r_l + alpha v (first K columns when y is padded).
  if (need_input_grad) {
    const Tensor A_r = narrowed(kCurved ? A : narrowed(A, 0, 0, H), 1, 0, K);
    device::addmm_out(grad_y, narrowed(v, 1, 0, K), r, A_r, /*beta=*/alpha, /*alpha=*/1.0);
    if (has_u) device::add_mul_col(grad_y, narrowed(grad, 1, 0, K), *grad_psi);
  }
}

// ---------------------------------------------------------------------------
// Fused path (H in {16, 32, 64, 128}).
// ---------------------------------------------------------------------------

// Makes `bytes` of dynamic shared memory available to `kernel` on the current
// device and returns how many of its blocks fit on one SM (0: none). The
// attribute is raised to the device's opt-in maximum once per (kernel,
// device); occupancies are cached per (kernel, device, bytes). Neither call is
// stream-ordered, so this also works while a CUDA graph is being captured.
int prepare_fused_kernel(const void* kernel, int64_t bytes) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, bool> configured;
  static std::map<std::tuple<const void*, int, int64_t>, int> occupancy;
  const int device = current_device();
  std::lock_guard<std::mutex> lock(mutex);
  const auto found = occupancy.find({kernel, device, bytes});
  if (found != occupancy.end()) return found->second;
  if (!configured[{kernel, device}]) {
    LIDVAE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(device_limits().smem)));
    configured[{kernel, device}] = true;
  }
  int per_sm = 0;
  LIDVAE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kFusedThreads,
                                                               static_cast<size_t>(bytes)));
  occupancy[{kernel, device, bytes}] = per_sm;
  return per_sm;
}

// Explains why the fused kernel cannot run (always an error under
// LIDVAE_CUDA_FUSED=1; the automatic mode falls back to the generic path).
[[noreturn]] void fused_unsupported(const char* op, const IcnnDims& dims, ScalarType dtype,
                                    int64_t bytes, int64_t limit) {
  LIDVAE_CHECK(false, op, ": LIDVAE_CUDA_FUSED=1 but the fused CUDA kernel needs ", bytes,
              " bytes of shared memory per block for H = ", dims.hidden, ", L = ", dims.layers,
              ", d = ", dims.dim, " (", dtype, ") and ", device_description(), " allows ", limit,
              " (sharedMemPerBlockOptin). The stacked weights (about (L*H+1)*(d+1) + (L-1)*H*(H+1) "
              "elements) must fit: reduce d, L or H, use float32, or unset LIDVAE_CUDA_FUSED "
              "(or set it to 0) to use the cuBLAS path, which has no such limit.");
}

template <typename T, int H, Activation act>
bool fused_forward(const Tensor& y, const Tensor& A, const Tensor& b, const Tensor& W,
                   const Tensor& w_out, T alpha, T slope, const IcnnDims& dims, Tensor& psi,
                   Tensor& grad, Tensor& pre, Tensor& upstream, PathMode mode) {
  constexpr const char* op = "lidvae_ext::icnn_forward";
  const DeviceLimits limits = device_limits();
  const int64_t limit = limits.smem;
  const int64_t bytes = fused_forward_smem_elems<H>(dims.dim, dims.layers) * int64_t(sizeof(T));
  if (bytes > limit) {
    if (mode == PathMode::Fused) fused_unsupported(op, dims, y.scalar_type(), bytes, limit);
    return false;
  }
  auto* kernel = icnn_fused_forward_kernel<T, H, act>;
  const int per_sm = prepare_fused_kernel(reinterpret_cast<const void*>(kernel), bytes);
  if (per_sm < 1) {
    if (mode == PathMode::Fused) fused_unsupported(op, dims, y.scalar_type(), bytes, limit);
    return false;
  }
  const int64_t grid =
      std::min<int64_t>(ceil_div(dims.batch, FusedTraits<H>::kGroups), int64_t(per_sm) * limits.sms);
  launch_kernel(kernel, grid, kFusedThreads, bytes, y.mutable_data_ptr<T>(), A.mutable_data_ptr<T>(), b.mutable_data_ptr<T>(),
                W.mutable_data_ptr<T>(), w_out.mutable_data_ptr<T>(), psi.mutable_data_ptr<T>(), grad.mutable_data_ptr<T>(),
                pre.mutable_data_ptr<T>(), upstream.mutable_data_ptr<T>(), dims.batch, static_cast<int>(dims.dim),
                static_cast<int>(dims.in_dim), static_cast<int>(dims.layers), alpha, slope);
  return true;
}

template <typename T, int H, Activation act>
bool fused_backward(const Tensor* grad_psi, const Tensor& v, const Tensor& y, const Tensor& A,
                    const Tensor& W, const Tensor& w_out, const Tensor& grad, const Tensor& pre,
                    const Tensor& upstream, T alpha, T slope, bool need_input_grad,
                    const IcnnDims& dims, Tensor& grad_y, Tensor& grad_A, Tensor& grad_b,
                    Tensor& grad_W, Tensor& grad_w_out, PathMode mode) {
  constexpr const char* op = "lidvae_ext::icnn_backward";
  constexpr int kGroups = FusedTraits<H>::kGroups;
  // Aim for tiles of >= 32 samples: each partial-row update is then shared by 32 samples.
  constexpr int kMaxSlots = kGroups >= 32 ? 1 : 32 / kGroups;
  const DeviceLimits limits = device_limits();
  const int64_t limit = limits.smem;
  const int64_t d = dims.dim, L = dims.layers, M = dims.stacked;
  int slots = kMaxSlots;
  auto smem_bytes = [&](int s) { return fused_backward_smem_elems<H>(d, L, s) * int64_t(sizeof(T)); };
  while (slots > 1 && smem_bytes(slots) > limit) --slots;
  const int64_t bytes = smem_bytes(slots);
  if (bytes > limit) {
    if (mode == PathMode::Fused) fused_unsupported(op, dims, y.scalar_type(), bytes, limit);
    return false;
  }
  auto* kernel = icnn_fused_backward_kernel<T, H, act>;
  const int per_sm = prepare_fused_kernel(reinterpret_cast<const void*>(kernel), bytes);
  if (per_sm < 1) {
    if (mode == PathMode::Fused) fused_unsupported(op, dims, y.scalar_type(), bytes, limit);
    return false;
  }
  const int64_t tile = int64_t(kGroups) * slots;
  const int64_t grid =
      std::min<int64_t>(ceil_div(dims.batch, tile), int64_t(per_sm) * limits.sms);
  const int64_t P = fused_partial_entries(d, H, L);
  // One partial row per block, zero-filled; every block adds its tiles into its own row.
  Tensor partial = zeros({grid, P}, y);
  const T* grad_psi_p = grad_psi != nullptr ? grad_psi->const_data_ptr<T>() : nullptr;
  T* grad_y_p = need_input_grad ? grad_y.mutable_data_ptr<T>() : nullptr;
  launch_kernel(kernel, grid, kFusedThreads, bytes, grad_psi_p, v.mutable_data_ptr<T>(), y.mutable_data_ptr<T>(),
                A.mutable_data_ptr<T>(), W.mutable_data_ptr<T>(), w_out.mutable_data_ptr<T>(),
                grad.defined() ? grad.mutable_data_ptr<T>() : nullptr, pre.mutable_data_ptr<T>(),
                upstream.mutable_data_ptr<T>(), grad_y_p, partial.mutable_data_ptr<T>(), dims.batch, static_cast<int>(d),
                static_cast<int>(dims.in_dim), static_cast<int>(L), slots, alpha, slope);
  launch_kernel(icnn_reduce_partials_kernel<T>, elementwise_grid(P), kElementwiseThreads, 0,
                partial.mutable_data_ptr<T>(), static_cast<int>(grid), P, M * d, M, (L - 1) * H * H,
                grad_A.mutable_data_ptr<T>(), grad_b.mutable_data_ptr<T>(), grad_W.mutable_data_ptr<T>(), grad_w_out.mutable_data_ptr<T>());
  return true;
}

// Runtime width -> compile-time width of the fused kernels. Returns false
// (generic path) when there is no fused kernel for H or it does not fit.
template <typename T, Activation act, typename... Args>
bool try_fused_forward(int64_t hidden, PathMode mode, Args&&... args) {
  switch (hidden) {
    case 16:
      return fused_forward<T, 16, act>(std::forward<Args>(args)..., mode);
    case 32:
      return fused_forward<T, 32, act>(std::forward<Args>(args)..., mode);
    case 64:
      return fused_forward<T, 64, act>(std::forward<Args>(args)..., mode);
    case 128:
      return fused_forward<T, 128, act>(std::forward<Args>(args)..., mode);
    default:
      return false;
  }
}

template <typename T, Activation act, typename... Args>
bool try_fused_backward(int64_t hidden, PathMode mode, Args&&... args) {
  switch (hidden) {
    case 16:
      return fused_backward<T, 16, act>(std::forward<Args>(args)..., mode);
    case 32:
      return fused_backward<T, 32, act>(std::forward<Args>(args)..., mode);
    case 64:
      return fused_backward<T, 64, act>(std::forward<Args>(args)..., mode);
    case 128:
      return fused_backward<T, 128, act>(std::forward<Args>(args)..., mode);
    default:
      return false;
  }
}

void check_fused_width(PathMode mode, int64_t hidden, const char* op) {
  LIDVAE_CHECK(mode != PathMode::Fused || hidden == 16 || hidden == 32 || hidden == 64 || hidden == 128,
              op, ": LIDVAE_CUDA_FUSED=1 but there is no fused CUDA kernel for H = ", hidden,
              " (fused widths: 16, 32, 64, 128); unset LIDVAE_CUDA_FUSED (or set it to 0) to use "
              "the cuBLAS path, which supports every width.");
}

// ---------------------------------------------------------------------------
// Operators
// ---------------------------------------------------------------------------

std::tuple<Tensor, Tensor, Tensor, Tensor> icnn_forward_cuda(
    const Tensor& y_in, const Tensor& A_in, const Tensor& b_in, const Tensor& W_in,
    const Tensor& w_out_in, double strong_convexity, StrArg activation,
    double negative_slope) {
  constexpr const char* op = "lidvae_ext::icnn_forward";
  const std::string& act_name = activation;
  // W >= 0 is not value-checked on CUDA: that would synchronise the device
  // (and is impossible inside CUDA graph capture).
  const IcnnDims dims = check_forward_args(y_in, A_in, b_in, W_in, w_out_in, strong_convexity, act_name,
                                           negative_slope, /*check_values=*/false, op);
  const DeviceGuard device_guard(y_in.get_device_index());
  check_arch_supported();
  const PathMode mode = path_mode();
  check_fused_width(mode, dims.hidden, op);
  const Tensor y = contig(y_in), A = contig(A_in), b = contig(b_in);
  const Tensor W = contig(W_in), w_out = contig(w_out_in);
  ForwardOutputs out(dims, y);
  if (dims.batch == 0) return out.tuple();
  Tensor &psi = out.psi, &grad = out.grad, &pre = out.pre, &upstream = out.upstream;
  const Activation act = parse_activation(act_name, op);
  dispatch_floating(y.scalar_type(), op, [&](auto zero) {
    using scalar_t = decltype(zero);
    dispatch_activation(act, [&](auto tag) {
      constexpr Activation kAct = decltype(tag)::value;
      const auto alpha = static_cast<scalar_t>(strong_convexity);
      const auto slope = static_cast<scalar_t>(negative_slope);
      const bool fused =
          mode != PathMode::Generic &&
          try_fused_forward<scalar_t, kAct>(dims.hidden, mode, y, A, b, W, w_out, alpha, slope, dims, psi,
                                            grad, pre, upstream);
      if (!fused) {
        generic_forward<scalar_t, kAct>(y, A, b, W, w_out, alpha, slope, dims, psi, grad, pre, upstream);
      }
    });
  });
  return out.tuple();
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> icnn_backward_cuda(
    const std::optional<Tensor>& grad_psi_in, const Tensor& grad_map_in, const Tensor& y_in,
    const Tensor& A_in, const Tensor& W_in, const Tensor& w_out_in,
    const std::optional<Tensor>& grad_in, const Tensor& pre_in, const Tensor& upstream_in,
    double strong_convexity, StrArg activation, double negative_slope,
    bool need_input_grad) {
  constexpr const char* op = "lidvae_ext::icnn_backward";
  const std::string& act_name = activation;
  const IcnnDims dims =
      check_backward_args(grad_psi_in, grad_map_in, y_in, A_in, W_in, w_out_in, grad_in, pre_in,
                          upstream_in, strong_convexity, act_name, negative_slope, op);
  const DeviceGuard device_guard(y_in.get_device_index());
  check_arch_supported();
  const PathMode mode = path_mode();
  check_fused_width(mode, dims.hidden, op);
  const BackwardInputs in(grad_psi_in, grad_map_in, y_in, A_in, W_in, w_out_in, grad_in, pre_in,
                          upstream_in);
  const Tensor &v = in.v, &y = in.y, &A = in.A, &W = in.W, &w_out = in.w_out, &grad = in.grad;
  const Tensor &pre = in.pre, &upstream = in.upstream;
  BackwardOutputs out(dims, A, W, w_out, need_input_grad);
  if (dims.batch == 0) return out.tuple();
  Tensor &grad_y = out.grad_y, &grad_A = out.grad_A, &grad_b = out.grad_b, &grad_W = out.grad_W,
         &grad_w_out = out.grad_w_out;
  const Activation act = parse_activation(act_name, op);
  const Tensor* grad_psi_p = in.grad_psi_or_null();
  dispatch_floating(y.scalar_type(), op, [&](auto zero) {
    using scalar_t = decltype(zero);
    dispatch_activation(act, [&](auto tag) {
      constexpr Activation kAct = decltype(tag)::value;
      const auto alpha = static_cast<scalar_t>(strong_convexity);
      const auto slope = static_cast<scalar_t>(negative_slope);
      const bool fused = mode != PathMode::Generic &&
                         try_fused_backward<scalar_t, kAct>(
                             dims.hidden, mode, grad_psi_p, v, y, A, W, w_out, grad, pre, upstream, alpha,
                             slope, need_input_grad, dims, grad_y, grad_A, grad_b, grad_W, grad_w_out);
      if (!fused) {
        generic_backward<scalar_t, kAct>(grad_psi_p, v, y, A, W, w_out, grad, pre, upstream, alpha, slope,
                                         need_input_grad, dims, grad_y, grad_A, grad_b, grad_W,
                                         grad_w_out);
      }
    });
  });
  return out.tuple();
}

}  // namespace
}  // namespace cuda
}  // namespace lidvae

#ifndef LIDVAE_CUDA_EMULATION
STABLE_TORCH_LIBRARY_IMPL(lidvae_ext, CUDA, m) {
  m.impl("icnn_forward", TORCH_BOX(&lidvae::cuda::icnn_forward_cuda));
  m.impl("icnn_backward", TORCH_BOX(&lidvae::cuda::icnn_backward_cuda));
}
#endif
