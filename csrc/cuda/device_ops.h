// Tensor updates with Scalar arguments on the tensors' own device (CUDA, or the CPU for
// scripts/cuda_emulation), through the AOTI C shims of torch's fallback ops
// (aoti_torch_{cuda,cpu}_*: stable C functions that take Scalars as double; the boxed
// dispatcher calls of csrc/stable.h cannot carry a Scalar before torch 2.13). Results of
// the out-of-place shims are copied back into their target.
#pragma once

#include <torch/csrc/inductor/aoti_torch/generated/c_shim_cpu.h>
#ifndef LIDVAE_CUDA_EMULATION
#include <torch/csrc/inductor/aoti_torch/generated/c_shim_cuda.h>
#endif

#include "stable.h"

namespace lidvae {
namespace device {

#ifdef LIDVAE_CUDA_EMULATION
#define LIDVAE_DEVICE_SHIM(t, name, ...) aoti_torch_cpu_##name(__VA_ARGS__)
#else
#define LIDVAE_DEVICE_SHIM(t, name, ...) \
  ((t).is_cpu() ? aoti_torch_cpu_##name(__VA_ARGS__) : aoti_torch_cuda_##name(__VA_ARGS__))
#endif

// out = beta * base + alpha * a @ b (base may be out).
inline void addmm_out(const Tensor& out, const Tensor& base, const Tensor& a, const Tensor& b, double beta,
                      double alpha) {
  STABLE_TORCH_ERROR_CODE_CHECK(
      LIDVAE_DEVICE_SHIM(out, addmm_out, out.get(), base.get(), a.get(), b.get(), beta, alpha));
}
// out += a @ b
inline void addmm_acc(const Tensor& out, const Tensor& a, const Tensor& b) { addmm_out(out, out, a, b, 1.0, 1.0); }
// a @ b, new.
inline Tensor mm(const Tensor& a, const Tensor& b) {
  Tensor out = empty({a.size(0), b.size(1)}, a);
  mm_out(out, a, b);
  return out;
}
// x += alpha * y
inline void add_scaled(const Tensor& x, const Tensor& y, double alpha) {
  AtenTensorHandle sum = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(LIDVAE_DEVICE_SHIM(x, add_Tensor, x.get(), y.get(), alpha, &sum));
  copy_into(x, Tensor(sum));
}
// x += a * col[:, None]
inline void add_mul_col(const Tensor& x, const Tensor& a, const Tensor& col) {
  AtenTensorHandle product = nullptr;
  const Tensor column = torch::stable::unsqueeze(col, 1);
  STABLE_TORCH_ERROR_CODE_CHECK(LIDVAE_DEVICE_SHIM(x, mul_Tensor, a.get(), column.get(), &product));
  add_scaled(x, Tensor(product), 1.0);
}
// out += mat @ vec
inline void addmv_acc(const Tensor& out, const Tensor& mat, const Tensor& vec) {
  AtenTensorHandle sum = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(LIDVAE_DEVICE_SHIM(out, addmv, out.get(), mat.get(), vec.get(), 1.0, 1.0, &sum));
  copy_into(out, Tensor(sum));
}

#undef LIDVAE_DEVICE_SHIM

}  // namespace device
}  // namespace lidvae
