// Input validation for the ICNN operators: every failure names the argument
// and the sizes involved.
#include "cuda/icnn_checks_aten.h"

#include <cmath>

namespace lidvae {

namespace {

void check_float_like(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* op) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but y has dtype ", ref.scalar_type(), " (all tensors must share one dtype)");
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but y is on ",
              ref.device(), " (all tensors must be on one device)");
}

void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* name, const char* what,
                 const char* op) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ", expected, " ", what,
              ", got ", t.sizes());
}

}  // namespace

IcnnDims check_forward_args(const at::Tensor& y, const at::Tensor& A, const at::Tensor& b,
                            const at::Tensor& W, const at::Tensor& w_out, double strong_convexity,
                            const std::string& activation, double negative_slope, bool check_values,
                            const char* op) {
  parse_activation(activation, op);
  TORCH_CHECK(y.dim() == 2, op, ": y must be 2-D (B, d), got shape ", y.sizes());
  TORCH_CHECK(y.scalar_type() == at::kFloat || y.scalar_type() == at::kDouble, op,
              ": y must be float32 or float64, got ", y.scalar_type());
  TORCH_CHECK(w_out.dim() == 1 && w_out.size(0) >= 1, op,
              ": w_out must be 1-D (H,) with H >= 1, got shape ", w_out.sizes());
  TORCH_CHECK(W.dim() == 3, op, ": W must be 3-D (L-1, H, H), got shape ", W.sizes());
  TORCH_CHECK(A.dim() == 2, op, ": A must be 2-D (L*H+1, d), got shape ", A.sizes());
  IcnnDims dims{y.size(0), A.size(1), w_out.size(0), W.size(0) + 1, 0, y.size(1)};
  dims.stacked = dims.layers * dims.hidden + 1;
  TORCH_CHECK(dims.in_dim >= 1, op, ": y must have at least one feature, got shape ", y.sizes());
  check_shape(W, {dims.layers - 1, dims.hidden, dims.hidden}, "W", "(L-1, H, H) with H = w_out.size(0)",
              op);
  TORCH_CHECK(A.size(0) == dims.stacked && A.size(1) >= dims.in_dim, op,
              ": A must have shape (L*H+1, d) = (", dims.stacked, ", d) with d >= y.size(1) = ",
              dims.in_dim, " for L = ", dims.layers, ", H = ", dims.hidden, "; got ", A.sizes());
  check_shape(b, {dims.stacked}, "b", "(L*H+1,)", op);
  for (auto [t, name] : {std::pair<const at::Tensor&, const char*>{A, "A"}, {b, "b"}, {W, "W"},
                         {w_out, "w_out"}}) {
    check_float_like(t, y, name, op);
  }
  TORCH_CHECK(std::isfinite(strong_convexity) && strong_convexity >= 0.0, op,
              ": strong_convexity must be finite and >= 0, got ", strong_convexity);
  TORCH_CHECK(negative_slope >= 0.0 && negative_slope <= 1.0, op,
              ": negative_slope must be in [0, 1] (sigma must be convex and non-decreasing), got ",
              negative_slope);
  if (check_values) {
    if (W.numel() > 0) {
      const double w_min = W.min().item<double>();
      TORCH_CHECK(w_min >= 0.0, op,
                  ": W must be non-negative and finite (an ICNN needs W_l >= 0; apply softplus or "
                  "clamp to the raw weights), got min(W) = ",
                  w_min);
    }
    const double w_out_min = w_out.min().item<double>();
    TORCH_CHECK(w_out_min >= 0.0, op, ": w_out must be non-negative and finite, got min(w_out) = ",
                w_out_min);
  }
  return dims;
}

IcnnDims check_backward_args(const c10::optional<at::Tensor>& grad_psi, const at::Tensor& grad_map,
                             const at::Tensor& y, const at::Tensor& A, const at::Tensor& W,
                             const at::Tensor& w_out, const c10::optional<at::Tensor>& grad,
                             const at::Tensor& pre, const at::Tensor& upstream, double strong_convexity,
                             const std::string& activation, double negative_slope, const char* op) {
  // b is not needed by the backward; validate the rest with a stand-in of the right size.
  TORCH_CHECK(A.dim() == 2, op, ": A must be 2-D (L*H+1, d), got shape ", A.sizes());
  const at::Tensor b_standin = at::empty({A.size(0)}, A.options());
  IcnnDims dims = check_forward_args(y, A, b_standin, W, w_out, strong_convexity, activation,
                                     negative_slope, /*check_values=*/false, op);
  check_shape(grad_map, {dims.batch, dims.dim}, "grad_map", "(B, d)", op);
  TORCH_CHECK(grad.has_value() || !grad_psi.has_value(), op,
              ": grad (the map icnn_forward returned, shape (", dims.batch, ", ", dims.dim,
              ")) is required when grad_psi is given: the potential's input gradient is u * grad");
  if (grad.has_value()) {
    check_shape(*grad, {dims.batch, dims.dim}, "grad", "(B, d) (the map from icnn_forward)", op);
    check_float_like(*grad, y, "grad", op);
  }
  check_shape(pre, {dims.batch, dims.stacked}, "pre", "(B, L*H+1) (saved by icnn_forward)", op);
  check_shape(upstream, {dims.batch, (dims.layers - 1) * dims.hidden}, "upstream",
              "(B, (L-1)*H) (saved by icnn_forward)", op);
  check_float_like(grad_map, y, "grad_map", op);
  check_float_like(pre, y, "pre", op);
  check_float_like(upstream, y, "upstream", op);
  if (grad_psi.has_value()) {
    check_shape(*grad_psi, {dims.batch}, "grad_psi", "(B,)", op);
    check_float_like(*grad_psi, y, "grad_psi", op);
  }
  return dims;
}

}  // namespace lidvae
