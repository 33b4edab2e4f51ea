// Operator schemas of the lidvae_ext library. This is the single
// TORCH_LIBRARY block; backends (csrc/cpu, csrc/cuda) only add
// TORCH_LIBRARY_IMPL blocks, and fake kernels / autograd formulas are
// registered from Python (lidvae_ext/ops.py).
//
// Weight layout (see DESIGN.md §2-3), with H = hidden width, L = num_layers,
// M = L*H + 1, d = input dimension:
//   A      (M, d)        stacked input weights [A_0; A_1; ...; A_L]
//   b      (M)           stacked biases        [b_0; ...; b_L]
//   W      (L-1, H, H)   non-negative hidden-to-hidden weights W_1..W_{L-1}
//   w_out  (H)           non-negative last-layer weights W_L (1 x H)
#include <torch/library.h>

TORCH_LIBRARY(lidvae_ext, m) {
  // Potential psi(y) (B), Brenier map grad psi(y) (B, d), and the two
  // activations the closed-form backward needs: pre-activations a (B, M) and
  // upstream sensitivities e_l = W_{l+1}^T delta_{l+1} for l < L-1
  // (B, (L-1)*H); e_{L-1} = sigma'(a_L) w_out is rebuilt from a_L.
  m.def(
      "icnn_forward(Tensor y, Tensor A, Tensor b, Tensor W, Tensor w_out, "
      "float strong_convexity, str activation, float negative_slope) "
      "-> (Tensor psi, Tensor grad, Tensor pre, Tensor upstream)");
  // Closed-form backward of icnn_forward given grad_psi = dLoss/dpsi (B,
  // optional) and grad_map = dLoss/dgrad (B, d): returns dLoss/dy and dLoss
  // w.r.t. A, b, W, w_out. `need_input_grad=false` skips dLoss/dy (returned
  // as an empty tensor).
  m.def(
      "icnn_backward(Tensor? grad_psi, Tensor grad_map, Tensor y, Tensor A, "
      "Tensor W, Tensor w_out, Tensor grad, Tensor pre, Tensor upstream, "
      "float strong_convexity, str activation, float negative_slope, "
      "bool need_input_grad) "
      "-> (Tensor grad_y, Tensor grad_A, Tensor grad_b, Tensor grad_W, "
      "Tensor grad_w_out)");
}
