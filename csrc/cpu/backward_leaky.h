// CPU backward of the leaky-ReLU family (sigma'' = 0 after layer 0): one workspace, in place.
#pragma once


#include <optional>

#include "cpu/backward_common.h"
#include "cpu/gemm.h"
#include "cpu/row_ops.h"
#include "icnn_activations.h"
#include "icnn_checks.h"

namespace lidvae {
namespace cpu {

// Leaky-ReLU backward (sigma'' = 0 after layer 0, so r_0 is the only curvature term) with
// ONE (B, L*H) workspace: its block l holds adot_l, then zdot_l (in place), then delta_l,
// each overwritten top-down right after its last use; r_0 lives in block 1 until adot_1 is
// formed (its own buffer only when L = 1). Input-side products are GEMMs, or row-wise
// loops when d <= kSkinnyDim (At_p = A^T (d, M) given).
template <typename T, Activation act>
void backward_leaky_in_place(const Tensor* grad_psi, const Tensor& v, const Tensor& y,
                             const Tensor& A, const T* At_p, const Tensor& W, const Tensor& grad,
                             const Tensor& pre, T alpha, T slope, bool need_input_grad,
                             const UpstreamRows<T, Act<act>>& upstream_row, const IcnnDims& dims,
                             Tensor& grad_y, Tensor& grad_A, Tensor& grad_b, Tensor& grad_W,
                             Tensor& grad_w_out) {
  using F = Act<act>;
  static_assert(!F::kHiddenCurvature, "only sigma'' = 0 after layer 0");
  const int64_t B = dims.batch, d = dims.dim, K = dims.in_dim, H = dims.hidden, L = dims.layers;
  const int64_t M = dims.stacked, LH = L * H;
  const bool padded = K < d;  // y stands for [y, 0]
  const bool skinny = At_p != nullptr;
  const T* pre_p = pre.mutable_data_ptr<T>();
  const T* v_p = v.mutable_data_ptr<T>();
  const T* y_p = y.mutable_data_ptr<T>();
  Workspace scratch(y);  // before every scratch tensor: their memory returns to it
  Tensor work = scratch.empty({B, LH});
  T* w_p = work.mutable_data_ptr<T>();
  std::optional<SkinnyGradA<T>> skinny_dA;
  if (skinny) skinny_dA.emplace(B, d, M, scratch);
  Tensor delta_out = scratch.empty({B});  // delta_L = sigma'(a_L)
  T* do_p = delta_out.mutable_data_ptr<T>();

  if (skinny) {
    // One pass per row: adot = A v for every hidden block (row-wise: d is tiny), r_0 =
    // sigma_0''(a_0) adot_0 e_0 in a per-thread row buffer with all its terms (dA_0 += r_0
    // y^T, db_0 += r_0, dy = A_0^T r_0 + alpha v), then zdot_0 = sigma_0'(a_0) adot_0 in place.
    const int64_t threads = get_num_threads();
    Tensor r_rows = scratch.empty({threads, H});
    Tensor db0_partial = scratch.zeros({threads, H});
    T* gy_p = need_input_grad ? grad_y.mutable_data_ptr<T>() : nullptr;
    const int64_t grain = std::max<int64_t>(1, (1 << 14) / (LH * d + 4 * H));
    parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
      const int64_t t = get_thread_num();
      T* r_row = r_rows.mutable_data_ptr<T>() + t * H;
      T* db0 = db0_partial.mutable_data_ptr<T>() + t * H;
      T* acc = skinny_dA->thread_partial();
      for (int64_t i = begin; i < end; ++i) {
        T* w_row = w_p + i * LH;
        const T* a_row = pre_p + i * M;
        cpu::row_skinny_product<T>(w_row, nullptr, At_p, v_p + i * d, d, LH, M);
        const auto [e, c] = upstream_row(i, 0);
        cpu::row_curvature_local<F, true>(r_row, a_row, w_row, e, c, H, slope);
        cpu::row_axpy(db0, r_row, T(1), H);
        for (int64_t k = 0; k < K; ++k) cpu::row_axpy(acc + k * M, r_row, y_p[i * K + k], H);
        if (gy_p != nullptr) {
          for (int64_t k = 0; k < K; ++k)
            gy_p[i * K + k] = alpha * v_p[i * d + k] + cpu::dot(r_row, At_p + k * M, H);
        }
        cpu::row_dact_scale<F, true>(w_row, a_row, H, slope);
        do_p[i] = F::df(a_row[M - 1], slope);
      }
    });
    fill_zero(grad_b);
    copy_into(narrowed(grad_b, 0, 0, H), sum0(db0_partial));
  } else {
    // adot_0 = A_0 v, then r_0 = sigma_0''(a_0) adot_0 e_0 (in block 1, free until adot_1)
    // and its terms: dA_0 = r_0^T y (the columns y meets), db_0, dy = A_0^T r_0 + alpha v.
    const Tensor A0 = narrowed(A, 0, 0, H);
    Tensor adot0 = block(work, 0, H);
    cpu::gemm_out(adot0, v, transposed(A0));
    const Tensor r0 = L > 1 ? block(work, 1, H) : scratch.empty({B, H});
    T* r_p = r0.mutable_data_ptr<T>();
    const int64_t r_ld = r0.stride(0);
    for_each_row(B, H, [&](int64_t i) {
      const auto [e, c] = upstream_row(i, 0);
      cpu::row_curvature_local<F, true>(r_p + i * r_ld, pre_p + i * M, w_p + i * LH, e, c, H, slope);
    });
    fill_zero(grad_b);
    Tensor grad_b0 = narrowed(grad_b, 0, 0, H);
    sum0_out(grad_b0, r0);
    Tensor grad_A0 = narrowed(grad_A, 0, 0, H);
    if (padded) fill_zero(narrowed(grad_A0, 1, K, d - K));
    Tensor grad_A0_in = narrowed(grad_A0, 1, 0, K);
    cpu::gemm_out(grad_A0_in, transposed(r0), y);
    if (need_input_grad) {
      cpu::gemm_out(grad_y, r0, narrowed(A0, 1, 0, K), /*alpha=*/1, /*base=*/narrowed(v, 1, 0, K), /*beta=*/alpha);
    }
    // The rest of the tangent (overwrites r_0): adot_l = A_l v (+ W_l zdot_{l-1} below), and
    // zdot_0 = sigma_0'(a_0) adot_0 in place.
    if (L > 1) {
      Tensor rest = narrowed(work, 1, H, LH - H);
      cpu::gemm_out(rest, v, transposed(narrowed(A, 0, H, LH - H)));
    }
    for_each_row(B, H, [&](int64_t i) {
      cpu::row_dact_scale<F, true>(w_p + i * LH, pre_p + i * M, H, slope);
      do_p[i] = F::df(pre_p[i * M + M - 1], slope);
    });
  }

  // zdot_l = sigma'(a_l) (A_l v + W_l zdot_{l-1}), in place.
  for (int64_t l = 1; l < L; ++l) {
    cpu::gemm_acc(block(work, l, H), block(work, l - 1, H), transposed(pick(W, 0, l - 1)));
    for_each_row(B, H, [&](int64_t i) {
      cpu::row_dact_scale<F, false>(w_p + i * LH + l * H, pre_p + i * M + l * H, H, slope);
    });
  }

  // The potential's own gradient u enters through z~ = zdot + u z and v~ = v + u y.
  const bool has_u = grad_psi != nullptr && any_nonzero<T>(*grad_psi);
  Tensor v_mix = v;
  if (has_u) {
    const T* u_p = grad_psi->const_data_ptr<T>();
    for_each_row(B, LH, [&](int64_t i) {
      cpu::row_add_act<F, true>(w_p + i * LH, pre_p + i * M, u_p[i], H, slope);
      cpu::row_add_act<F, false>(w_p + i * LH + H, pre_p + i * M + H, u_p[i], LH - H, slope);
    });
    v_mix = torch::stable::clone(v);
    add_mul_col_<T>(narrowed(v_mix, 1, 0, K), y, *grad_psi);
  }

  // Output layer: dw_out = z~_{L-1}^T delta_L, dA_L = delta_L^T v~.
  mv_out(grad_w_out, transposed(block(work, L - 1, H)), delta_out);
  const T* vm_p = v_mix.mutable_data_ptr<T>();
  if (!skinny) {  // (the row-wise path adds it in its layer L-1 pass below)
    Tensor grad_A_out = pick(grad_A, 0, M - 1);
    mv_out(grad_A_out, transposed(v_mix), delta_out);
  }
  if (has_u) grad_b.mutable_data_ptr<T>()[M - 1] = cpu::dot(grad_psi->const_data_ptr<T>(), do_p, B);

  // Top-down: delta_l = sigma'(a_l) e_l into block l (z~_l was last read by dW_l / dw_out),
  // then dA_l = delta_l^T v~ (+= for layer 0, which holds r_0^T y), dW_{l-1} = delta_l^T
  // z~_{l-1}, db_l += delta_l^T u.
  // Row-wise path: the dA terms are accumulated in the same pass that forms delta_l.
  for (int64_t l = L - 1; l >= 0; --l) {
    with_layer_kind(l == 0, [&](auto first) {
      constexpr bool kFirst = decltype(first)::value;
      if (skinny) {
        const bool with_out = l == L - 1;
        const int64_t grain = std::max<int64_t>(1, (1 << 14) / ((d + 2) * H));
        parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
          T* acc = skinny_dA->thread_partial();
          for (int64_t i = begin; i < end; ++i) {
            const auto [e, c] = upstream_row(i, l);
            T* delta_row = w_p + i * LH + l * H;
            cpu::row_dact_mul<F, kFirst>(delta_row, pre_p + i * M + l * H, e, c, H, slope);
            for (int64_t k = 0; k < d; ++k) {
              const T vk = vm_p[i * d + k];
              cpu::row_axpy(acc + k * M + l * H, delta_row, vk, H);
              if (with_out) acc[k * M + M - 1] += do_p[i] * vk;
            }
          }
        });
      } else {
        for_each_row(B, H, [&](int64_t i) {
          const auto [e, c] = upstream_row(i, l);
          cpu::row_dact_mul<F, kFirst>(w_p + i * LH + l * H, pre_p + i * M + l * H, e, c, H, slope);
        });
      }
    });
    const Tensor delta_l = block(work, l, H);
    if (!skinny) {
      Tensor grad_A_l = narrowed(grad_A, 0, l * H, H);
      if (l == 0) cpu::gemm_acc(grad_A_l, transposed(delta_l), v_mix); else cpu::gemm_out(grad_A_l, transposed(delta_l), v_mix);
    }
    if (l >= 1) {
      Tensor grad_W_l = pick(grad_W, 0, l - 1);
      cpu::gemm_out(grad_W_l, transposed(delta_l), block(work, l - 1, H));
    }
    if (has_u) addmv_<T>(narrowed(grad_b, 0, l * H, H), transposed(delta_l), *grad_psi);
  }
  if (skinny) skinny_dA->write(grad_A);
  if (need_input_grad && has_u) add_mul_col_<T>(grad_y, narrowed(grad, 1, 0, K), *grad_psi);
}

}  // namespace cpu
}  // namespace lidvae
