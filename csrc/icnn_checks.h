// Input validation of the CPU operators (stable ABI; cuda/icnn_checks_aten.h is the
// per-torch twin of the CUDA library: keep the two messages alike).
#pragma once

#include <optional>
#include <string>

#include "icnn_dims.h"
#include "stable.h"

namespace lidvae {

// Validates the forward arguments (ranks, sizes, dtypes, devices, strong
// convexity, slope). `check_values` also checks W >= 0 and w_out >= 0 (a
// host-side reduction: CPU only).
IcnnDims check_forward_args(const Tensor& y, const Tensor& A, const Tensor& b, const Tensor& W,
                            const Tensor& w_out, double strong_convexity,
                            const std::string& activation, double negative_slope, bool check_values,
                            const char* op);

// Validates the backward arguments against the forward's sizes.
IcnnDims check_backward_args(const std::optional<Tensor>& grad_psi, const Tensor& grad_map,
                             const Tensor& y, const Tensor& A, const Tensor& W, const Tensor& w_out,
                             const std::optional<Tensor>& grad, const Tensor& pre,
                             const Tensor& upstream, double strong_convexity,
                             const std::string& activation, double negative_slope, const char* op);

}  // namespace lidvae
