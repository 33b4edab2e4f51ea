// ThreadSanitizer driver for the emulated CUDA code (see cuda_emu.h): runs the
// fused and generic paths of csrc/cuda/icnn_cuda.cu on a few shapes and
// compares them; TSan reports any shared-memory race between emulated CUDA
// threads (a missing __syncwarp / __syncthreads). Built and run by
// scripts/cuda_emulation/run_tsan.sh.
// The operators come from emulated_kernels.cpp (stable ABI, registered as
// lidvae_cuda_emu::*); this driver calls them through the dispatcher.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

double max_rel(const at::Tensor& got, const at::Tensor& want) {
  if (want.numel() == 0) return 0.0;
  const double scale = want.abs().max().item<double>();
  const double diff = (got - want).abs().max().item<double>();
  const double rel = scale > 0 ? diff / scale : diff;
  return std::isfinite(rel) ? rel : std::numeric_limits<double>::infinity();  // NaN counts as a failure
}

using Forward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
    c10::string_view, double);
using Backward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
    const at::Tensor&, double, c10::string_view, double, bool);

int run_case(int64_t B, int64_t d, int64_t K, int64_t H, int64_t L, const char* act, double alpha) {
  at::manual_seed(B * 1000 + d * 100 + H + L);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const int64_t M = L * H + 1;
  at::Tensor y = at::randn({B, K}, opts), A = at::randn({M, d}, opts) / std::sqrt(double(d));
  at::Tensor b = at::randn({M}, opts) * 0.5, W = at::rand({L - 1, H, H}, opts) * (2.0 / H);
  at::Tensor w_out = at::rand({H}, opts) * (2.0 / H) + 0.01;
  at::Tensor u = at::randn({B}, opts), v = at::randn({B, d}, opts);
  std::vector<at::Tensor> results[2];
  for (int fused = 0; fused < 2; ++fused) {
    setenv("LIDVAE_CUDA_FUSED", fused ? "1" : "0", 1);
    static const auto forward = c10::Dispatcher::singleton()
                                    .findSchemaOrThrow("lidvae_cuda_emu::icnn_forward", "")
                                    .typed<Forward>();
    static const auto backward = c10::Dispatcher::singleton()
                                     .findSchemaOrThrow("lidvae_cuda_emu::icnn_backward", "")
                                     .typed<Backward>();
    auto [psi, grad, pre, up] = forward.call(y, A, b, W, w_out, alpha, act, 0.2);
    auto [gy, gA, gb, gW, gwo] = backward.call(u, v, y, A, W, w_out, grad, pre, up, alpha, act, 0.2, true);
    results[fused] = {psi, grad, pre, up, gy, gA, gb, gW, gwo};
  }
  double worst = 0.0;
  for (size_t i = 0; i < results[0].size(); ++i) worst = std::max(worst, max_rel(results[1][i], results[0][i]));
  std::printf("B=%ld d=%ld K=%ld H=%ld L=%ld %s alpha=%.1f: max rel diff fused vs generic %.2e\n", B, d, K, H, L,
              act, alpha, worst);
  return worst <= 1e-12 ? 0 : 1;
}

}  // namespace

int main() {
  int failures = 0;
  failures += run_case(5, 3, 3, 16, 3, "softplus", 0.3);    // two 16-lane groups per warp
  failures += run_case(20, 2, 1, 32, 2, "leaky_relu", 0.0);  // K < d < G: lane-split column sums
  failures += run_case(9, 40, 35, 64, 2, "softplus", 0.3);   // K, d >= G
  failures += run_case(3, 4, 4, 128, 1, "leaky_relu", 0.3);
  failures += run_case(100, 6, 6, 16, 2, "softplus", 0.3);   // several tiles per block (2 emulated SMs)
  std::printf(failures == 0 ? "tsan_main: OK\n" : "tsan_main: %d FAILED\n", failures);
  return failures == 0 ? 0 : 1;
}
