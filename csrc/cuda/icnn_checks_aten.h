// Input validation of the per-torch CUDA library (ATen; csrc/icnn_checks.h is the stable-ABI
// twin the CPU library uses: keep the two messages alike).
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "icnn_dims.h"

namespace lidvae {

// Validates the forward arguments (ranks, sizes, dtypes, devices, strong
// convexity, slope). `check_values` also checks W >= 0 and w_out >= 0 (a
// host-side reduction: CPU only, never inside CUDA graph capture).
IcnnDims check_forward_args(const at::Tensor& y, const at::Tensor& A, const at::Tensor& b,
                            const at::Tensor& W, const at::Tensor& w_out, double strong_convexity,
                            const std::string& activation, double negative_slope, bool check_values,
                            const char* op);

// Validates the backward arguments against the forward's sizes.
IcnnDims check_backward_args(const c10::optional<at::Tensor>& grad_psi, const at::Tensor& grad_map,
                             const at::Tensor& y, const at::Tensor& A, const at::Tensor& W,
                             const at::Tensor& w_out, const c10::optional<at::Tensor>& grad,
                             const at::Tensor& pre, const at::Tensor& upstream, double strong_convexity,
                             const std::string& activation, double negative_slope, const char* op);

}  // namespace lidvae
