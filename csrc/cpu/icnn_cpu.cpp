// CPU implementation of the ICNN operators (DESIGN.md §3).
//
// Matrix products go through cpu/gemm.h (OpenBLAS or ATen, chosen at run time): the L+1 input
// products A_l y share y and are ONE GEMM with the stacked A, and so are the
// products with the stacked sensitivities. Everything elementwise is fused
// into one vectorizable loop per layer (row_ops.h, compiled per vector ISA and picked at
// run time, cpu/isa.h), parallel over the batch.
// For the leaky-ReLU family (sigma'' = 0 after layer 0) the backward skips
// every curvature term that is identically zero, leaving only the layer-0
// term r_0. When the input dimension is tiny (d <= kSkinnyDim) the input-side
// products are done row by row instead of as skinny BLAS calls, which are
// dominated by call and packing overhead at that shape.

#include <optional>
#include <tuple>
#include <utility>
#include <type_traits>

#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu/row_ops.h"
#include "cpu/workspace.h"
#include "icnn_activations.h"
#include "icnn_checks.h"
#include "icnn_outputs.h"
#include "cpu/backward_common.h"
#include "cpu/backward_curved.h"
#include "cpu/backward_leaky.h"

namespace lidvae {
namespace {

using cpu::for_each_row;
using cpu::with_layer_kind;

using cpu::block;
using cpu::kSkinnyDim;

template <typename T, Activation act>
void forward_kernel(const Tensor& y, const Tensor& A, const Tensor& b, const Tensor& W,
                    const Tensor& w_out, T alpha, T slope, const IcnnDims& dims, Tensor& psi,
                    Tensor& grad, Tensor& pre, Tensor& upstream) {
  using F = Act<act>;
  const int64_t B = dims.batch, d = dims.dim, K = dims.in_dim, H = dims.hidden, L = dims.layers;
  const int64_t M = dims.stacked, LHs = (L - 1) * H;  // LHs: saved upstream width
  const bool padded = K < d;  // y stands for [y, 0]: only A's first K columns meet it
  const bool skinny = d <= kSkinnyDim;
  const Tensor At = skinny ? contig(transposed(A)) : Tensor();  // (d, M)
  const T* At_p = skinny ? At.mutable_data_ptr<T>() : nullptr;
  const T* y_p = y.mutable_data_ptr<T>();
  T* pre_p = pre.mutable_data_ptr<T>();

  // Every input product A_l y at once: pre = y A^T, plus b — folded into the row-wise
  // products (skinny) or, after one plain GEMM, into the activation passes below (the bias
  // broadcast of addmm costs a separate pass over (B, M) in ATen).
  // The one workspace, delta (B, M), for the sensitivities of the reverse sweep; until
  // then its block L-1 holds z, which is z_{l-1} while layer l is formed (the output loop
  // reads z_{L-1} of a row before it writes delta_{L-1} there).
  cpu::Workspace scratch(y);  // before every scratch tensor: their memory returns to it
  Tensor delta = scratch.empty({B, M});
  T* delta_p = delta.mutable_data_ptr<T>();
  const Tensor z = block(delta, L - 1, H);
  T* z_p = delta_p + (L - 1) * H;  // row stride M

  const T* b_p = b.mutable_data_ptr<T>();
  const T* bias = skinny ? nullptr : b_p;  // still to add after the GEMM
  if (skinny) {  // row-wise products with the bias, and z_0, in one pass
    for_each_row(B, M * K + H, [&](int64_t i) {
      cpu::row_skinny_product(pre_p + i * M, b_p, At_p, y_p + i * K, K, M, M);
      cpu::row_bias_act<F, true>(z_p + i * M, pre_p + i * M, static_cast<const T*>(nullptr), H, slope);
    });
  } else {
    cpu::gemm_out(pre, y, padded ? transposed(narrowed(A, 1, 0, K)) : transposed(A));
    for_each_row(B, H, [&](int64_t i) {
      cpu::row_bias_act<F, true>(z_p + i * M, pre_p + i * M, bias, H, slope);
    });
  }
  for (int64_t l = 1; l < L; ++l) {
    cpu::gemm_acc(block(pre, l, H), z, transposed(pick(W, 0, l - 1)));
    const T* bias_l = bias ? bias + l * H : nullptr;
    for_each_row(B, H, [&](int64_t i) {
      cpu::row_bias_act<F, false>(z_p + i * M, pre_p + i * M + l * H, bias_l, H, slope);
    });
  }
  const T bias_out = bias ? bias[M - 1] : T(0);

  // Output layer, potential, and the first reverse step: delta_L = sigma'(a_L),
  // delta_{L-1} = sigma'(a_{L-1}) e_{L-1} with e_{L-1} = delta_L w_out (not stored:
  // the backward rebuilds it from a_L for free).
  T* psi_p = psi.mutable_data_ptr<T>();
  // Row-wise map for tiny d, done in the pass that completes delta_0 of the row.
  T* g_p = grad.mutable_data_ptr<T>();
  auto skinny_grad_row = [&](int64_t i) {
    for (int64_t k = 0; k < d; ++k) {
      const T self = k < K ? alpha * y_p[i * K + k] : T(0);
      g_p[i * d + k] = self + cpu::dot(delta_p + i * M, At_p + k * M, M);
    }
  };
  T* up_p = upstream.mutable_data_ptr<T>();
  const T* wo_p = w_out.mutable_data_ptr<T>();
  with_layer_kind(L == 1, [&](auto first) {
    for_each_row(B, 2 * H + K, [&](int64_t i) {
      const T a_out = pre_p[i * M + M - 1] + bias_out + cpu::dot(z_p + i * M, wo_p, H);
      pre_p[i * M + M - 1] = a_out;
      const T* yi = y_p + i * K;
      psi_p[i] = F::f(a_out, slope) + T(0.5) * alpha * cpu::dot(yi, yi, K);
      const T delta_out = F::df(a_out, slope);
      delta_p[i * M + M - 1] = delta_out;
      cpu::row_dact_mul<F, decltype(first)::value>(delta_p + i * M + (L - 1) * H,
                                                   pre_p + i * M + (L - 1) * H, wo_p, delta_out, H,
                                                   slope);
      if (skinny && L == 1) skinny_grad_row(i);
    });
  });
  // Remaining reverse steps: e_{l-1} = W_l^T delta_l, delta_{l-1} = sigma'(a_{l-1}) e_{l-1}.
  for (int64_t l = L - 1; l >= 1; --l) {
    Tensor e_prev = block(upstream, l - 1, H);
    cpu::gemm_out(e_prev, block(delta, l, H), pick(W, 0, l - 1));
    with_layer_kind(l == 1, [&](auto first) {
      for_each_row(B, H, [&](int64_t i) {
        cpu::row_dact_mul<F, decltype(first)::value>(delta_p + i * M + (l - 1) * H,
                                                     pre_p + i * M + (l - 1) * H,
                                                     up_p + i * LHs + (l - 1) * H, T(1), H, slope);
        if (skinny && l == 1) skinny_grad_row(i);
      });
    });
  }

  // grad = sum_l A_l^T delta_l + alpha y: one product with the stacked A (for tiny d it was
  // done row-wise above).
  if (!skinny && !padded) {
    cpu::gemm_out(grad, delta, A, /*alpha=*/1, /*base=*/y, /*beta=*/alpha);
  } else if (!skinny) {
    cpu::gemm_out(grad, delta, A);
    if (alpha != T(0)) add_scaled_<T>(narrowed(grad, 1, 0, K), y, alpha);
  }
}

template <typename T, Activation act>
void backward_kernel(const Tensor* grad_psi, const Tensor& v, const Tensor& y, const Tensor& A,
                     const Tensor& W, const Tensor& w_out, const Tensor& grad, const Tensor& pre,
                     const Tensor& upstream, T alpha, T slope, bool need_input_grad,
                     const IcnnDims& dims, Tensor& grad_y, Tensor& grad_A, Tensor& grad_b,
                     Tensor& grad_W, Tensor& grad_w_out) {
  using F = Act<act>;
  const bool skinny = dims.dim <= kSkinnyDim;
  const Tensor At = skinny ? contig(transposed(A)) : Tensor();  // (d, M)
  const T* At_p = skinny ? At.mutable_data_ptr<T>() : nullptr;
  const cpu::UpstreamRows<T, F> upstream_row{upstream.mutable_data_ptr<T>(), pre.mutable_data_ptr<T>(),
                                        w_out.mutable_data_ptr<T>(), dims.layers, dims.hidden,
                                        dims.stacked, slope};
  if constexpr (F::kHiddenCurvature) {
    cpu::backward_curved<T, act>(grad_psi, v, y, A, At_p, W, w_out, grad, pre, alpha, slope,
                            need_input_grad, upstream_row, dims, grad_y, grad_A, grad_b, grad_W,
                            grad_w_out);
  } else {
    cpu::backward_leaky_in_place<T, act>(grad_psi, v, y, A, At_p, W, grad, pre, alpha, slope,
                                    need_input_grad, upstream_row, dims, grad_y, grad_A, grad_b,
                                    grad_W, grad_w_out);
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor> icnn_forward_cpu(
    const Tensor& y_in, const Tensor& A_in, const Tensor& b_in, const Tensor& W_in,
    const Tensor& w_out_in, double strong_convexity, StrArg activation,
    double negative_slope) {
  constexpr const char* op = "lidvae_ext::icnn_forward";
  const std::string& act_name = activation;
  const IcnnDims dims = check_forward_args(y_in, A_in, b_in, W_in, w_out_in, strong_convexity, act_name,
                                           negative_slope, /*check_values=*/true, op);
  const Tensor y = contig(y_in), A = contig(A_in), b = contig(b_in);
  const Tensor W = contig(W_in), w_out = contig(w_out_in);
  ForwardOutputs out(dims, y);
  if (dims.batch == 0) return out.tuple();
  cpu::set_active_isa(cpu::select_isa());
  const Activation act = parse_activation(act_name, op);
  dispatch_floating(y.scalar_type(), op, [&](auto zero) {
    using scalar_t = decltype(zero);
    dispatch_activation(act, [&](auto tag) {
      forward_kernel<scalar_t, decltype(tag)::value>(
          y, A, b, W, w_out, static_cast<scalar_t>(strong_convexity),
          static_cast<scalar_t>(negative_slope), dims, out.psi, out.grad, out.pre, out.upstream);
    });
  });
  return out.tuple();
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> icnn_backward_cpu(
    const std::optional<Tensor>& grad_psi_in, const Tensor& grad_map_in, const Tensor& y_in,
    const Tensor& A_in, const Tensor& W_in, const Tensor& w_out_in,
    const std::optional<Tensor>& grad_in, const Tensor& pre_in, const Tensor& upstream_in,
    double strong_convexity, StrArg activation, double negative_slope,
    bool need_input_grad) {
  constexpr const char* op = "lidvae_ext::icnn_backward";
  const std::string& act_name = activation;
  const IcnnDims dims =
      check_backward_args(grad_psi_in, grad_map_in, y_in, A_in, W_in, w_out_in, grad_in, pre_in,
                          upstream_in, strong_convexity, act_name, negative_slope, op);
  const BackwardInputs in(grad_psi_in, grad_map_in, y_in, A_in, W_in, w_out_in, grad_in, pre_in,
                          upstream_in);
  BackwardOutputs out(dims, in.A, in.W, in.w_out, need_input_grad);
  if (dims.batch == 0) return out.tuple();
  cpu::set_active_isa(cpu::select_isa());
  const Activation act = parse_activation(act_name, op);
  dispatch_floating(in.y.scalar_type(), op, [&](auto zero) {
    using scalar_t = decltype(zero);
    dispatch_activation(act, [&](auto tag) {
      backward_kernel<scalar_t, decltype(tag)::value>(
          in.grad_psi_or_null(), in.v, in.y, in.A, in.W, in.w_out, in.grad, in.pre, in.upstream,
          static_cast<scalar_t>(strong_convexity), static_cast<scalar_t>(negative_slope),
          need_input_grad, dims, out.grad_y, out.grad_A, out.grad_b, out.grad_W, out.grad_w_out);
    });
  });
  return out.tuple();
}

}  // namespace
}  // namespace lidvae

STABLE_TORCH_LIBRARY_IMPL(lidvae_ext, CPU, m) {
  m.impl("icnn_forward", TORCH_BOX(&lidvae::icnn_forward_cpu));
  m.impl("icnn_backward", TORCH_BOX(&lidvae::icnn_backward_cpu));
}
