// Input validation for the ICNN operators (stable ABI): every failure names the argument
// and the sizes involved.
#include "icnn_checks.h"

#include <cmath>

namespace lidvae {

namespace {

void check_float_like(const Tensor& t, const Tensor& ref, const char* name, const char* op) {
  LIDVAE_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but y has dtype ", ref.scalar_type(), " (all tensors must share one dtype)");
  LIDVAE_CHECK(same_device(t, ref), op, ": ", name, " is on ", device_str(t), " but y is on ",
               device_str(ref), " (all tensors must be on one device)");
}

void check_shape(const Tensor& t, const IntList& expected, const char* name, const char* what,
                 const char* op) {
  LIDVAE_CHECK(sizes_of(t) == expected, op, ": ", name, " must have shape ", shape_str(expected), " ",
               what, ", got ", shape_str(t));
}

}  // namespace

IcnnDims check_forward_args(const Tensor& y, const Tensor& A, const Tensor& b,
                            const Tensor& W, const Tensor& w_out, double strong_convexity,
                            const std::string& activation, double negative_slope, bool check_values,
                            const char* op) {
  parse_activation(activation, op);
  LIDVAE_CHECK(y.dim() == 2, op, ": y must be 2-D (B, d), got shape ", shape_str(y));
  LIDVAE_CHECK(y.scalar_type() == ScalarType::Float || y.scalar_type() == ScalarType::Double, op,
              ": y must be float32 or float64, got ", y.scalar_type());
  LIDVAE_CHECK(w_out.dim() == 1 && w_out.size(0) >= 1, op,
              ": w_out must be 1-D (H,) with H >= 1, got shape ", shape_str(w_out));
  LIDVAE_CHECK(W.dim() == 3, op, ": W must be 3-D (L-1, H, H), got shape ", shape_str(W));
  LIDVAE_CHECK(A.dim() == 2, op, ": A must be 2-D (L*H+1, d), got shape ", shape_str(A));
  IcnnDims dims{y.size(0), A.size(1), w_out.size(0), W.size(0) + 1, 0, y.size(1)};
  dims.stacked = dims.layers * dims.hidden + 1;
  LIDVAE_CHECK(dims.in_dim >= 1, op, ": y must have at least one feature, got shape ", shape_str(y));
  check_shape(W, IntList{dims.layers - 1, dims.hidden, dims.hidden}, "W", "(L-1, H, H) with H = w_out.size(0)",
              op);
  LIDVAE_CHECK(A.size(0) == dims.stacked && A.size(1) >= dims.in_dim, op,
              ": A must have shape (L*H+1, d) = (", dims.stacked, ", d) with d >= y.size(1) = ",
              dims.in_dim, " for L = ", dims.layers, ", H = ", dims.hidden, "; got ", shape_str(A));
  check_shape(b, IntList{dims.stacked}, "b", "(L*H+1,)", op);
  for (auto [t, name] : {std::pair<const Tensor&, const char*>{A, "A"}, {b, "b"}, {W, "W"},
                         {w_out, "w_out"}}) {
    check_float_like(t, y, name, op);
  }
  LIDVAE_CHECK(std::isfinite(strong_convexity) && strong_convexity >= 0.0, op,
              ": strong_convexity must be finite and >= 0, got ", strong_convexity);
  LIDVAE_CHECK(negative_slope >= 0.0 && negative_slope <= 1.0, op,
              ": negative_slope must be in [0, 1] (sigma must be convex and non-decreasing), got ",
              negative_slope);
  if (check_values) {
    if (W.numel() > 0) {
      const double w_min = min_of(W);
      LIDVAE_CHECK(w_min >= 0.0, op,
                  ": W must be non-negative and finite (an ICNN needs W_l >= 0; apply softplus or "
                  "clamp to the raw weights), got min(W) = ",
                  w_min);
    }
    const double w_out_min = min_of(w_out);
    LIDVAE_CHECK(w_out_min >= 0.0, op, ": w_out must be non-negative and finite, got min(w_out) = ",
                w_out_min);
  }
  return dims;
}

IcnnDims check_backward_args(const std::optional<Tensor>& grad_psi, const Tensor& grad_map,
                             const Tensor& y, const Tensor& A, const Tensor& W,
                             const Tensor& w_out, const std::optional<Tensor>& grad,
                             const Tensor& pre, const Tensor& upstream, double strong_convexity,
                             const std::string& activation, double negative_slope, const char* op) {
  // b is not needed by the backward; validate the rest with a stand-in of the right size.
  LIDVAE_CHECK(A.dim() == 2, op, ": A must be 2-D (L*H+1, d), got shape ", shape_str(A));
  const Tensor b_standin = empty({A.size(0)}, A);
  IcnnDims dims = check_forward_args(y, A, b_standin, W, w_out, strong_convexity, activation,
                                     negative_slope, /*check_values=*/false, op);
  check_shape(grad_map, IntList{dims.batch, dims.dim}, "grad_map", "(B, d)", op);
  LIDVAE_CHECK(grad.has_value() || !grad_psi.has_value(), op,
              ": grad (the map icnn_forward returned, shape (", dims.batch, ", ", dims.dim,
              ")) is required when grad_psi is given: the potential's input gradient is u * grad");
  if (grad.has_value()) {
    check_shape(*grad, IntList{dims.batch, dims.dim}, "grad", "(B, d) (the map from icnn_forward)", op);
    check_float_like(*grad, y, "grad", op);
  }
  check_shape(pre, IntList{dims.batch, dims.stacked}, "pre", "(B, L*H+1) (saved by icnn_forward)", op);
  check_shape(upstream, IntList{dims.batch, (dims.layers - 1) * dims.hidden}, "upstream",
              "(B, (L-1)*H) (saved by icnn_forward)", op);
  check_float_like(grad_map, y, "grad_map", op);
  check_float_like(pre, y, "pre", op);
  check_float_like(upstream, y, "upstream", op);
  if (grad_psi.has_value()) {
    check_shape(*grad_psi, IntList{dims.batch}, "grad_psi", "(B,)", op);
    check_float_like(*grad_psi, y, "grad_psi", op);
  }
  return dims;
}

}  // namespace lidvae
