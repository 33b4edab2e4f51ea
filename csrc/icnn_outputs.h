// Host-side helpers of the CPU operator entry points (stable ABI): contiguous inputs and
// output allocation (with the empty-batch case). cuda/icnn_outputs_aten.h is the CUDA twin.
#pragma once

#include <optional>
#include <tuple>

#include "icnn_checks.h"
#include "stable.h"

namespace lidvae {

// icnn_backward's tensor inputs made contiguous (no copy when they already are). The
// optional grad_psi and grad stay undefined when absent.
struct BackwardInputs {
  Tensor grad_psi, v, y, A, W, w_out, grad, pre, upstream;

  BackwardInputs(const std::optional<Tensor>& grad_psi_in, const Tensor& grad_map,
                 const Tensor& y_in, const Tensor& A_in, const Tensor& W_in, const Tensor& w_out_in,
                 const std::optional<Tensor>& grad_in, const Tensor& pre_in,
                 const Tensor& upstream_in)
      : grad_psi(grad_psi_in.has_value() ? contig(*grad_psi_in) : Tensor()),
        v(contig(grad_map)),
        y(contig(y_in)),
        A(contig(A_in)),
        W(contig(W_in)),
        w_out(contig(w_out_in)),
        grad(grad_in.has_value() ? contig(*grad_in) : Tensor()),
        pre(contig(pre_in)),
        upstream(contig(upstream_in)) {}

  // u = dLoss/dpsi for the kernels, or nullptr when psi gets no gradient.
  const Tensor* grad_psi_or_null() const { return grad_psi.defined() ? &grad_psi : nullptr; }
};

// Uninitialized outputs of icnn_forward: psi (B), grad (B, d), pre (B, M),
// upstream (B, (L-1)*H), allocated like `like` (dtype, device).
struct ForwardOutputs {
  Tensor psi, grad, pre, upstream;

  ForwardOutputs(const IcnnDims& dims, const Tensor& like)
      : psi(empty({dims.batch}, like)),
        grad(empty({dims.batch, dims.dim}, like)),
        pre(empty({dims.batch, dims.stacked}, like)),
        upstream(empty({dims.batch, (dims.layers - 1) * dims.hidden}, like)) {}

  std::tuple<Tensor, Tensor, Tensor, Tensor> tuple() const { return {psi, grad, pre, upstream}; }
};

// Outputs of icnn_backward: grad_y (B, in_dim), or empty when not needed, and
// the weight gradients shaped like A, b, W, w_out. For an empty batch the
// weight gradients are zero-filled (nothing else will write them).
struct BackwardOutputs {
  Tensor grad_y, grad_A, grad_b, grad_W, grad_w_out;

  BackwardOutputs(const IcnnDims& dims, const Tensor& A, const Tensor& W, const Tensor& w_out,
                  bool need_input_grad)
      : grad_y(need_input_grad ? empty({dims.batch, dims.in_dim}, A) : empty({0}, A)),
        grad_A(empty_as(A)),
        grad_b(empty({dims.stacked}, A)),
        grad_W(empty_as(W)),
        grad_w_out(empty_as(w_out)) {
    if (dims.batch == 0) {
      for (Tensor* t : {&grad_A, &grad_b, &grad_W, &grad_w_out}) fill_zero(*t);
    }
  }

  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> tuple() const {
    return {grad_y, grad_A, grad_b, grad_W, grad_w_out};
  }
};

}  // namespace lidvae
