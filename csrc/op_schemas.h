// Schema strings of the ICNN operators, shared by the STABLE_TORCH_LIBRARY block in
// ops.cpp and by test harnesses that register the same operators under
// another namespace (scripts/cuda_emulation), so the two can never drift.
#pragma once

namespace lidvae {

// Potential psi(y) (B), Brenier map grad psi(y) (B, d), and the two
// activations the closed-form backward needs: pre-activations a (B, M) and
// upstream sensitivities e_l = W_{l+1}^T delta_{l+1} for l < L-1
// (B, (L-1)*H); e_{L-1} = sigma'(a_L) w_out is rebuilt from a_L.
constexpr const char* kIcnnForwardSchema =
    "icnn_forward(Tensor y, Tensor A, Tensor b, Tensor W, Tensor w_out, "
    "float strong_convexity, str activation, float negative_slope) "
    "-> (Tensor psi, Tensor grad, Tensor pre, Tensor upstream)";

// Closed-form backward of icnn_forward given grad_psi = dLoss/dpsi (B,
// optional) and grad_map = dLoss/dgrad (B, d): returns dLoss/dy and dLoss
// w.r.t. A, b, W, w_out. `grad` (the map icnn_forward returned) is read only
// for the potential's own input gradient and is required exactly when
// grad_psi is given; pass None otherwise, so a caller never has to keep the
// map alive just for the backward. `need_input_grad=false` skips dLoss/dy
// (returned as an empty tensor).
constexpr const char* kIcnnBackwardSchema =
    "icnn_backward(Tensor? grad_psi, Tensor grad_map, Tensor y, Tensor A, "
    "Tensor W, Tensor w_out, Tensor? grad, Tensor pre, Tensor upstream, "
    "float strong_convexity, str activation, float negative_slope, "
    "bool need_input_grad) "
    "-> (Tensor grad_y, Tensor grad_A, Tensor grad_b, Tensor grad_W, "
    "Tensor grad_w_out)";

// The ICNN modules' weight parametrization W = softplus(raw) (beta 1, threshold 20, like
// torch.nn.functional.softplus), one pass, and its backward grad_raw = grad * sigmoid(raw).
constexpr const char* kSoftplusWeightsSchema = "softplus_weights(Tensor raw) -> Tensor";
constexpr const char* kSoftplusWeightsBackwardSchema =
    "softplus_weights_backward(Tensor grad, Tensor raw) -> Tensor";

// out = alpha * a @ b + beta * base through the named CPU GEMM backend (auto, aten or
// openblas; tests and benchmarks: lidvae_ext._extension.gemm). Returns nothing.
constexpr const char* kGemmSchema =
    "_gemm(Tensor a, Tensor b, Tensor(a!) out, str backend=\"auto\", float alpha=1.0, "
    "Tensor? base=None, float beta=0.0) -> ()";

// The CPU path as the next operator call would run it, "key=value" lines (cpu_gemm,
// cpu_gemm_backends, openblas, cpu_isa, cpu_isas; lists comma-separated): build_info()'s
// run-time part.
constexpr const char* kRuntimeInfoSchema = "_runtime_info() -> str";

// A path of libscipy_openblas.so to try first (the Python layer passes the one the
// scipy_openblas32 package reports); only effective before OpenBLAS is first loaded.
constexpr const char* kAddOpenblasCandidateSchema = "_add_openblas_candidate(str path) -> ()";

// The CPU kernels' scratch cache (cpu/workspace.h): limit_bytes >= 0 sets how many bytes of
// free blocks it keeps, release=True returns every cached block to the system (first).
// Returns "key=value" lines: cached_bytes, cached_blocks, limit_bytes, hits, misses, and
// released_bytes.
constexpr const char* kCpuWorkspaceSchema =
    "_cpu_workspace(int limit_bytes=-1, bool release=False) -> str";

}  // namespace lidvae
