// Input validation shared by every backend's host code (ATen, not device code).
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "icnn_activations.h"

namespace lidvae {

// Sizes of one ICNN call: batch B, input dim d (= A.size(1)), width H, depth
// L, M = L*H + 1, and in_dim = y.size(1) <= d: when in_dim < d, y stands for
// the zero-padded [y, 0] (the fixed beta = [I; 0] of a LIDDecoder), and the
// kernels skip the products with the zero columns.
struct IcnnDims {
  int64_t batch;
  int64_t dim;
  int64_t hidden;
  int64_t layers;
  int64_t stacked;
  int64_t in_dim;
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
                             const at::Tensor& w_out, const c10::optional<at::Tensor>& grad,
                             const at::Tensor& pre, const at::Tensor& upstream, double strong_convexity,
                             const std::string& activation, double negative_slope, const char* op);

}  // namespace lidvae
