// CPU implementation of the weight parametrization operators: W = softplus(raw) and its
// backward grad_raw = grad_W * sigmoid(raw), each one vectorized pass (row_ops.h, compiled per
// vector ISA) parallel over torch's intra-op threads. Same values as torch's softplus with
// beta = 1, threshold = 20 (identity above 20), to a few ulp.

#include <algorithm>
#include <cstdint>

#include "cpu/isa.h"
#include "cpu/row_ops.h"
#include "stable.h"

namespace lidvae {
namespace {


constexpr int64_t kGrain = 1 << 15;  // elements per parallel chunk

void check_weight(const Tensor& t, const char* name, const char* op) {
  LIDVAE_CHECK(t.is_cpu(), op, ": ", name, " must be a CPU tensor, got ", device_str(t));
  LIDVAE_CHECK(is_floating(t.scalar_type()), op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

Tensor softplus_weights_cpu(const Tensor& raw_in) {
  constexpr const char* op = "lidvae_ext::softplus_weights";
  check_weight(raw_in, "raw", op);
  const Tensor raw = contig(raw_in);
  Tensor out = empty_as(raw);  // raw is contiguous, so is out
  const int64_t n = raw.numel();
  if (n == 0) return out;
  cpu::set_active_isa(cpu::select_isa());
  dispatch_floating(raw.scalar_type(), op, [&](auto zero) {
    using scalar_t = decltype(zero);
    const scalar_t* x = raw.mutable_data_ptr<scalar_t>();  // raw weights
    scalar_t* w = out.mutable_data_ptr<scalar_t>();         // effective weights softplus(raw)
    parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      cpu::row_softplus<scalar_t>(w + begin, x + begin, end - begin);
    });
  });
  return out;
}

Tensor softplus_weights_backward_cpu(const Tensor& grad_in, const Tensor& raw_in) {
  constexpr const char* op = "lidvae_ext::softplus_weights_backward";
  check_weight(raw_in, "raw", op);
  check_weight(grad_in, "grad", op);
  LIDVAE_CHECK(sizes_of(grad_in) == sizes_of(raw_in), op, ": grad has shape ", shape_str(grad_in),
               " but raw has shape ", shape_str(raw_in), " (they must match)");
  LIDVAE_CHECK(grad_in.scalar_type() == raw_in.scalar_type(), op, ": grad has dtype ",
              grad_in.scalar_type(), " but raw has dtype ", raw_in.scalar_type());
  const Tensor raw = contig(raw_in), grad = contig(grad_in);
  Tensor out = empty_as(raw);  // raw is contiguous, so is out
  const int64_t n = raw.numel();
  if (n == 0) return out;
  cpu::set_active_isa(cpu::select_isa());
  dispatch_floating(raw.scalar_type(), op, [&](auto zero) {
    using scalar_t = decltype(zero);
    const scalar_t* x = raw.mutable_data_ptr<scalar_t>();   // raw weights
    const scalar_t* g = grad.mutable_data_ptr<scalar_t>();  // dLoss / d softplus(raw)
    scalar_t* r = out.mutable_data_ptr<scalar_t>();         // dLoss / d raw
    parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      cpu::row_softplus_backward<scalar_t>(r + begin, g + begin, x + begin, end - begin);
    });
  });
  return out;
}

}  // namespace
}  // namespace lidvae

STABLE_TORCH_LIBRARY_IMPL(lidvae_ext, CPU, m) {
  m.impl("softplus_weights", TORCH_BOX(&lidvae::softplus_weights_cpu));
  m.impl("softplus_weights_backward", TORCH_BOX(&lidvae::softplus_weights_backward_cpu));
}
