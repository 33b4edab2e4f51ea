// Host-side helpers shared by every backend's operator entry points: contiguous
// inputs, output allocation (with the empty-batch case) and the activation dispatch.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <type_traits>

#include "icnn_activations.h"
#include "cuda/icnn_checks_aten.h"

namespace lidvae {

// icnn_backward's tensor inputs made contiguous (no copy when they already are). The
// optional grad_psi and grad stay undefined when absent.
struct BackwardInputs {
  at::Tensor grad_psi, v, y, A, W, w_out, grad, pre, upstream;

  BackwardInputs(const c10::optional<at::Tensor>& grad_psi_in, const at::Tensor& grad_map,
                 const at::Tensor& y_in, const at::Tensor& A_in, const at::Tensor& W_in,
                 const at::Tensor& w_out_in, const c10::optional<at::Tensor>& grad_in,
                 const at::Tensor& pre_in, const at::Tensor& upstream_in)
      : grad_psi(grad_psi_in.has_value() ? grad_psi_in->contiguous() : at::Tensor()),
        v(grad_map.contiguous()),
        y(y_in.contiguous()),
        A(A_in.contiguous()),
        W(W_in.contiguous()),
        w_out(w_out_in.contiguous()),
        grad(grad_in.has_value() ? grad_in->contiguous() : at::Tensor()),
        pre(pre_in.contiguous()),
        upstream(upstream_in.contiguous()) {}

  // u = dLoss/dpsi for the kernels, or nullptr when psi gets no gradient.
  const at::Tensor* grad_psi_or_null() const { return grad_psi.defined() ? &grad_psi : nullptr; }
};

// Uninitialized outputs of icnn_forward: psi (B), grad (B, d), pre (B, M),
// upstream (B, (L-1)*H).
struct ForwardOutputs {
  at::Tensor psi, grad, pre, upstream;

  ForwardOutputs(const IcnnDims& dims, const at::TensorOptions& opts)
      : psi(at::empty({dims.batch}, opts)),
        grad(at::empty({dims.batch, dims.dim}, opts)),
        pre(at::empty({dims.batch, dims.stacked}, opts)),
        upstream(at::empty({dims.batch, (dims.layers - 1) * dims.hidden}, opts)) {}

  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> tuple() const {
    return {psi, grad, pre, upstream};
  }
};

// Outputs of icnn_backward: grad_y (B, in_dim), or empty when not needed, and
// the weight gradients shaped like A, b, W, w_out. For an empty batch the
// weight gradients are zero-filled (nothing else will write them).
struct BackwardOutputs {
  at::Tensor grad_y, grad_A, grad_b, grad_W, grad_w_out;

  BackwardOutputs(const IcnnDims& dims, const at::Tensor& A, const at::Tensor& W,
                  const at::Tensor& w_out, bool need_input_grad)
      : grad_y(need_input_grad ? at::empty({dims.batch, dims.in_dim}, A.options())
                               : at::empty({0}, A.options())),
        grad_A(at::empty_like(A)),
        grad_b(at::empty({dims.stacked}, A.options())),
        grad_W(at::empty_like(W)),
        grad_w_out(at::empty_like(w_out)) {
    if (dims.batch == 0) {
      for (at::Tensor* t : {&grad_A, &grad_b, &grad_W, &grad_w_out}) t->zero_();
    }
  }

  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> tuple() const {
    return {grad_y, grad_A, grad_b, grad_W, grad_w_out};
  }
};

}  // namespace lidvae
