// CPU implementation of the ICNN operators (DESIGN.md §3).
//
// Matrix products go through ATen GEMMs (MKL / OpenBLAS): the L+1 input
// products A_l y share y and are ONE GEMM with the stacked A, and so are the
// products with the stacked sensitivities. Everything elementwise is fused
// into one vectorizable loop per layer (row_ops.h), parallel over the batch.
// For the leaky-ReLU family (sigma'' = 0 after layer 0) the backward skips
// every curvature term that is identically zero, leaving only the layer-0
// term r_0. When the input dimension is tiny (d <= kSkinnyDim) the input-side
// products are done row by row instead of as skinny BLAS calls, which are
// dominated by call and packing overhead at that shape.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <utility>
#include <type_traits>

#include "cpu/row_ops.h"
#include "icnn_activations.h"
#include "icnn_checks.h"
#include "icnn_outputs.h"

namespace lidvae {
namespace {

using at::Tensor;
using cpu::for_each_row;
using cpu::with_layer_kind;

// Input dimensions up to this use the row-by-row input products.
constexpr int64_t kSkinnyDim = 8;

// Column block [layer*H, (layer+1)*H) of a (B, *) row-major matrix.
inline Tensor block(const Tensor& t, int64_t layer, int64_t hidden) {
  return t.narrow(1, layer * hidden, hidden);
}

template <typename T, Activation act>
void forward_kernel(const Tensor& y, const Tensor& A, const Tensor& b, const Tensor& W,
                    const Tensor& w_out, T alpha, T slope, const IcnnDims& dims, Tensor& psi,
                    Tensor& grad, Tensor& pre, Tensor& upstream) {
  using F = Act<act>;
  const int64_t B = dims.batch, d = dims.dim, K = dims.in_dim, H = dims.hidden, L = dims.layers;
  const int64_t M = dims.stacked, LH = L * H, LHs = (L - 1) * H;  // LHs: saved upstream width
  const bool padded = K < d;  // y stands for [y, 0]: only A's first K columns meet it
  const bool skinny = d <= kSkinnyDim;
  const Tensor At = skinny ? A.t().contiguous() : Tensor();  // (d, M)
  const T* At_p = skinny ? At.data_ptr<T>() : nullptr;
  const T* y_p = y.data_ptr<T>();
  T* pre_p = pre.data_ptr<T>();

  // Every input product A_l y at once: pre = y A^T, plus b — folded into the row-wise
  // products (skinny) or, after one plain GEMM, into the activation passes below (the bias
  // broadcast of addmm costs a separate pass over (B, M) in ATen).
  const T* b_p = b.data_ptr<T>();
  if (skinny) {
    for_each_row(B, M * K, [&](int64_t i) {
      cpu::row_skinny_product(pre_p + i * M, b_p, At_p, y_p + i * K, K, M, M);
    });
  } else {
    at::mm_out(pre, y, padded ? A.narrow(1, 0, K).t() : A.t());
  }
  const T* bias = skinny ? nullptr : b_p;  // still to add

  // Forward through the layers; z holds z_{l-1} while layer l is formed.
  Tensor z = at::empty({B, H}, y.options());
  T* z_p = z.data_ptr<T>();
  for_each_row(B, H, [&](int64_t i) {
    cpu::row_bias_act<F, true>(z_p + i * H, pre_p + i * M, bias, H, slope);
  });
  for (int64_t l = 1; l < L; ++l) {
    block(pre, l, H).addmm_(z, W[l - 1].t());
    const T* bias_l = bias ? bias + l * H : nullptr;
    for_each_row(B, H, [&](int64_t i) {
      cpu::row_bias_act<F, false>(z_p + i * H, pre_p + i * M + l * H, bias_l, H, slope);
    });
  }
  const T bias_out = bias ? bias[M - 1] : T(0);

  // Output layer, potential, and the first reverse step: delta_L = sigma'(a_L),
  // delta_{L-1} = sigma'(a_{L-1}) e_{L-1} with e_{L-1} = delta_L w_out (not stored:
  // the backward rebuilds it from a_L for free).
  Tensor delta = at::empty({B, M}, y.options());
  T* delta_p = delta.data_ptr<T>();
  T* psi_p = psi.data_ptr<T>();
  T* up_p = upstream.data_ptr<T>();
  const T* wo_p = w_out.data_ptr<T>();
  with_layer_kind(L == 1, [&](auto first) {
    for_each_row(B, 2 * H + K, [&](int64_t i) {
      const T a_out = pre_p[i * M + M - 1] + bias_out + cpu::dot(z_p + i * H, wo_p, H);
      pre_p[i * M + M - 1] = a_out;
      const T* yi = y_p + i * K;
      psi_p[i] = F::f(a_out, slope) + T(0.5) * alpha * cpu::dot(yi, yi, K);
      const T delta_out = F::df(a_out, slope);
      delta_p[i * M + M - 1] = delta_out;
      cpu::row_dact_mul<F, decltype(first)::value>(delta_p + i * M + (L - 1) * H,
                                                   pre_p + i * M + (L - 1) * H, wo_p, delta_out, H,
                                                   slope);
    });
  });
  // Remaining reverse steps: e_{l-1} = W_l^T delta_l, delta_{l-1} = sigma'(a_{l-1}) e_{l-1}.
  for (int64_t l = L - 1; l >= 1; --l) {
    Tensor e_prev = block(upstream, l - 1, H);
    at::mm_out(e_prev, block(delta, l, H), W[l - 1]);
    with_layer_kind(l == 1, [&](auto first) {
      for_each_row(B, H, [&](int64_t i) {
        cpu::row_dact_mul<F, decltype(first)::value>(delta_p + i * M + (l - 1) * H,
                                                     pre_p + i * M + (l - 1) * H,
                                                     up_p + i * LHs + (l - 1) * H, T(1), H, slope);
      });
    });
  }

  // grad = sum_l A_l^T delta_l + alpha y: one product with the stacked A.
  if (skinny) {
    T* g_p = grad.data_ptr<T>();
    for_each_row(B, M * d, [&](int64_t i) {
      for (int64_t k = 0; k < d; ++k) {
        const T self = k < K ? alpha * y_p[i * K + k] : T(0);
        g_p[i * d + k] = self + cpu::dot(delta_p + i * M, At_p + k * M, M);
      }
    });
  } else if (!padded) {
    at::addmm_out(grad, y, delta, A, /*beta=*/alpha, /*alpha=*/1);
  } else {
    at::mm_out(grad, delta, A);
    if (alpha != T(0)) grad.narrow(1, 0, K).add_(y, alpha);
  }
}

// e_l = W_{l+1}^T delta_{l+1} of sample i as (pointer, scale): saved for l < L-1; the last
// one is delta_L * w_out with delta_L = sigma'(a_L), rebuilt from a_L instead of stored.
template <typename T, typename F>
struct UpstreamRows {
  const T* upstream;  // (B, (L-1)*H) saved e_0 .. e_{L-2}
  const T* pre;       // (B, M) saved pre-activations
  const T* w_out;     // (H)
  int64_t layers, hidden, stacked;
  T slope;

  std::pair<const T*, T> operator()(int64_t i, int64_t l) const {
    if (l < layers - 1) return {upstream + (i * (layers - 1) + l) * hidden, T(1)};
    return {w_out, F::df(pre[i * stacked + stacked - 1], slope)};
  }
};

// dA^T accumulated in per-thread partial sums (threads, d, M), reduced at the end: the
// input-side weight gradient for tiny d, where (M x B) x (B x d) GEMMs are mostly call and
// packing overhead. Deterministic for a fixed thread count (static chunking, no atomics).
template <typename T>
class SkinnyGradA {
 public:
  SkinnyGradA(int64_t batch, int64_t dim, int64_t stacked, const at::TensorOptions& opts)
      : batch_(batch), dim_(dim), stacked_(stacked),
        partial_(at::zeros({at::get_num_threads(), dim, stacked}, opts)) {}

  // dA[off + j, k] += sum_i rows[i * ld + j] * coef[i * coef_ld + k] for j < n, k < cols.
  void add(const T* rows, int64_t ld, int64_t off, int64_t n, const T* coef, int64_t coef_ld,
           int64_t cols) {
    T* part = partial_.data_ptr<T>();
    const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, n * cols));
    at::parallel_for(0, batch_, grain, [&](int64_t begin, int64_t end) {
      T* acc = part + at::get_thread_num() * dim_ * stacked_ + off;
      for (int64_t i = begin; i < end; ++i)
        for (int64_t k = 0; k < cols; ++k)
          cpu::row_axpy(acc + k * stacked_, rows + i * ld, coef[i * coef_ld + k], n);
    });
  }

  void write(Tensor& grad_A) const { grad_A.copy_(partial_.sum(0).t()); }

 private:
  int64_t batch_, dim_, stacked_;
  Tensor partial_;
};

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
  const T* pre_p = pre.data_ptr<T>();
  const T* v_p = v.data_ptr<T>();
  const T* y_p = y.data_ptr<T>();
  Tensor work = at::empty({B, LH}, y.options());
  T* w_p = work.data_ptr<T>();
  std::optional<SkinnyGradA<T>> skinny_dA;
  if (skinny) skinny_dA.emplace(B, d, M, y.options());

  // adot_0 = A_0 v, then r_0 = sigma_0''(a_0) adot_0 e_0 and its terms: dA_0 = r_0^T y (the
  // columns y meets), db_0 = sum_batch r_0, dy = A_0^T r_0 + alpha v.
  const Tensor A0 = A.narrow(0, 0, H);
  Tensor adot0 = block(work, 0, H);
  if (skinny) {
    for_each_row(B, H * d, [&](int64_t i) {
      cpu::row_skinny_product<T>(w_p + i * LH, nullptr, At_p, v_p + i * d, d, H, M);
    });
  } else {
    at::mm_out(adot0, v, A0.t());
  }
  const Tensor r0 = L > 1 ? block(work, 1, H) : at::empty({B, H}, y.options());
  T* r_p = r0.data_ptr<T>();
  const int64_t r_ld = r0.stride(0);
  for_each_row(B, H, [&](int64_t i) {
    const auto [e, c] = upstream_row(i, 0);
    cpu::row_curvature_local<F, true>(r_p + i * r_ld, pre_p + i * M, w_p + i * LH, e, c, H, slope);
  });
  grad_b.zero_();
  Tensor grad_b0 = grad_b.narrow(0, 0, H);
  at::sum_out(grad_b0, r0, {0});
  if (skinny) {
    skinny_dA->add(r_p, r_ld, 0, H, y_p, K, K);
    if (need_input_grad) {
      T* gy_p = grad_y.data_ptr<T>();
      for_each_row(B, H * K, [&](int64_t i) {
        for (int64_t k = 0; k < K; ++k)
          gy_p[i * K + k] = alpha * v_p[i * d + k] + cpu::dot(r_p + i * r_ld, At_p + k * M, H);
      });
    }
  } else {
    Tensor grad_A0 = grad_A.narrow(0, 0, H);
    if (padded) grad_A0.narrow(1, K, d - K).zero_();
    Tensor grad_A0_in = grad_A0.narrow(1, 0, K);
    at::mm_out(grad_A0_in, r0.t(), y);
    if (need_input_grad) {
      at::addmm_out(grad_y, v.narrow(1, 0, K), r0, A0.narrow(1, 0, K), /*beta=*/alpha, /*alpha=*/1);
    }
  }

  // The rest of the tangent (overwrites r_0): adot_l = A_l v + W_l zdot_{l-1}, and
  // zdot_l = sigma'(a_l) adot_l in place.
  if (L > 1 && skinny) {
    for_each_row(B, (LH - H) * d, [&](int64_t i) {
      cpu::row_skinny_product<T>(w_p + i * LH + H, nullptr, At_p + H, v_p + i * d, d, LH - H, M);
    });
  } else if (L > 1) {
    Tensor rest = work.narrow(1, H, LH - H);
    at::mm_out(rest, v, A.narrow(0, H, LH - H).t());
  }
  for_each_row(B, H, [&](int64_t i) { cpu::row_dact_scale<F, true>(w_p + i * LH, pre_p + i * M, H, slope); });
  for (int64_t l = 1; l < L; ++l) {
    block(work, l, H).addmm_(block(work, l - 1, H), W[l - 1].t());
    for_each_row(B, H, [&](int64_t i) {
      cpu::row_dact_scale<F, false>(w_p + i * LH + l * H, pre_p + i * M + l * H, H, slope);
    });
  }

  // The potential's own gradient u enters through z~ = zdot + u z and v~ = v + u y.
  const bool has_u = grad_psi != nullptr && grad_psi->ne(0).any().item<bool>();
  Tensor v_mix = v;
  if (has_u) {
    const T* u_p = grad_psi->data_ptr<T>();
    for_each_row(B, LH, [&](int64_t i) {
      cpu::row_add_act<F, true>(w_p + i * LH, pre_p + i * M, u_p[i], H, slope);
      cpu::row_add_act<F, false>(w_p + i * LH + H, pre_p + i * M + H, u_p[i], LH - H, slope);
    });
    v_mix = v.clone();
    v_mix.narrow(1, 0, K).addcmul_(y, grad_psi->unsqueeze(1));
  }

  // Output layer: delta_L = sigma'(a_L); dw_out = z~_{L-1}^T delta_L, dA_L = delta_L^T v~.
  Tensor delta_out = at::empty({B}, y.options());
  T* do_p = delta_out.data_ptr<T>();
  for (int64_t i = 0; i < B; ++i) do_p[i] = F::df(pre_p[i * M + M - 1], slope);
  at::mv_out(grad_w_out, block(work, L - 1, H).t(), delta_out);
  const T* vm_p = v_mix.data_ptr<T>();
  if (skinny) {
    skinny_dA->add(do_p, 1, M - 1, 1, vm_p, d, d);
  } else {
    Tensor grad_A_out = grad_A.select(0, M - 1);
    at::mv_out(grad_A_out, v_mix.t(), delta_out);
  }
  if (has_u) grad_b.select(0, M - 1).copy_(at::dot(*grad_psi, delta_out));

  // Top-down: delta_l = sigma'(a_l) e_l into block l (z~_l was last read by dW_l / dw_out),
  // then dA_l = delta_l^T v~ (+= for layer 0, which holds r_0^T y), dW_{l-1} = delta_l^T
  // z~_{l-1}, db_l += delta_l^T u.
  for (int64_t l = L - 1; l >= 0; --l) {
    with_layer_kind(l == 0, [&](auto first) {
      for_each_row(B, H, [&](int64_t i) {
        const auto [e, c] = upstream_row(i, l);
        cpu::row_dact_mul<F, decltype(first)::value>(w_p + i * LH + l * H, pre_p + i * M + l * H,
                                                     e, c, H, slope);
      });
    });
    const Tensor delta_l = block(work, l, H);
    if (skinny) {
      skinny_dA->add(w_p + l * H, LH, l * H, H, vm_p, d, d);
    } else {
      Tensor grad_A_l = grad_A.narrow(0, l * H, H);
      if (l == 0) grad_A_l.addmm_(delta_l.t(), v_mix); else at::mm_out(grad_A_l, delta_l.t(), v_mix);
    }
    if (l >= 1) {
      Tensor grad_W_l = grad_W[l - 1];
      at::mm_out(grad_W_l, delta_l.t(), block(work, l - 1, H));
    }
    if (has_u) grad_b.narrow(0, l * H, H).addmv_(delta_l.t(), *grad_psi);
  }
  if (skinny) skinny_dA->write(grad_A);
  if (need_input_grad && has_u) grad_y.addcmul_(grad.narrow(1, 0, K), grad_psi->unsqueeze(1));
}

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
  const T* pre_p = pre.data_ptr<T>();
  const T* wo_p = w_out.data_ptr<T>();
  const T* y_p = y.data_ptr<T>();
  const T* v_p = v.data_ptr<T>();

  // Tangent of the forward pass along v: adot = A v (+ W_l zdot_{l-1}), zdot = sigma'(a) adot.
  Tensor tan;
  if (skinny) {
    tan = at::empty({B, M}, y.options());
    T* t_p = tan.data_ptr<T>();
    for_each_row(B, M * d, [&](int64_t i) {
      cpu::row_skinny_product<T>(t_p + i * M, nullptr, At_p, v_p + i * d, d, M, M);
    });
  } else {
    tan = at::mm(v, A.t());  // (B, M)
  }
  T* tan_p = tan.data_ptr<T>();
  Tensor ztan = at::empty({B, LH}, y.options());  // zdot_0 .. zdot_{L-1}
  T* zt_p = ztan.data_ptr<T>();
  for_each_row(B, H, [&](int64_t i) {
    cpu::row_dact_mul<F, true>(zt_p + i * LH, pre_p + i * M, tan_p + i * M, T(1), H, slope);
  });
  for (int64_t l = 1; l < L; ++l) {
    block(tan, l, H).addmm_(block(ztan, l - 1, H), W[l - 1].t());
    for_each_row(B, H, [&](int64_t i) {
      cpu::row_dact_mul<F, false>(zt_p + i * LH + l * H, pre_p + i * M + l * H,
                                  tan_p + i * M + l * H, T(1), H, slope);
    });
  }

  const bool has_u = grad_psi != nullptr && grad_psi->ne(0).any().item<bool>();

  // Primal activations z_l, for the curvature terms r_l z_{l-1}^T (and u z).
  Tensor zprim = at::empty({B, LH}, y.options());
  T* zp = zprim.data_ptr<T>();
  for_each_row(B, LH, [&](int64_t i) {
    cpu::row_act<F, true>(zp + i * LH, pre_p + i * M, H, slope);
    cpu::row_act<F, false>(zp + i * LH + H, pre_p + i * M + H, LH - H, slope);
  });

  // Curvature adjoints r: r_L = sigma''(a_L) adot_L, where adot_L needs the last W product
  // of the tangent pass; what flows down from it into layer L-1 is back = r_L w_out.
  Tensor r = at::empty({B, M}, y.options());
  T* r_p = r.data_ptr<T>();
  Tensor back = at::empty({B, H}, y.options());
  T* bk = back.data_ptr<T>();
  for_each_row(B, 2 * H, [&](int64_t i) {
    const T a_dot = tan_p[i * M + M - 1] + cpu::dot(zt_p + i * LH + (L - 1) * H, wo_p, H);
    const T r_out = F::d2f(pre_p[i * M + M - 1], slope) * a_dot;
    r_p[i * M + M - 1] = r_out;
    for (int64_t j = 0; j < H; ++j) bk[i * H + j] = r_out * wo_p[j];
  });
  for (int64_t l = L; l >= 1; --l) {
    if (l < L) at::mm_out(back, block(r, l, H), W[l - 1]);
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
    const Tensor u_col = grad_psi->unsqueeze(1);
    ztan.addcmul_(zprim, u_col);
    v_mix = v.clone();
    v_mix.narrow(1, 0, K).addcmul_(y, u_col);
  }

  // Weight gradients: dW_l = delta_l^T z~_{l-1} + r_l^T z_{l-1}.
  for (int64_t l = 1; l < L; ++l) {
    Tensor gW = grad_W[l - 1];
    at::mm_out(gW, block(delta, l, H).t(), block(ztan, l - 1, H));
    gW.addmm_(block(r, l, H).t(), block(zprim, l - 1, H));
  }
  at::mv_out(grad_w_out, block(ztan, L - 1, H).t(), delta.select(1, M - 1));
  grad_w_out.addmv_(block(zprim, L - 1, H).t(), r.select(1, M - 1));

  // dA = delta^T v~ + r^T y (r^T y in the K columns y meets).
  if (skinny) {
    SkinnyGradA<T> skinny_dA(B, d, M, y.options());
    skinny_dA.add(delta_p, M, 0, M, v_mix.data_ptr<T>(), d, d);
    skinny_dA.add(r_p, M, 0, M, y_p, K, K);
    skinny_dA.write(grad_A);
  } else {
    at::mm_out(grad_A, delta.t(), v_mix);
    Tensor grad_A_in = padded ? grad_A.narrow(1, 0, K) : grad_A;  // the columns y meets
    grad_A_in.addmm_(r.t(), y);
  }

  // db = u^T delta + sum_batch r.
  at::sum_out(grad_b, r, {0});
  if (has_u) grad_b.addmv_(delta.t(), *grad_psi);

  // dy = u grad + sum_l A_l^T r_l + alpha v (first K columns when y is padded).
  if (need_input_grad) {
    if (skinny) {
      T* gy_p = grad_y.data_ptr<T>();
      const T* g_p = has_u ? grad.data_ptr<T>() : nullptr;  // read only with u
      const T* u_p = has_u ? grad_psi->data_ptr<T>() : nullptr;
      for_each_row(B, M * K, [&](int64_t i) {
        for (int64_t k = 0; k < K; ++k) {
          T value = alpha * v_p[i * d + k] + cpu::dot(r_p + i * M, At_p + k * M, M);
          if (u_p) value += u_p[i] * g_p[i * d + k];
          gy_p[i * K + k] = value;
        }
      });
    } else {
      at::addmm_out(grad_y, v.narrow(1, 0, K), r, A.narrow(1, 0, K), /*beta=*/alpha, /*alpha=*/1);
      if (has_u) grad_y.addcmul_(grad.narrow(1, 0, K), grad_psi->unsqueeze(1));
    }
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
  const Tensor At = skinny ? A.t().contiguous() : Tensor();  // (d, M)
  const T* At_p = skinny ? At.data_ptr<T>() : nullptr;
  const UpstreamRows<T, F> upstream_row{upstream.data_ptr<T>(), pre.data_ptr<T>(),
                                        w_out.data_ptr<T>(), dims.layers, dims.hidden,
                                        dims.stacked, slope};
  if constexpr (F::kHiddenCurvature) {
    backward_curved<T, act>(grad_psi, v, y, A, At_p, W, w_out, grad, pre, alpha, slope,
                            need_input_grad, upstream_row, dims, grad_y, grad_A, grad_b, grad_W,
                            grad_w_out);
  } else {
    backward_leaky_in_place<T, act>(grad_psi, v, y, A, At_p, W, grad, pre, alpha, slope,
                                    need_input_grad, upstream_row, dims, grad_y, grad_A, grad_b,
                                    grad_W, grad_w_out);
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor> icnn_forward_cpu(
    const Tensor& y_in, const Tensor& A_in, const Tensor& b_in, const Tensor& W_in,
    const Tensor& w_out_in, double strong_convexity, c10::string_view activation,
    double negative_slope) {
  constexpr const char* op = "lidvae_ext::icnn_forward";
  const std::string act_name(activation);
  const IcnnDims dims = check_forward_args(y_in, A_in, b_in, W_in, w_out_in, strong_convexity, act_name,
                                           negative_slope, /*check_values=*/true, op);
  const Tensor y = y_in.contiguous(), A = A_in.contiguous(), b = b_in.contiguous();
  const Tensor W = W_in.contiguous(), w_out = w_out_in.contiguous();
  ForwardOutputs out(dims, y.options());
  if (dims.batch == 0) return out.tuple();
  const Activation act = parse_activation(act_name, op);
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "icnn_forward_cpu", [&] {
    dispatch_activation(act, [&](auto tag) {
      forward_kernel<scalar_t, decltype(tag)::value>(
          y, A, b, W, w_out, static_cast<scalar_t>(strong_convexity),
          static_cast<scalar_t>(negative_slope), dims, out.psi, out.grad, out.pre, out.upstream);
    });
  });
  return out.tuple();
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> icnn_backward_cpu(
    const c10::optional<Tensor>& grad_psi_in, const Tensor& grad_map_in, const Tensor& y_in,
    const Tensor& A_in, const Tensor& W_in, const Tensor& w_out_in,
    const c10::optional<Tensor>& grad_in, const Tensor& pre_in, const Tensor& upstream_in,
    double strong_convexity, c10::string_view activation, double negative_slope,
    bool need_input_grad) {
  constexpr const char* op = "lidvae_ext::icnn_backward";
  const std::string act_name(activation);
  const IcnnDims dims =
      check_backward_args(grad_psi_in, grad_map_in, y_in, A_in, W_in, w_out_in, grad_in, pre_in,
                          upstream_in, strong_convexity, act_name, negative_slope, op);
  const Tensor v = grad_map_in.contiguous(), y = y_in.contiguous(), A = A_in.contiguous();
  const Tensor W = W_in.contiguous(), w_out = w_out_in.contiguous();
  const Tensor pre = pre_in.contiguous(), upstream = upstream_in.contiguous();
  // The saved map is read only with grad_psi (checked above): undefined otherwise.
  const Tensor grad = grad_in.has_value() ? grad_in->contiguous() : Tensor();
  Tensor grad_psi;
  if (grad_psi_in.has_value()) grad_psi = grad_psi_in->contiguous();
  BackwardOutputs out(dims, A, W, w_out, need_input_grad);
  if (dims.batch == 0) return out.tuple();
  const Activation act = parse_activation(act_name, op);
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "icnn_backward_cpu", [&] {
    dispatch_activation(act, [&](auto tag) {
      backward_kernel<scalar_t, decltype(tag)::value>(
          grad_psi.defined() ? &grad_psi : nullptr, v, y, A, W, w_out, grad, pre, upstream,
          static_cast<scalar_t>(strong_convexity), static_cast<scalar_t>(negative_slope),
          need_input_grad, dims, out.grad_y, out.grad_A, out.grad_b, out.grad_W, out.grad_w_out);
    });
  });
  return out.tuple();
}

}  // namespace
}  // namespace lidvae

TORCH_LIBRARY_IMPL(lidvae_ext, CPU, m) {
  m.impl("icnn_forward", &lidvae::icnn_forward_cpu);
  m.impl("icnn_backward", &lidvae::icnn_backward_cpu);
}
