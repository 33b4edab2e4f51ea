// CPU backward with curvature in every layer (softplus).
#pragma once


#include <optional>

#include "cpu/backward_common.h"
#include "cpu/gemm.h"
#include "cpu/row_ops.h"
#include "cpu/workspace.h"
#include "icnn_activations.h"
#include "icnn_checks.h"

namespace lidvae {
namespace cpu {

// Backward with curvature in every layer (softplus: sigma'' != 0): the tangent pass, the
// curvature adjoints r_l (a reverse sweep of their own, DESIGN.md §3), then the
// sensitivities delta recomputed into the tangent's buffer.
template <typename T, Activation act>
void backward_curved(const Tensor* grad_psi, const Tensor& v, const Tensor& y, const Tensor& A,
                     const T* At_p, const Tensor& W, const Tensor& w_out, const Tensor& grad,
                     const Tensor& pre, T alpha, T slope, bool need_input_grad,
                     const UpstreamRows<T, Act<act>>& upstream_row, const IcnnDims& dims,
                     Tensor& grad_y, Tensor& grad_A, Tensor& grad_b, Tensor& grad_W,
                     Tensor& grad_w_out) {
  using F = Act<act>;
  static_assert(F::kHiddenCurvature, "the leaky-ReLU family uses backward_leaky_in_place");
  const int64_t B = dims.batch, d = dims.dim, K = dims.in_dim, H = dims.hidden, L = dims.layers;
  const int64_t M = dims.stacked, LH = L * H;
  const bool padded = K < d;  // y stands for [y, 0]
  const bool skinny = At_p != nullptr;
  const T* pre_p = pre.mutable_data_ptr<T>();
  const T* wo_p = w_out.mutable_data_ptr<T>();
  const T* y_p = y.mutable_data_ptr<T>();
  const T* v_p = v.mutable_data_ptr<T>();

  Workspace scratch(y);  // before every scratch tensor: their memory returns to it

  // Tangent of the forward pass along v: adot = A v (+ W_l zdot_{l-1}), zdot = sigma'(a) adot.
  Tensor tan;
  if (skinny) {
    tan = scratch.empty({B, M});
    T* t_p = tan.mutable_data_ptr<T>();
    for_each_row(B, M * d, [&](int64_t i) {
      cpu::row_skinny_product<T>(t_p + i * M, nullptr, At_p, v_p + i * d, d, M, M);
    });
  } else {
    tan = scratch.empty({B, M});
    cpu::gemm_out(tan, v, transposed(A));  // (B, M)
  }
  T* tan_p = tan.mutable_data_ptr<T>();
  Tensor ztan = scratch.empty({B, LH});  // zdot_0 .. zdot_{L-1}
  T* zt_p = ztan.mutable_data_ptr<T>();
  for_each_row(B, H, [&](int64_t i) {
    cpu::row_dact_mul<F, true>(zt_p + i * LH, pre_p + i * M, tan_p + i * M, T(1), H, slope);
  });
  for (int64_t l = 1; l < L; ++l) {
    cpu::gemm_acc(block(tan, l, H), block(ztan, l - 1, H), transposed(pick(W, 0, l - 1)));
    for_each_row(B, H, [&](int64_t i) {
      cpu::row_dact_mul<F, false>(zt_p + i * LH + l * H, pre_p + i * M + l * H,
                                  tan_p + i * M + l * H, T(1), H, slope);
    });
  }

  const bool has_u = grad_psi != nullptr && any_nonzero<T>(*grad_psi);

  // Primal activations z_l, for the curvature terms r_l z_{l-1}^T (and u z).
  Tensor zprim = scratch.empty({B, LH});
  T* zp = zprim.mutable_data_ptr<T>();
  for_each_row(B, LH, [&](int64_t i) {
    cpu::row_act<F, true>(zp + i * LH, pre_p + i * M, H, slope);
    cpu::row_act<F, false>(zp + i * LH + H, pre_p + i * M + H, LH - H, slope);
  });

  // Curvature adjoints r: r_L = sigma''(a_L) adot_L, where adot_L needs the last W product
  // of the tangent pass; what flows down from it into layer L-1 is back = r_L w_out.
  Tensor r = scratch.empty({B, M});
  T* r_p = r.mutable_data_ptr<T>();
  Tensor back = scratch.empty({B, H});
  T* bk = back.mutable_data_ptr<T>();
  for_each_row(B, 2 * H, [&](int64_t i) {
    const T a_dot = tan_p[i * M + M - 1] + cpu::dot(zt_p + i * LH + (L - 1) * H, wo_p, H);
    const T r_out = F::d2f(pre_p[i * M + M - 1], slope) * a_dot;
    r_p[i * M + M - 1] = r_out;
    for (int64_t j = 0; j < H; ++j) bk[i * H + j] = r_out * wo_p[j];
  });
  for (int64_t l = L; l >= 1; --l) {
    if (l < L) cpu::gemm_out(back, block(r, l, H), pick(W, 0, l - 1));
    const int64_t off = (l - 1) * H;
    with_layer_kind(l == 1, [&](auto first) {
      for_each_row(B, H, [&](int64_t i) {
        const auto [e, c] = upstream_row(i, l - 1);
        cpu::row_curvature<F, decltype(first)::value>(r_p + i * M + off, pre_p + i * M + off,
                                                      tan_p + i * M + off, e, c, bk + i * H, H,
                                                      slope);
      });
    });
  }

  // Sensitivities delta = sigma'(a) * e (delta_L = sigma'(a_L)), recomputed from the saved e
  // into the tangent's buffer, which is no longer needed.
  Tensor delta = tan;
  T* delta_p = tan_p;
  for_each_row(B, M, [&](int64_t i) {
    const T* a = pre_p + i * M;
    T* dl = delta_p + i * M;
    const auto [e0, c0] = upstream_row(i, 0);
    cpu::row_dact_mul<F, true>(dl, a, e0, c0, H, slope);
    for (int64_t l = 1; l < L; ++l) {
      const auto [e, c] = upstream_row(i, l);
      cpu::row_dact_mul<F, false>(dl + l * H, a + l * H, e, c, H, slope);
    }
    dl[M - 1] = F::df(a[M - 1], slope);
  });

  // The potential's own gradient enters through z~ = zdot + u z and v~ = v + u y.
  Tensor v_mix = v;
  if (has_u) {
    add_mul_col_<T>(ztan, zprim, *grad_psi);
    v_mix = torch::stable::clone(v);
    add_mul_col_<T>(narrowed(v_mix, 1, 0, K), y, *grad_psi);
  }

  // Weight gradients: dW_l = delta_l^T z~_{l-1} + r_l^T z_{l-1}.
  for (int64_t l = 1; l < L; ++l) {
    Tensor gW = pick(grad_W, 0, l - 1);
    cpu::gemm_out(gW, transposed(block(delta, l, H)), block(ztan, l - 1, H));
    cpu::gemm_acc(gW, transposed(block(r, l, H)), block(zprim, l - 1, H));
  }
  mv_out(grad_w_out, transposed(block(ztan, L - 1, H)), pick(delta, 1, M - 1));
  addmv_<T>(grad_w_out, transposed(block(zprim, L - 1, H)), pick(r, 1, M - 1));

  // dA = delta^T v~ + r^T y (r^T y in the K columns y meets).
  if (skinny) {
    SkinnyGradA<T> skinny_dA(B, d, M, scratch);
    skinny_dA.add(delta_p, M, 0, M, v_mix.mutable_data_ptr<T>(), d, d);
    skinny_dA.add(r_p, M, 0, M, y_p, K, K);
    skinny_dA.write(grad_A);
  } else {
    cpu::gemm_out(grad_A, transposed(delta), v_mix);
    Tensor grad_A_in = padded ? narrowed(grad_A, 1, 0, K) : grad_A;  // the columns y meets
    cpu::gemm_acc(grad_A_in, transposed(r), y);
  }

  // db = u^T delta + sum_batch r.
  sum0_out(grad_b, r);
  if (has_u) addmv_<T>(grad_b, transposed(delta), *grad_psi);

  // dy = u grad + sum_l A_l^T r_l + alpha v (first K columns when y is padded).
  if (need_input_grad) {
    if (skinny) {
      T* gy_p = grad_y.mutable_data_ptr<T>();
      const T* g_p = has_u ? grad.mutable_data_ptr<T>() : nullptr;  // read only with u
      const T* u_p = has_u ? grad_psi->const_data_ptr<T>() : nullptr;
      for_each_row(B, M * K, [&](int64_t i) {
        for (int64_t k = 0; k < K; ++k) {
          T value = alpha * v_p[i * d + k] + cpu::dot(r_p + i * M, At_p + k * M, M);
          if (u_p) value += u_p[i] * g_p[i * d + k];
          gy_p[i * K + k] = value;
        }
      });
    } else {
      cpu::gemm_out(grad_y, r, narrowed(A, 1, 0, K), /*alpha=*/1, /*base=*/narrowed(v, 1, 0, K), /*beta=*/alpha);
      if (has_u) add_mul_col_<T>(grad_y, narrowed(grad, 1, 0, K), *grad_psi);
    }
  }
}

}  // namespace cpu
}  // namespace lidvae
