// Row-level building blocks of the CPU kernels. Every function works on one
// sample's contiguous row through __restrict__ pointers with scalars passed
// by value, so the compiler can keep them in registers and vectorize.
//
// The bodies (row_kernels.inc) are compiled once per vector ISA — baseline, AVX2+FMA,
// AVX-512 — each copy in its own namespace under `#pragma GCC target`; the functions
// below call the copy of the ISA the running operator selected (isa.h). Only the
// .inc bodies are built for the wider ISAs: every header, ATen's included, stays at the
// baseline, so no inline function shared with the rest of the library can carry wider
// instructions onto a CPU without them.
#pragma once


#include <algorithm>
#include <cstdint>

#include "cpu/isa.h"
#include "stable.h"

namespace lidvae {
namespace cpu {

// Runs fn(row) for every row in [0, rows), in parallel chunks of roughly
// kGrainElements elements of work.
template <typename Fn>
inline void for_each_row(int64_t rows, int64_t work_per_row, const Fn& fn) {
  constexpr int64_t kGrainElements = 1 << 14;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, work_per_row));
  parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
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


// ---- the per-ISA copies of the row kernels ----------------------------------------
#define LIDVAE_ROW_NS isa_baseline
#include "cpu/row_kernels.inc"
#undef LIDVAE_ROW_NS

#if LIDVAE_X86_ISA_VARIANTS
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define LIDVAE_ROW_NS isa_avx2
#include "cpu/row_kernels.inc"
#undef LIDVAE_ROW_NS
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,prefer-vector-width=512")
#define LIDVAE_ROW_NS isa_avx512
#include "cpu/row_kernels.inc"
#undef LIDVAE_ROW_NS
#pragma GCC pop_options

// Calls `call` (a row kernel with its arguments) in the copy of the active ISA.
#define LIDVAE_ON_ISA(...)                                   \
  switch (active_isa()) {                                    \
    case Isa::kAvx512: return isa_avx512::__VA_ARGS__;       \
    case Isa::kAvx2: return isa_avx2::__VA_ARGS__;           \
    default: return isa_baseline::__VA_ARGS__;               \
  }
#else
#define LIDVAE_ON_ISA(...) return isa_baseline::__VA_ARGS__;
#endif

template <typename F, bool kFirst, typename T>
inline void row_act(T* __restrict__ z, const T* __restrict__ a, int64_t n, T s) {
  LIDVAE_ON_ISA(row_act<F, kFirst, T>(z, a, n, s));
}

template <typename F, bool kFirst, typename T>
inline void row_bias_act(T* __restrict__ z, T* __restrict__ a, const T* __restrict__ bias, int64_t n,
                         T s) {
  LIDVAE_ON_ISA(row_bias_act<F, kFirst, T>(z, a, bias, n, s));
}

template <typename F, bool kFirst, typename T>
inline void row_dact_mul(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ x,
                         T c, int64_t n, T s) {
  LIDVAE_ON_ISA(row_dact_mul<F, kFirst, T>(out, a, x, c, n, s));
}

template <typename F, bool kFirst, typename T>
inline void row_dact_scale(T* __restrict__ x, const T* __restrict__ a, int64_t n, T s) {
  LIDVAE_ON_ISA(row_dact_scale<F, kFirst, T>(x, a, n, s));
}

template <typename F, bool kFirst, typename T>
inline void row_add_act(T* __restrict__ x, const T* __restrict__ a, T u, int64_t n, T s) {
  LIDVAE_ON_ISA(row_add_act<F, kFirst, T>(x, a, u, n, s));
}

template <typename F, bool kFirst, typename T>
inline void row_curvature(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ x,
                          const T* __restrict__ e, T c, const T* __restrict__ back, int64_t n, T s) {
  LIDVAE_ON_ISA(row_curvature<F, kFirst, T>(out, a, x, e, c, back, n, s));
}

template <typename F, bool kFirst, typename T>
inline void row_curvature_local(T* __restrict__ out, const T* __restrict__ a,
                                const T* __restrict__ x, const T* __restrict__ e, T c, int64_t n,
                                T s) {
  LIDVAE_ON_ISA(row_curvature_local<F, kFirst, T>(out, a, x, e, c, n, s));
}

template <typename T>
inline void row_axpy(T* __restrict__ out, const T* __restrict__ x, T c, int64_t n) {
  LIDVAE_ON_ISA(row_axpy<T>(out, x, c, n));
}

template <typename T>
inline T dot(const T* __restrict__ x, const T* __restrict__ y, int64_t n) {
  LIDVAE_ON_ISA(dot<T>(x, y, n));
}

template <typename T>
inline void row_skinny_product(T* __restrict__ out, const T* __restrict__ init,
                               const T* __restrict__ At, const T* __restrict__ x, int64_t in_dim,
                               int64_t n, int64_t ld) {
  LIDVAE_ON_ISA(row_skinny_product<T>(out, init, At, x, in_dim, n, ld));
}

template <typename T>
inline void row_softplus(T* __restrict__ out, const T* __restrict__ x, int64_t n) {
  LIDVAE_ON_ISA(row_softplus<T>(out, x, n));
}

template <typename T>
inline void row_softplus_backward(T* __restrict__ out, const T* __restrict__ g,
                                  const T* __restrict__ x, int64_t n) {
  LIDVAE_ON_ISA(row_softplus_backward<T>(out, g, x, n));
}

// Runs fn(first_tag) with a compile-time flag for "this is layer 0".
template <typename Fn>
inline void with_layer_kind(bool first, const Fn& fn) {
  if (first) fn(std::true_type{}); else fn(std::false_type{});
}

}  // namespace cpu
}  // namespace lidvae
