// Input validation shared by every backend's host code (ATen, not device code).
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "icnn_activations.h"

namespace lidvae {

// Sizes of one ICNN call: batch B, input dim d, width H, depth L, M = L*H + 1.
struct IcnnDims {
  int64_t batch;
  int64_t dim;
  int64_t hidden;
  int64_t layers;
  int64_t stacked;
};

// Parses the activation name; errors list the valid names.
Activation parse_activation(const std::string& name, const char* op);

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
                             const at::Tensor& w_out, const at::Tensor& grad, const at::Tensor& pre,
                             const at::Tensor& upstream, double strong_convexity,
                             const std::string& activation, double negative_slope, const char* op);

}  // namespace lidvae
