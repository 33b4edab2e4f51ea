// Operator schemas of the lidvae_ext library, on the LibTorch stable ABI. This is the single
// STABLE_TORCH_LIBRARY block; the CPU backend (csrc/cpu) adds STABLE_TORCH_LIBRARY_IMPL
// blocks, the per-torch CUDA library (csrc/cuda) a TORCH_LIBRARY_IMPL block, and fake
// kernels / autograd formulas are registered from Python (lidvae_ext/ops.py).
//
// Weight layout (see DESIGN.md §2-3), with H = hidden width, L = num_layers,
// M = L*H + 1, d = input dimension:
//   A      (M, d)        stacked input weights [A_0; A_1; ...; A_L]
//   b      (M)           stacked biases        [b_0; ...; b_L]
//   W      (L-1, H, H)   non-negative hidden-to-hidden weights W_1..W_{L-1}
//   w_out  (H)           non-negative last-layer weights W_L (1 x H)
#include <torch/csrc/stable/library.h>

#include "op_schemas.h"

STABLE_TORCH_LIBRARY(lidvae_ext, m) {
  m.def(lidvae::kIcnnForwardSchema);
  m.def(lidvae::kIcnnBackwardSchema);
  m.def(lidvae::kSoftplusWeightsSchema);
  m.def(lidvae::kSoftplusWeightsBackwardSchema);
  m.def(lidvae::kGemmSchema);
  m.def(lidvae::kRuntimeInfoSchema);
  m.def(lidvae::kAddOpenblasCandidateSchema);
  m.def(lidvae::kCpuWorkspaceSchema);
}
