// Row-level building blocks of the CPU kernels. Every function works on one
// sample's contiguous row through __restrict__ pointers with scalars passed
// by value, so the compiler can keep them in registers and vectorize.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace lidvae {
namespace cpu {

// Runs fn(row) for every row in [0, rows), in parallel chunks of roughly
// kGrainElements elements of work.
template <typename Fn>
inline void for_each_row(int64_t rows, int64_t work_per_row, const Fn& fn) {
  constexpr int64_t kGrainElements = 1 << 14;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, work_per_row));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) fn(row);
  });
}

// sigma_0 on layer 0 (kFirst) or sigma on later layers, and derivatives.
template <typename F, bool kFirst, typename T>
inline T act(T t, T s) {
  if constexpr (kFirst) return F::f0(t, s); else return F::f(t, s);
}
template <typename F, bool kFirst, typename T>
inline T dact(T t, T s) {
  if constexpr (kFirst) return F::df0(t, s); else return F::df(t, s);
}
template <typename F, bool kFirst, typename T>
inline T d2act(T t, T s) {
  if constexpr (kFirst) return F::d2f0(t, s); else return F::d2f(t, s);
}

// z = sigma(a)
template <typename F, bool kFirst, typename T>
inline void row_act(T* __restrict__ z, const T* __restrict__ a, int64_t n, T s) {
  for (int64_t j = 0; j < n; ++j) z[j] = act<F, kFirst>(a[j], s);
}

// a += bias (skipped when bias is null), then z = sigma(a): the bias of an input
// product that was done without it, folded into the activation pass
template <typename F, bool kFirst, typename T>
inline void row_bias_act(T* __restrict__ z, T* __restrict__ a, const T* __restrict__ bias, int64_t n,
                         T s) {
  if (bias == nullptr) {
    for (int64_t j = 0; j < n; ++j) z[j] = act<F, kFirst>(a[j], s);
    return;
  }
  for (int64_t j = 0; j < n; ++j) {
    const T t = a[j] + bias[j];
    a[j] = t;
    z[j] = act<F, kFirst>(t, s);
  }
}

// out = sigma'(a) * (c * x)
template <typename F, bool kFirst, typename T>
inline void row_dact_mul(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ x,
                         T c, int64_t n, T s) {
  for (int64_t j = 0; j < n; ++j) out[j] = dact<F, kFirst>(a[j], s) * (c * x[j]);
}

// x = sigma'(a) * x, in place (a tangent adot becomes zdot)
template <typename F, bool kFirst, typename T>
inline void row_dact_scale(T* __restrict__ x, const T* __restrict__ a, int64_t n, T s) {
  for (int64_t j = 0; j < n; ++j) x[j] *= dact<F, kFirst>(a[j], s);
}

// x = x + u * sigma(a), in place (z~ = zdot + u z when the potential has a gradient u)
template <typename F, bool kFirst, typename T>
inline void row_add_act(T* __restrict__ x, const T* __restrict__ a, T u, int64_t n, T s) {
  for (int64_t j = 0; j < n; ++j) x[j] += u * act<F, kFirst>(a[j], s);
}

// out = sigma''(a) * x * (c * e) + sigma'(a) * back   (curvature adjoint r_l)
template <typename F, bool kFirst, typename T>
inline void row_curvature(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ x,
                          const T* __restrict__ e, T c, const T* __restrict__ back, int64_t n, T s) {
  for (int64_t j = 0; j < n; ++j)
    out[j] = d2act<F, kFirst>(a[j], s) * x[j] * (c * e[j]) + dact<F, kFirst>(a[j], s) * back[j];
}

// out = sigma''(a) * x * (c * e)   (curvature adjoint when nothing comes from above)
template <typename F, bool kFirst, typename T>
inline void row_curvature_local(T* __restrict__ out, const T* __restrict__ a,
                                const T* __restrict__ x, const T* __restrict__ e, T c, int64_t n,
                                T s) {
  for (int64_t j = 0; j < n; ++j) out[j] = d2act<F, kFirst>(a[j], s) * x[j] * (c * e[j]);
}

// out += c * x
template <typename T>
inline void row_axpy(T* __restrict__ out, const T* __restrict__ x, T c, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] += c * x[j];
}

template <typename T>
inline T dot(const T* __restrict__ x, const T* __restrict__ y, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j) acc += x[j] * y[j];
  return acc;
}

// out[m] = init[m] + sum_k x[k] * At[k*ld + m] for m < n (At: A transposed,
// k < in_dim): a skinny product done row by row, vectorized over m.
template <typename T>
inline void row_skinny_product(T* __restrict__ out, const T* __restrict__ init,
                               const T* __restrict__ At, const T* __restrict__ x, int64_t in_dim,
                               int64_t n, int64_t ld) {
  for (int64_t m = 0; m < n; ++m) out[m] = init ? init[m] : T(0);
  for (int64_t k = 0; k < in_dim; ++k) {
    const T xk = x[k];
    const T* __restrict__ col = At + k * ld;
    for (int64_t m = 0; m < n; ++m) out[m] += xk * col[m];
  }
}

// Runs fn(first_tag) with a compile-time flag for "this is layer 0".
template <typename Fn>
inline void with_layer_kind(bool first, const Fn& fn) {
  if (first) fn(std::true_type{}); else fn(std::false_type{});
}

}  // namespace cpu
}  // namespace lidvae
