// CPU implementation of the ICNN operators (DESIGN.md §3).
//
// Matrix products go through ATen GEMMs (MKL / OpenBLAS): the L+1 input
// products A_l y share y and are ONE GEMM with the stacked A, and so are the
// products with the stacked sensitivities. Everything elementwise is fused
// into one loop per layer, parallel over the batch. For the leaky-ReLU family
// (sigma'' = 0 after layer 0) the backward skips every curvature term that is
// identically zero, leaving only the layer-0 term r_0.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "icnn_activations.h"
#include "icnn_checks.h"

namespace lidvae {
namespace {

using at::Tensor;

// Runs fn(row) for every row in [0, rows), in parallel chunks of roughly
// kGrainElements elements of work.
template <typename Fn>
void for_each_row(int64_t rows, int64_t work_per_row, const Fn& fn) {
  constexpr int64_t kGrainElements = 1 << 14;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, work_per_row));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) fn(row);
  });
}

// Column block [layer*H, (layer+1)*H) of a (B, *) row-major matrix.
inline Tensor block(const Tensor& t, int64_t layer, int64_t hidden) {
  return t.narrow(1, layer * hidden, hidden);
}

template <typename T, Activation act>
void forward_kernel(const Tensor& y, const Tensor& A, const Tensor& b, const Tensor& W,
                    const Tensor& w_out, T alpha, T slope, const IcnnDims& dims, Tensor& psi,
                    Tensor& grad, Tensor& pre, Tensor& upstream) {
  using F = Act<act>;
  const int64_t B = dims.batch, K = dims.in_dim, H = dims.hidden, L = dims.layers, M = dims.stacked;
  const int64_t LH = L * H;
  const bool padded = K < dims.dim;  // y stands for [y, 0]: only A's first K columns meet it

  // Every input product A_l y + b_l in one GEMM: pre = b + y A^T.
  at::addmm_out(pre, b, y, padded ? A.narrow(1, 0, K).t() : A.t());
  T* pre_p = pre.data_ptr<T>();

  // Forward through the layers; z holds z_{l-1} while layer l is formed.
  Tensor z = at::empty({B, H}, y.options());
  T* z_p = z.data_ptr<T>();
  for_each_row(B, H, [&](int64_t i) {
    for (int64_t j = 0; j < H; ++j) z_p[i * H + j] = F::f0(pre_p[i * M + j], slope);
  });
  for (int64_t l = 1; l < L; ++l) {
    block(pre, l, H).addmm_(z, W[l - 1].t());
    for_each_row(B, H, [&](int64_t i) {
      const T* a = pre_p + i * M + l * H;
      for (int64_t j = 0; j < H; ++j) z_p[i * H + j] = F::f(a[j], slope);
    });
  }

  // Output layer, potential, and the first reverse step:
  // delta_L = sigma'(a_L), e_{L-1} = delta_L w_out, delta_{L-1} = sigma'(a_{L-1}) e_{L-1}.
  Tensor delta = at::empty({B, M}, y.options());
  T* delta_p = delta.data_ptr<T>();
  T* psi_p = psi.data_ptr<T>();
  T* up_p = upstream.data_ptr<T>();
  const T* y_p = y.data_ptr<T>();
  const T* wo_p = w_out.data_ptr<T>();
  for_each_row(B, H + K, [&](int64_t i) {
    const T* zi = z_p + i * H;
    T a_out = pre_p[i * M + M - 1];
    for (int64_t j = 0; j < H; ++j) a_out += zi[j] * wo_p[j];
    pre_p[i * M + M - 1] = a_out;
    T sq = 0;
    for (int64_t k = 0; k < K; ++k) sq += y_p[i * K + k] * y_p[i * K + k];
    psi_p[i] = F::f(a_out, slope) + T(0.5) * alpha * sq;
    const T delta_out = F::df(a_out, slope);
    delta_p[i * M + M - 1] = delta_out;
    T* e = up_p + i * LH + (L - 1) * H;
    const T* a = pre_p + i * M + (L - 1) * H;
    T* dl = delta_p + i * M + (L - 1) * H;
    for (int64_t j = 0; j < H; ++j) {
      e[j] = delta_out * wo_p[j];
      dl[j] = (L == 1 ? F::df0(a[j], slope) : F::df(a[j], slope)) * e[j];
    }
  });
  // Remaining reverse steps: e_{l-1} = W_l^T delta_l, delta_{l-1} = sigma'(a_{l-1}) e_{l-1}.
  for (int64_t l = L - 1; l >= 1; --l) {
    Tensor e_prev = block(upstream, l - 1, H);
    at::mm_out(e_prev, block(delta, l, H), W[l - 1]);
    for_each_row(B, H, [&](int64_t i) {
      const T* a = pre_p + i * M + (l - 1) * H;
      const T* e = up_p + i * LH + (l - 1) * H;
      T* dl = delta_p + i * M + (l - 1) * H;
      for (int64_t j = 0; j < H; ++j)
        dl[j] = (l == 1 ? F::df0(a[j], slope) : F::df(a[j], slope)) * e[j];
    });
  }
  // grad = sum_l A_l^T delta_l + alpha y: one GEMM with the stacked A.
  if (!padded) {
    at::addmm_out(grad, y, delta, A, /*beta=*/alpha, /*alpha=*/1);
  } else {
    at::mm_out(grad, delta, A);
    if (alpha != T(0)) grad.narrow(1, 0, K).add_(y, alpha);
  }
}

template <typename T, Activation act>
void backward_kernel(const Tensor* grad_psi, const Tensor& v, const Tensor& y, const Tensor& A,
                     const Tensor& W, const Tensor& w_out, const Tensor& grad, const Tensor& pre,
                     const Tensor& upstream, T alpha, T slope, bool need_input_grad,
                     const IcnnDims& dims, Tensor& grad_y, Tensor& grad_A, Tensor& grad_b,
                     Tensor& grad_W, Tensor& grad_w_out) {
  using F = Act<act>;
  constexpr bool kCurved = F::kHiddenCurvature;
  const int64_t B = dims.batch, K = dims.in_dim, H = dims.hidden, L = dims.layers, M = dims.stacked;
  const int64_t LH = L * H;
  const bool padded = K < dims.dim;  // y stands for [y, 0]
  const T* pre_p = pre.data_ptr<T>();
  const T* up_p = upstream.data_ptr<T>();
  const T* wo_p = w_out.data_ptr<T>();

  // Tangent of the forward pass along v: adot = A v (+ W_l zdot_{l-1}), zdot = sigma'(a) adot.
  Tensor tan = at::mm(v, A.t());  // (B, M)
  T* tan_p = tan.data_ptr<T>();
  Tensor ztan = at::empty({B, LH}, y.options());  // zdot_0 .. zdot_{L-1}
  T* zt_p = ztan.data_ptr<T>();
  for_each_row(B, H, [&](int64_t i) {
    for (int64_t j = 0; j < H; ++j) zt_p[i * LH + j] = F::df0(pre_p[i * M + j], slope) * tan_p[i * M + j];
  });
  for (int64_t l = 1; l < L; ++l) {
    block(tan, l, H).addmm_(block(ztan, l - 1, H), W[l - 1].t());
    for_each_row(B, H, [&](int64_t i) {
      for (int64_t j = 0; j < H; ++j)
        zt_p[i * LH + l * H + j] = F::df(pre_p[i * M + l * H + j], slope) * tan_p[i * M + l * H + j];
    });
  }

  // Sensitivities delta = sigma'(a) * e (delta_L = sigma'(a_L)), recomputed from the saved e.
  Tensor delta = at::empty({B, M}, y.options());
  T* delta_p = delta.data_ptr<T>();
  for_each_row(B, M, [&](int64_t i) {
    const T* a = pre_p + i * M;
    const T* e = up_p + i * LH;
    T* dl = delta_p + i * M;
    for (int64_t j = 0; j < H; ++j) dl[j] = F::df0(a[j], slope) * e[j];
    for (int64_t j = H; j < LH; ++j) dl[j] = F::df(a[j], slope) * e[j];
    dl[M - 1] = F::df(a[M - 1], slope);
  });

  const bool has_u = grad_psi != nullptr && grad_psi->ne(0).any().item<bool>();

  // Primal activations z_l, needed for the potential's own gradient (u != 0) and
  // for the curvature terms r_l z_{l-1}^T.
  Tensor zprim;
  if (has_u || kCurved) {
    zprim = at::empty({B, LH}, y.options());
    T* zp = zprim.data_ptr<T>();
    for_each_row(B, LH, [&](int64_t i) {
      const T* a = pre_p + i * M;
      T* zi = zp + i * LH;
      for (int64_t j = 0; j < H; ++j) zi[j] = F::f0(a[j], slope);
      for (int64_t j = H; j < LH; ++j) zi[j] = F::f(a[j], slope);
    });
  }

  // Curvature adjoints r. Leaky ReLU: only r_0 = sigma_0''(a_0) adot_0 e_0 is non-zero.
  Tensor r = at::empty({B, kCurved ? M : H}, y.options());
  T* r_p = r.data_ptr<T>();
  if (!kCurved) {
    for_each_row(B, H, [&](int64_t i) {
      for (int64_t j = 0; j < H; ++j)
        r_p[i * H + j] = F::d2f0(pre_p[i * M + j], slope) * tan_p[i * M + j] * up_p[i * LH + j];
    });
  } else {
    // adot_L needs the last W product of the tangent pass.
    for_each_row(B, H, [&](int64_t i) {
      const T* zt = zt_p + i * LH + (L - 1) * H;
      T a_dot = tan_p[i * M + M - 1];
      for (int64_t j = 0; j < H; ++j) a_dot += zt[j] * wo_p[j];
      const T r_out = F::d2f(pre_p[i * M + M - 1], slope) * a_dot;
      r_p[i * M + M - 1] = r_out;
      const int64_t off = (L - 1) * H;
      for (int64_t j = 0; j < H; ++j) {
        const T a = pre_p[i * M + off + j];
        const T d1 = L == 1 ? F::df0(a, slope) : F::df(a, slope);
        const T d2 = L == 1 ? F::d2f0(a, slope) : F::d2f(a, slope);
        r_p[i * M + off + j] = d2 * tan_p[i * M + off + j] * up_p[i * LH + off + j] + d1 * r_out * wo_p[j];
      }
    });
    Tensor back = L > 1 ? at::empty({B, H}, y.options()) : Tensor();
    for (int64_t l = L - 1; l >= 1; --l) {
      at::mm_out(back, block(r, l, H), W[l - 1]);
      const T* bk = back.data_ptr<T>();
      const int64_t off = (l - 1) * H;
      for_each_row(B, H, [&](int64_t i) {
        for (int64_t j = 0; j < H; ++j) {
          const T a = pre_p[i * M + off + j];
          const T d1 = l == 1 ? F::df0(a, slope) : F::df(a, slope);
          const T d2 = l == 1 ? F::d2f0(a, slope) : F::d2f(a, slope);
          r_p[i * M + off + j] = d2 * tan_p[i * M + off + j] * up_p[i * LH + off + j] + d1 * bk[i * H + j];
        }
      });
    }
  }

  // The potential's own gradient enters through z~ = zdot + u z and v~ = v + u y.
  Tensor v_mix = v;
  if (has_u) {
    const Tensor u_col = grad_psi->unsqueeze(1);
    ztan.addcmul_(zprim, u_col);
    v_mix = v.clone();
    v_mix.narrow(1, 0, K).addcmul_(y, u_col);
  }

  // Weight gradients: dW_l = delta_l^T z~_{l-1} (+ r_l^T z_{l-1}).
  for (int64_t l = 1; l < L; ++l) {
    Tensor gW = grad_W[l - 1];
    at::mm_out(gW, block(delta, l, H).t(), block(ztan, l - 1, H));
    if (kCurved) gW.addmm_(block(r, l, H).t(), block(zprim, l - 1, H));
  }
  at::mv_out(grad_w_out, block(ztan, L - 1, H).t(), delta.select(1, M - 1));
  if (kCurved) grad_w_out.addmv_(block(zprim, L - 1, H).t(), r.select(1, M - 1));

  // dA = delta^T v~ + r^T y; db = u^T delta + sum_batch r.
  at::mm_out(grad_A, delta.t(), v_mix);
  Tensor grad_A_in = padded ? grad_A.narrow(1, 0, K) : grad_A;  // the columns y meets
  if (kCurved) {
    grad_A_in.addmm_(r.t(), y);
    at::sum_out(grad_b, r, {0});
  } else {
    grad_A_in.narrow(0, 0, H).addmm_(r.t(), y);
    grad_b.zero_();
    Tensor gb0 = grad_b.narrow(0, 0, H);
    at::sum_out(gb0, r, {0});
  }
  if (has_u) grad_b.addmv_(delta.t(), *grad_psi);

  // dy = u grad + sum_l A_l^T r_l + alpha v (first K columns when y is padded).
  if (need_input_grad) {
    const Tensor A_r = (kCurved ? A : A.narrow(0, 0, H)).narrow(1, 0, K);
    at::addmm_out(grad_y, v.narrow(1, 0, K), r, A_r, /*beta=*/alpha, /*alpha=*/1);
    if (has_u) grad_y.addcmul_(grad.narrow(1, 0, K), grad_psi->unsqueeze(1));
  }
}

template <typename Fn>
void dispatch_activation(Activation act, const Fn& fn) {
  switch (act) {
    case Activation::LeakyReLU:
      fn(std::integral_constant<Activation, Activation::LeakyReLU>{});
      break;
    case Activation::Softplus:
      fn(std::integral_constant<Activation, Activation::Softplus>{});
      break;
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
  const auto opts = y.options();
  Tensor psi = at::empty({dims.batch}, opts);
  Tensor grad = at::empty({dims.batch, dims.dim}, opts);
  Tensor pre = at::empty({dims.batch, dims.stacked}, opts);
  Tensor upstream = at::empty({dims.batch, dims.layers * dims.hidden}, opts);
  if (dims.batch == 0) return {psi, grad, pre, upstream};
  const Activation act = parse_activation(act_name, op);
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "icnn_forward_cpu", [&] {
    dispatch_activation(act, [&](auto tag) {
      forward_kernel<scalar_t, decltype(tag)::value>(
          y, A, b, W, w_out, static_cast<scalar_t>(strong_convexity),
          static_cast<scalar_t>(negative_slope), dims, psi, grad, pre, upstream);
    });
  });
  return {psi, grad, pre, upstream};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> icnn_backward_cpu(
    const c10::optional<Tensor>& grad_psi_in, const Tensor& grad_map_in, const Tensor& y_in,
    const Tensor& A_in, const Tensor& W_in, const Tensor& w_out_in, const Tensor& grad_in,
    const Tensor& pre_in, const Tensor& upstream_in, double strong_convexity,
    c10::string_view activation, double negative_slope, bool need_input_grad) {
  constexpr const char* op = "lidvae_ext::icnn_backward";
  const std::string act_name(activation);
  const IcnnDims dims =
      check_backward_args(grad_psi_in, grad_map_in, y_in, A_in, W_in, w_out_in, grad_in, pre_in,
                          upstream_in, strong_convexity, act_name, negative_slope, op);
  const Tensor v = grad_map_in.contiguous(), y = y_in.contiguous(), A = A_in.contiguous();
  const Tensor W = W_in.contiguous(), w_out = w_out_in.contiguous(), grad = grad_in.contiguous();
  const Tensor pre = pre_in.contiguous(), upstream = upstream_in.contiguous();
  Tensor grad_psi;
  if (grad_psi_in.has_value()) grad_psi = grad_psi_in->contiguous();
  const auto opts = y.options();
  Tensor grad_y = need_input_grad ? at::empty({dims.batch, dims.in_dim}, opts) : at::empty({0}, opts);
  Tensor grad_A = at::empty_like(A);
  Tensor grad_b = at::empty({dims.stacked}, opts);
  Tensor grad_W = at::empty_like(W);
  Tensor grad_w_out = at::empty_like(w_out);
  if (dims.batch == 0) {
    grad_A.zero_();
    grad_b.zero_();
    grad_W.zero_();
    grad_w_out.zero_();
    return {grad_y, grad_A, grad_b, grad_W, grad_w_out};
  }
  const Activation act = parse_activation(act_name, op);
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "icnn_backward_cpu", [&] {
    dispatch_activation(act, [&](auto tag) {
      backward_kernel<scalar_t, decltype(tag)::value>(
          grad_psi.defined() ? &grad_psi : nullptr, v, y, A, W, w_out, grad, pre, upstream,
          static_cast<scalar_t>(strong_convexity), static_cast<scalar_t>(negative_slope),
          need_input_grad, dims, grad_y, grad_A, grad_b, grad_W, grad_w_out);
    });
  });
  return {grad_y, grad_A, grad_b, grad_W, grad_w_out};
}

}  // namespace
}  // namespace lidvae

TORCH_LIBRARY_IMPL(lidvae_ext, CPU, m) {
  m.impl("icnn_forward", &lidvae::icnn_forward_cpu);
  m.impl("icnn_backward", &lidvae::icnn_backward_cpu);
}
