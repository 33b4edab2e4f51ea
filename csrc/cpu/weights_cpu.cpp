// CPU implementation of the weight parametrization operators: W = softplus(raw) and its
// backward grad_raw = grad_W * sigmoid(raw), each one vectorized pass (row_ops.h, compiled per
// vector ISA) parallel over torch's intra-op threads. Same values as torch's softplus with
// beta = 1, threshold = 20 (identity above 20), to a few ulp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "cpu/isa.h"
#include "cpu/row_ops.h"

namespace lidvae {
namespace {

using at::Tensor;

constexpr int64_t kGrain = 1 << 15;  // elements per parallel chunk

void check_weight(const Tensor& t, const char* name, const char* op) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

Tensor softplus_weights_cpu(const Tensor& raw_in) {
  constexpr const char* op = "lidvae_ext::softplus_weights";
  check_weight(raw_in, "raw", op);
  const Tensor raw = raw_in.contiguous();
  Tensor out = at::empty_like(raw, at::MemoryFormat::Contiguous);
  const int64_t n = raw.numel();
  if (n == 0) return out;
  cpu::set_active_isa(cpu::select_isa());
  AT_DISPATCH_FLOATING_TYPES(raw.scalar_type(), "softplus_weights_cpu", [&] {
    const scalar_t* x = raw.data_ptr<scalar_t>();  // raw weights
    scalar_t* w = out.data_ptr<scalar_t>();         // effective weights softplus(raw)
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      cpu::row_softplus<scalar_t>(w + begin, x + begin, end - begin);
    });
  });
  return out;
}

Tensor softplus_weights_backward_cpu(const Tensor& grad_in, const Tensor& raw_in) {
  constexpr const char* op = "lidvae_ext::softplus_weights_backward";
  check_weight(raw_in, "raw", op);
  check_weight(grad_in, "grad", op);
  TORCH_CHECK(grad_in.sizes() == raw_in.sizes(), op, ": grad has shape ", grad_in.sizes(),
              " but raw has shape ", raw_in.sizes(), " (they must match)");
  TORCH_CHECK(grad_in.scalar_type() == raw_in.scalar_type(), op, ": grad has dtype ",
              grad_in.scalar_type(), " but raw has dtype ", raw_in.scalar_type());
  const Tensor raw = raw_in.contiguous(), grad = grad_in.contiguous();
  Tensor out = at::empty_like(raw, at::MemoryFormat::Contiguous);
  const int64_t n = raw.numel();
  if (n == 0) return out;
  cpu::set_active_isa(cpu::select_isa());
  AT_DISPATCH_FLOATING_TYPES(raw.scalar_type(), "softplus_weights_backward_cpu", [&] {
    const scalar_t* x = raw.data_ptr<scalar_t>();   // raw weights
    const scalar_t* g = grad.data_ptr<scalar_t>();  // dLoss / d softplus(raw)
    scalar_t* r = out.data_ptr<scalar_t>();         // dLoss / d raw
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      cpu::row_softplus_backward<scalar_t>(r + begin, g + begin, x + begin, end - begin);
    });
  });
  return out;
}

}  // namespace
}  // namespace lidvae

TORCH_LIBRARY_IMPL(lidvae_ext, CPU, m) {
  m.impl("softplus_weights", &lidvae::softplus_weights_cpu);
  m.impl("softplus_weights_backward", &lidvae::softplus_weights_backward_cpu);
}
