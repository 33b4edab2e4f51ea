// CUDA kernels of the ICNN operators (DESIGN.md §3), on raw pointers only:
// no ATen here, so this header compiles with plain nvcc (see
// scripts/cuda_instantiate_kernels.cu and scripts/check_cuda_compile.sh).
// Host code (csrc/cuda/icnn_cuda.cu) chooses between two paths:
//
// * Fused path, H in {16, 32, 64, 128}: every weight lives in shared memory
//   for the whole launch, a *group* of G = min(H, 32) lanes works on one
//   sample (lane g owns the neurons i = g + k*G, k < H/G), and per-sample
//   vectors live in per-group shared scratch. One launch computes psi, the
//   map and the saved activations; one launch computes the closed-form
//   backward (input gradient per sample, parameter gradients accumulated per
//   block over tiles of samples into a per-block partial row), and a small
//   second kernel sums the partial rows in a fixed order (deterministic, no
//   atomics).
// * Generic path, any H: ATen/cuBLAS GEMMs with the stacked weights (host
//   code) plus the fused elementwise kernels at the end of this file, step for
//   step the CPU algorithm of csrc/cpu/icnn_cpu.cpp.
//
// Layout (see csrc/ops.cpp): M = L*H + 1; y (B, K) with K <= d standing for
// the zero-padded [y, 0] when K < d (DESIGN: LIDDecoder's beta = [I; 0]); A (M, d); b (M);
// W (L-1, H, H) with W[l-1] = W_l; w_out (H); pre (B, M) = [a_0 .. a_L];
// upstream (B, (L-1)*H) = [e_0 .. e_{L-2}] with e_{l-1} = W_l^T delta_l; the
// last one, e_{L-1} = delta_L w_out with delta_L = sigma'(a_L), is not saved
// but rebuilt from a_L. Column m of pre belongs to layer m / H; columns m < H
// (layer 0) use sigma_0, all others sigma.
#pragma once

#include <cstdint>

#include "icnn_activations.h"

namespace lidvae {
namespace cuda {

constexpr int kWarpSize = 32;
// Threads per block of the fused kernels (8 warps).
constexpr int kFusedThreads = 256;
// Threads per block of the generic elementwise kernels.
constexpr int kElementwiseThreads = 256;
// Rows (one warp each) per block of the generic row kernels.
constexpr int kRowsPerBlock = kElementwiseThreads / kWarpSize;

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

// sigma_m, sigma'_m, sigma''_m of stacked pre-activation column m (sigma_0 for
// the first layer's columns m < H, sigma for every later one).
template <Activation act, typename T>
__device__ __forceinline__ T sigma_col(int64_t m, int64_t H, T t, T slope) {
  return m < H ? Act<act>::f0(t, slope) : Act<act>::f(t, slope);
}
template <Activation act, typename T>
__device__ __forceinline__ T dsigma_col(int64_t m, int64_t H, T t, T slope) {
  return m < H ? Act<act>::df0(t, slope) : Act<act>::df(t, slope);
}
template <Activation act, typename T>
__device__ __forceinline__ T d2sigma_col(int64_t m, int64_t H, T t, T slope) {
  return m < H ? Act<act>::d2f0(t, slope) : Act<act>::d2f(t, slope);
}

// Sum over the `width` lanes of an aligned lane segment (butterfly: every lane
// of the segment ends with the bitwise-identical total, since a + b == b + a).
template <int width, typename T>
__device__ __forceinline__ T segment_sum(T x, unsigned mask) {
#pragma unroll
  for (int offset = width / 2; offset > 0; offset >>= 1) {
    x += __shfl_xor_sync(mask, x, offset, width);
  }
  return x;
}

// ---------------------------------------------------------------------------
// Fused path: compile-time shape and shared-memory layout
// ---------------------------------------------------------------------------

// Work split of the fused kernels for width H.
template <int H>
struct FusedTraits {
  static_assert(H == 16 || H == 32 || H == 64 || H == 128, "fused kernels: H must be 16, 32, 64 or 128");
  // Lanes that cooperate on one sample (a "group"; an aligned lane segment).
  static constexpr int kGroupLanes = H < kWarpSize ? H : kWarpSize;
  // Neurons per lane per layer: lane g of a group owns neurons g + k*G.
  static constexpr int kPerLane = H / kGroupLanes;
  // Groups per warp and per block (= samples in flight per block).
  static constexpr int kGroupsPerWarp = kWarpSize / kGroupLanes;
  static constexpr int kGroups = (kFusedThreads / kWarpSize) * kGroupsPerWarp;
};

// Row stride of A in shared memory: d rounded up to an odd number, so that
// lanes reading one column of consecutive rows hit distinct banks.
__host__ __device__ __forceinline__ int64_t fused_lda(int64_t d) { return d | 1; }
// Row stride of each W_l in shared memory (H + 1 is odd: conflict-free both
// along rows and along columns).
__host__ __device__ __forceinline__ int64_t fused_ldw(int64_t H) { return H + 1; }

// Forward kernel shared memory, in elements of the scalar type:
//   A_s  M*lda | b_s M | W_s (L-1)*H*ldw | wo_s H |
//   per group: y_s d | pre_s M | vec_s M      (kGroups groups)
template <int H>
__host__ __device__ __forceinline__ int64_t fused_forward_smem_elems(int64_t d, int64_t L) {
  const int64_t M = L * H + 1;
  return M * fused_lda(d) + M + (L - 1) * H * fused_ldw(H) + H +
         int64_t(FusedTraits<H>::kGroups) * (d + 2 * M);
}

// Per-sample slot of the backward tile: delta M | r M | z L*H | z~ L*H |
// y d | v~ d | u 1.
template <int H>
__host__ __device__ __forceinline__ int64_t fused_backward_slot_elems(int64_t d, int64_t L) {
  const int64_t M = L * H + 1;
  return 2 * M + 2 * L * H + 2 * d + 1;
}

// Backward kernel shared memory, in elements: A_s M*lda | W_s (L-1)*H*ldw |
// wo_s H | tile of TS = kGroups * slots_per_group sample slots (laid out as
// arrays [TS][M] delta, [TS][M] r, [TS][L*H] z, [TS][L*H] z~, [TS][d] y,
// [TS][d] v~, [TS] u).
template <int H>
__host__ __device__ __forceinline__ int64_t fused_backward_smem_elems(int64_t d, int64_t L,
                                                                     int64_t slots_per_group) {
  const int64_t M = L * H + 1;
  return M * fused_lda(d) + (L - 1) * H * fused_ldw(H) + H +
         int64_t(FusedTraits<H>::kGroups) * slots_per_group * fused_backward_slot_elems<H>(d, L);
}

// Number of parameter-gradient entries one backward partial row holds:
// dA (M*d) | db (M) | dW ((L-1)*H*H) | dw_out (H).
__host__ __device__ __forceinline__ int64_t fused_partial_entries(int64_t d, int64_t H, int64_t L) {
  const int64_t M = L * H + 1;
  return M * d + M + (L - 1) * H * H + H;
}

// Lane mask of the group (aligned segment of G lanes) that `lane` belongs to.
template <int G>
__device__ __forceinline__ unsigned group_mask(int lane) {
  if constexpr (G == kWarpSize) {
    return 0xffffffffu;
  } else {
    return ((1u << G) - 1u) << ((lane / G) * G);
  }
}

// Copies the weights into shared memory (all threads of the block; the caller
// synchronises). Row strides: lda for A, ldw for each W_l.
template <typename T, int H>
__device__ __forceinline__ void fused_load_weights(const T* __restrict__ A, const T* __restrict__ W,
                                                   const T* __restrict__ w_out, T* __restrict__ A_s,
                                                   T* __restrict__ W_s, T* __restrict__ wo_s, int M, int d,
                                                   int L, int lda) {
  constexpr int ldw = H + 1;
  for (int idx = threadIdx.x; idx < M * d; idx += blockDim.x) {
    const int m = idx / d;
    const int c = idx - m * d;
    A_s[m * lda + c] = A[idx];
  }
  for (int idx = threadIdx.x; idx < (L - 1) * H * H; idx += blockDim.x) {
    const int row = idx / H;  // (l-1)*H + i
    const int j = idx - row * H;
    W_s[row * ldw + j] = W[idx];
  }
  for (int idx = threadIdx.x; idx < H; idx += blockDim.x) wo_s[idx] = w_out[idx];
}

// ---------------------------------------------------------------------------
// Fused forward
// ---------------------------------------------------------------------------

// One group of G lanes per sample, samples in a grid-stride loop; weights in
// shared memory for the whole launch. Per sample:
//   a_l = A_l y + b_l (+ W_l z_{l-1}), z_l = sigma(a_l)      (lanes over neurons)
//   a_L = A_L y + b_L + w_out . z_{L-1}, psi = sigma(a_L) + alpha/2 |y|^2
//   delta_L = sigma'(a_L), e_{L-1} = delta_L w_out, e_{l-1} = W_l^T delta_l,
//   delta_l = sigma'(a_l) e_l, grad = sum_m A[m]^T delta[m] + alpha y.
// Dynamic shared memory: fused_forward_smem_elems<H>(d, L) elements of T.
template <typename T, int H, Activation act>
__global__ void __launch_bounds__(kFusedThreads)
    icnn_fused_forward_kernel(const T* __restrict__ y,         // (B, K) inputs, row-major
                              const T* __restrict__ A,         // (M, d) stacked input weights
                              const T* __restrict__ bias,      // (M) stacked biases
                              const T* __restrict__ W,         // (L-1, H, H) hidden weights W_1..W_{L-1}
                              const T* __restrict__ w_out,     // (H) last-layer weights W_L
                              T* __restrict__ psi,             // (B) out: potential psi(y)
                              T* __restrict__ grad,            // (B, d) out: Brenier map grad psi(y)
                              T* __restrict__ pre,             // (B, M) out: pre-activations a_0..a_L
                              T* __restrict__ upstream,        // (B, (L-1)*H) out: e_0..e_{L-2}
                              int64_t B,                       // batch size (> 0)
                              int d,                           // input dimension d = A.size(1)
                              int K,                           // columns of y, 1 <= K <= d
                              int L,                           // number of layers (>= 1)
                              T alpha,                         // strong convexity alpha >= 0
                              T slope) {                       // leaky-ReLU negative slope
  using F = Act<act>;
  using Tr = FusedTraits<H>;
  constexpr int G = Tr::kGroupLanes;
  constexpr int NPL = Tr::kPerLane;
  constexpr int ldw = H + 1;
  const int M = L * H + 1;
  const int LH = L * H;
  const int LHs = (L - 1) * H;  // saved upstream width
  const int lda = static_cast<int>(fused_lda(d));

  extern __shared__ __align__(16) unsigned char fused_smem_raw[];
  T* smem = reinterpret_cast<T*>(fused_smem_raw);
  T* A_s = smem;
  T* b_s = A_s + M * lda;
  T* W_s = b_s + M;
  T* wo_s = W_s + (L - 1) * H * ldw;
  T* scratch = wo_s + H;

  fused_load_weights<T, H>(A, W, w_out, A_s, W_s, wo_s, M, d, L, lda);
  for (int idx = threadIdx.x; idx < M; idx += blockDim.x) b_s[idx] = bias[idx];
  __syncthreads();

  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int lg = lane % G;                              // lane within the group
  const int group = static_cast<int>(threadIdx.x) / G;  // group within the block
  const unsigned mask = group_mask<G>(lane);
  T* y_s = scratch + group * (d + 2 * M);  // y of the current sample, zero-padded to d
  T* pre_s = y_s + d;                      // its pre-activations (lane-private entries)
  T* vec_s = pre_s + M;                    // z_l (forward), then delta_l (reverse), block l

  for (int64_t b = int64_t(blockIdx.x) * Tr::kGroups + group; b < B;
       b += int64_t(gridDim.x) * Tr::kGroups) {
    const T* yb = y + b * K;
    for (int c = lg; c < d; c += G) y_s[c] = c < K ? yb[c] : T(0);
    __syncwarp(mask);

    // Hidden layers 0..L-1 (lanes over neurons).
    for (int l = 0; l < L; ++l) {
      T acc[NPL];
      const T* Arow[NPL];
#pragma unroll
      for (int k = 0; k < NPL; ++k) {
        const int m = l * H + lg + k * G;
        acc[k] = b_s[m];
        Arow[k] = A_s + m * lda;
      }
#pragma unroll 4
      for (int c = 0; c < K; ++c) {  // columns c >= K of [y, 0] are zero
        const T yc = y_s[c];
#pragma unroll
        for (int k = 0; k < NPL; ++k) acc[k] += Arow[k][c] * yc;
      }
      if (l > 0) {
        const T* Wl = W_s + (l - 1) * H * ldw;  // W_l = W[l-1], row i at Wl + i*ldw
        const T* zprev = vec_s + (l - 1) * H;   // z_{l-1}
#pragma unroll 8
        for (int j = 0; j < H; ++j) {
          const T zj = zprev[j];
#pragma unroll
          for (int k = 0; k < NPL; ++k) acc[k] += Wl[(lg + k * G) * ldw + j] * zj;
        }
      }
#pragma unroll
      for (int k = 0; k < NPL; ++k) {
        const int m = l * H + lg + k * G;
        pre_s[m] = acc[k];
        pre[b * M + m] = acc[k];
        vec_s[m] = l == 0 ? F::f0(acc[k], slope) : F::f(acc[k], slope);
      }
      __syncwarp(mask);  // z_l visible to the whole group
    }

    // Output neuron and |y|^2: partial sums over the lane's columns / neurons.
    T part = T(0);
    T sq = T(0);
    const T* AL = A_s + LH * lda;
    for (int c = lg; c < K; c += G) {
      const T yc = y_s[c];
      part += AL[c] * yc;
      sq += yc * yc;
    }
    const T* zlast = vec_s + (L - 1) * H;
#pragma unroll
    for (int k = 0; k < NPL; ++k) part += wo_s[lg + k * G] * zlast[lg + k * G];
    part = segment_sum<G>(part, mask);
    sq = segment_sum<G>(sq, mask);
    const T a_out = b_s[LH] + part;
    const T delta_out = F::df(a_out, slope);
    if (lg == 0) {
      pre[b * M + LH] = a_out;
      psi[b] = F::f(a_out, slope) + T(0.5) * alpha * sq;
      vec_s[LH] = delta_out;
    }

    // Reverse: e_l and delta_l for l = L-1 .. 0 (e_l saved for l < L-1). Step
    // l reads block l+1 of vec_s (delta_{l+1}) and overwrites block l (z_l,
    // no longer needed).
    for (int l = L - 1; l >= 0; --l) {
#pragma unroll
      for (int k = 0; k < NPL; ++k) {
        const int i = lg + k * G;
        T e;
        if (l == L - 1) {
          e = delta_out * wo_s[i];
        } else {
          const T* Wn = W_s + l * H * ldw;       // W_{l+1} = W[l]; column i
          const T* dn = vec_s + (l + 1) * H;     // delta_{l+1}
          e = T(0);
#pragma unroll 8
          for (int j = 0; j < H; ++j) e += Wn[j * ldw + i] * dn[j];
          upstream[b * LHs + l * H + i] = e;
        }
        const T a = pre_s[l * H + i];
        vec_s[l * H + i] = (l == 0 ? F::df0(a, slope) : F::df(a, slope)) * e;
      }
      __syncwarp(mask);  // delta_l visible to the whole group
    }

    // grad = alpha [y, 0] + sum_m A[m]^T delta[m] (delta stacked in vec_s[0..M)).
    T* gb = grad + b * d;
    if (d >= G) {
      for (int c = lg; c < d; c += G) {
        T g = alpha * y_s[c];
        for (int m = 0; m < M; ++m) g += A_s[m * lda + c] * vec_s[m];
        gb[c] = g;
      }
    } else {
      // Few columns: lanes split the M rows of each column instead.
      for (int c = 0; c < d; ++c) {
        T p = T(0);
        for (int m = lg; m < M; m += G) p += A_s[m * lda + c] * vec_s[m];
        p = segment_sum<G>(p, mask);
        if (lg == 0) gb[c] = alpha * y_s[c] + p;
      }
    }
    __syncwarp(mask);  // scratch is reused by the next sample
  }
}

// ---------------------------------------------------------------------------
// Fused backward
// ---------------------------------------------------------------------------

// Closed-form backward (DESIGN.md §3), fused. Blocks walk tiles of
// TS = kGroups * slots_per_group samples (grid-stride over tiles).
// Phase 1 (one group per sample, `slots_per_group` samples per group):
//   z, delta from (pre, upstream); tangent adot = A v (+ W_l zdot_{l-1}),
//   zdot = sigma'(a) adot; adjoint r (leaky ReLU: only r_0 =
//   sigma_0''(a_0) adot_0 e_0); grad_y = u grad + sum_m A[m]^T r[m] + alpha v;
//   then z~ = zdot + u z and v~ = v + u y go to the tile.
// Phase 2 (whole block): every thread owns fixed entries of this block's
//   partial row and adds the tile's contributions in slot order:
//   dA[m][c] += delta[m] v~[c] + r[m] y[c]; db[m] += u delta[m] + r[m];
//   dW_l[i][j] += delta_l[i] z~_{l-1}[j] + r_l[i] z_{l-1}[j] (l = L: w_out).
// icnn_reduce_partials_kernel then sums the rows in block order.
// Dynamic shared memory: fused_backward_smem_elems<H>(d, L, slots_per_group).
template <typename T, int H, Activation act>
__global__ void __launch_bounds__(kFusedThreads)
    icnn_fused_backward_kernel(const T* __restrict__ grad_psi,  // (B) u = dLoss/dpsi, or nullptr (u = 0)
                               const T* __restrict__ grad_map,  // (B, d) v = dLoss/dgrad
                               const T* __restrict__ y,         // (B, K) inputs
                               const T* __restrict__ A,         // (M, d) stacked input weights
                               const T* __restrict__ W,         // (L-1, H, H) hidden weights
                               const T* __restrict__ w_out,     // (H) last-layer weights
                               const T* __restrict__ grad,      // (B, d) the map; read only with grad_psi, else may be nullptr
                               const T* __restrict__ pre,       // (B, M) saved pre-activations
                               const T* __restrict__ upstream,  // (B, (L-1)*H) saved e_0..e_{L-2}
                               T* __restrict__ grad_y,          // (B, K) out: dLoss/dy, or nullptr (skipped)
                               T* __restrict__ partial,         // (gridDim.x, P) zero-filled per-block sums
                               int64_t B,                       // batch size (> 0)
                               int d,                           // input dimension d = A.size(1)
                               int K,                           // columns of y, 1 <= K <= d
                               int L,                           // number of layers (>= 1)
                               int slots_per_group,             // samples per group per tile (>= 1)
                               T alpha,                         // strong convexity alpha >= 0
                               T slope) {                       // leaky-ReLU negative slope
  using F = Act<act>;
  using Tr = FusedTraits<H>;
  constexpr bool kCurved = F::kHiddenCurvature;
  constexpr int G = Tr::kGroupLanes;
  constexpr int NPL = Tr::kPerLane;
  constexpr int ldw = H + 1;
  const int M = L * H + 1;
  const int LH = L * H;
  const int LHs = (L - 1) * H;  // saved upstream width
  const int lda = static_cast<int>(fused_lda(d));
  const int TS = Tr::kGroups * slots_per_group;
  const int Md = M * d;
  const int P = static_cast<int>(fused_partial_entries(d, H, L));

  extern __shared__ __align__(16) unsigned char fused_smem_raw[];
  T* smem = reinterpret_cast<T*>(fused_smem_raw);
  T* A_s = smem;
  T* W_s = A_s + M * lda;
  T* wo_s = W_s + (L - 1) * H * ldw;
  T* dl_t = wo_s + H;       // [TS][M]   delta
  T* r_t = dl_t + TS * M;   // [TS][M]   adot during the tangent pass, then r
  T* z_t = r_t + TS * M;    // [TS][LH]  z
  T* zt_t = z_t + TS * LH;  // [TS][LH]  zdot, then z~ = zdot + u z
  T* y_t = zt_t + TS * LH;  // [TS][d]   y, zero-padded to d
  T* vp_t = y_t + TS * d;   // [TS][d]   v, then v~ = v + u y
  T* u_t = vp_t + TS * d;   // [TS]      u

  fused_load_weights<T, H>(A, W, w_out, A_s, W_s, wo_s, M, d, L, lda);
  __syncthreads();

  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int lg = lane % G;
  const int group = static_cast<int>(threadIdx.x) / G;
  const unsigned mask = group_mask<G>(lane);
  T* part_row = partial + int64_t(blockIdx.x) * P;

  for (int64_t base = int64_t(blockIdx.x) * TS; base < B; base += int64_t(gridDim.x) * TS) {
    const int ns = static_cast<int>(B - base < TS ? B - base : TS);  // valid slots 0..ns-1

    // ---- Phase 1: per-sample vectors (group-uniform branches only) ----
    for (int rep = 0; rep < slots_per_group; ++rep) {
      const int s = group + rep * Tr::kGroups;
      if (s >= ns) break;
      const int64_t b = base + s;
      T* dl = dl_t + s * M;
      T* rr = r_t + s * M;
      T* zz = z_t + s * LH;
      T* zt = zt_t + s * LH;
      T* ys = y_t + s * d;
      T* vp = vp_t + s * d;
      const T u = grad_psi != nullptr ? grad_psi[b] : T(0);
      const T* preb = pre + b * M;
      const T a_out = preb[LH];
      const T delta_out = F::df(a_out, slope);
      const T* upb = upstream + b * LHs;
      // e_l[i]: saved for l < L-1; e_{L-1} = delta_L w_out is rebuilt.
      auto upstream_at = [&](int l, int i) -> T {
        return l < L - 1 ? upb[l * H + i] : delta_out * wo_s[i];
      };
      if (lg == 0) u_t[s] = u;
      for (int c = lg; c < d; c += G) {
        ys[c] = c < K ? y[b * K + c] : T(0);
        vp[c] = grad_map[b * d + c];
      }
      // z and delta of every hidden neuron (lane-private entries).
      for (int l = 0; l < L; ++l) {
#pragma unroll
        for (int k = 0; k < NPL; ++k) {
          const int m = l * H + lg + k * G;
          const T a = preb[m];
          zz[m] = l == 0 ? F::f0(a, slope) : F::f(a, slope);
          dl[m] = (l == 0 ? F::df0(a, slope) : F::df(a, slope)) * upstream_at(l, lg + k * G);
        }
      }
      if (lg == 0) dl[LH] = delta_out;
      __syncwarp(mask);  // v visible to the group

      // Tangent pass: adot_l (kept in rr) and zdot_l (in zt).
      for (int l = 0; l < L; ++l) {
        T acc[NPL];
        const T* Arow[NPL];
#pragma unroll
        for (int k = 0; k < NPL; ++k) {
          acc[k] = T(0);
          Arow[k] = A_s + (l * H + lg + k * G) * lda;
        }
#pragma unroll 4
        for (int c = 0; c < d; ++c) {
          const T vc = vp[c];
#pragma unroll
          for (int k = 0; k < NPL; ++k) acc[k] += Arow[k][c] * vc;
        }
        if (l > 0) {
          const T* Wl = W_s + (l - 1) * H * ldw;
          const T* zprev = zt + (l - 1) * H;
#pragma unroll 8
          for (int j = 0; j < H; ++j) {
            const T zj = zprev[j];
#pragma unroll
            for (int k = 0; k < NPL; ++k) acc[k] += Wl[(lg + k * G) * ldw + j] * zj;
          }
        }
#pragma unroll
        for (int k = 0; k < NPL; ++k) {
          const int m = l * H + lg + k * G;
          const T a = preb[m];
          rr[m] = acc[k];
          zt[m] = (l == 0 ? F::df0(a, slope) : F::df(a, slope)) * acc[k];
        }
        __syncwarp(mask);  // zdot_l visible to the group
      }

      // Adjoint pass: r overwrites adot in rr, block by block from the top.
      if constexpr (kCurved) {
        T part = T(0);
        const T* AL = A_s + LH * lda;
        for (int c = lg; c < d; c += G) part += AL[c] * vp[c];
        const T* ztl = zt + (L - 1) * H;
#pragma unroll
        for (int k = 0; k < NPL; ++k) part += wo_s[lg + k * G] * ztl[lg + k * G];
        const T adot_out = segment_sum<G>(part, mask);
        const T r_out = F::d2f(a_out, slope) * adot_out;
        if (lg == 0) rr[LH] = r_out;
        // r_{l-1} = sigma''(a_{l-1}) adot_{l-1} e_{l-1} + sigma'(a_{l-1}) (W_l^T r_l).
        for (int l = L; l >= 1; --l) {
#pragma unroll
          for (int k = 0; k < NPL; ++k) {
            const int i = lg + k * G;
            const int m = (l - 1) * H + i;
            T t;
            if (l == L) {
              t = r_out * wo_s[i];
            } else {
              const T* Wl = W_s + (l - 1) * H * ldw;  // W_l, column i
              const T* rn = rr + l * H;               // r_l
              t = T(0);
#pragma unroll 8
              for (int j = 0; j < H; ++j) t += Wl[j * ldw + i] * rn[j];
            }
            const T a = preb[m];
            const T d1 = l == 1 ? F::df0(a, slope) : F::df(a, slope);
            const T d2 = l == 1 ? F::d2f0(a, slope) : F::d2f(a, slope);
            rr[m] = d2 * rr[m] * upstream_at(l - 1, i) + d1 * t;
          }
          __syncwarp(mask);  // r_{l-1} visible to the group
        }
      } else {
        // Leaky ReLU: r_l = 0 for l >= 1, r_0 = sigma_0''(a_0) adot_0 e_0.
#pragma unroll
        for (int k = 0; k < NPL; ++k) {
          const int i = lg + k * G;
          rr[i] = F::d2f0(preb[i], slope) * rr[i] * upstream_at(0, i);
        }
        for (int m = H + lg; m < M; m += G) rr[m] = T(0);
        __syncwarp(mask);
      }

      // grad_y = sum_m A[m]^T r[m] + alpha v + u grad (only r_0 for leaky ReLU),
      // first K columns.
      if (grad_y != nullptr) {
        const int Mr = kCurved ? M : H;
        T* gy = grad_y + b * K;
        if (K >= G) {
          for (int c = lg; c < K; c += G) {
            T g = alpha * vp[c];
            for (int m = 0; m < Mr; ++m) g += A_s[m * lda + c] * rr[m];
            if (grad_psi != nullptr) g += u * grad[b * d + c];
            gy[c] = g;
          }
        } else {
          for (int c = 0; c < K; ++c) {
            T p = T(0);
            for (int m = lg; m < Mr; m += G) p += A_s[m * lda + c] * rr[m];
            p = segment_sum<G>(p, mask);
            if (lg == 0) {
              T g = alpha * vp[c] + p;
              if (grad_psi != nullptr) g += u * grad[b * d + c];
              gy[c] = g;
            }
          }
        }
        __syncwarp(mask);  // every read of v done before v~ overwrites it
      }

      // The potential's own gradient: z~ = zdot + u z, v~ = v + u [y, 0].
      if (grad_psi != nullptr) {
        for (int l = 0; l < L; ++l) {
#pragma unroll
          for (int k = 0; k < NPL; ++k) {
            const int m = l * H + lg + k * G;
            zt[m] += u * zz[m];
          }
        }
        for (int c = lg; c < d; c += G) vp[c] += u * ys[c];
      }
    }
    __syncthreads();  // tile complete

    // ---- Phase 2: this block's partial sums (thread-owned entries) ----
    for (int p = static_cast<int>(threadIdx.x); p < Md; p += blockDim.x) {
      const int m = p / d;
      const int c = p - m * d;
      T acc = part_row[p];
      for (int s = 0; s < ns; ++s) {
        acc += dl_t[s * M + m] * vp_t[s * d + c];
        if (kCurved || m < H) acc += r_t[s * M + m] * y_t[s * d + c];
      }
      part_row[p] = acc;
    }
    for (int m = static_cast<int>(threadIdx.x); m < M; m += blockDim.x) {
      T acc = part_row[Md + m];
      for (int s = 0; s < ns; ++s) acc += u_t[s] * dl_t[s * M + m] + r_t[s * M + m];
      part_row[Md + m] = acc;
    }
    // dW_1..dW_{L-1} then dw_out (= "dW_L" with a single row i = 0).
    const int PW = (L - 1) * H * H + H;
    for (int q = static_cast<int>(threadIdx.x); q < PW; q += blockDim.x) {
      const int l = q / (H * H) + 1;
      const int rem = q - (l - 1) * H * H;
      const int i = rem / H;
      const int j = rem - i * H;
      const int mi = l * H + i;        // delta_l[i], r_l[i] (mi = L*H = M-1 for w_out)
      const int zj = (l - 1) * H + j;  // z_{l-1}[j]
      T acc = part_row[Md + M + q];
      for (int s = 0; s < ns; ++s) {
        acc += dl_t[s * M + mi] * zt_t[s * LH + zj];
        if constexpr (kCurved) acc += r_t[s * M + mi] * z_t[s * LH + zj];
      }
      part_row[Md + M + q] = acc;
    }
    __syncthreads();  // the next tile overwrites the slots
  }
}

// Sums the per-block partial rows of icnn_fused_backward_kernel in block
// order (deterministic) and scatters them to the four parameter gradients.
template <typename T>
__global__ void icnn_reduce_partials_kernel(const T* __restrict__ partial,  // (parts, P) partial rows
                                            int parts,                      // number of partial rows
                                            int64_t P,                      // entries per row
                                            int64_t Md,                     // M*d: dA entries
                                            int64_t M,                      // db entries
                                            int64_t WHH,                    // (L-1)*H*H: dW entries
                                            T* __restrict__ grad_A,         // (M, d) out
                                            T* __restrict__ grad_b,         // (M) out
                                            T* __restrict__ grad_W,         // (L-1, H, H) out
                                            T* __restrict__ grad_w_out) {   // (H) out
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
       p += int64_t(gridDim.x) * blockDim.x) {
    T acc = T(0);
    for (int k = 0; k < parts; ++k) acc += partial[int64_t(k) * P + p];
    if (p < Md) {
      grad_A[p] = acc;
    } else if (p < Md + M) {
      grad_b[p - Md] = acc;
    } else if (p < Md + M + WHH) {
      grad_W[p - Md - M] = acc;
    } else {
      grad_w_out[p - Md - M - WHH] = acc;
    }
  }
}

// ---------------------------------------------------------------------------
// Generic path: elementwise kernels between the ATen GEMMs (any width)
// ---------------------------------------------------------------------------

// out[i, out_off + j] = sigma_m(pre[i, m]) with m = pre_off + j, j < cols.
template <typename T, Activation act>
__global__ void icnn_act_columns_kernel(T* __restrict__ out,        // (rows, out_ld) destination
                                        int64_t out_ld,             // row stride of out
                                        int64_t out_off,            // first destination column
                                        const T* __restrict__ pre,  // (rows, pre_ld) pre-activations
                                        int64_t pre_ld,             // row stride of pre (M)
                                        int64_t pre_off,            // first source column
                                        int64_t rows,               // number of rows (B)
                                        int64_t cols,               // columns to process
                                        int64_t H,                  // width (columns < H are layer 0)
                                        T slope) {                  // leaky-ReLU negative slope
  const int64_t total = rows * cols;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / cols;
    const int64_t j = idx - i * cols;
    const int64_t m = pre_off + j;
    out[i * out_ld + out_off + j] = sigma_col<act>(m, H, pre[i * pre_ld + m], slope);
  }
}

// out[i, out_off + j] = sigma'_m(pre[i, m]) * x[i, x_off + j], m = pre_off + j.
template <typename T, Activation act>
__global__ void icnn_dact_scale_kernel(T* __restrict__ out,        // (rows, out_ld) destination
                                       int64_t out_ld,             // row stride of out
                                       int64_t out_off,            // first destination column
                                       const T* __restrict__ pre,  // (rows, pre_ld) pre-activations
                                       int64_t pre_ld,             // row stride of pre (M)
                                       int64_t pre_off,            // first pre column
                                       const T* __restrict__ x,    // (rows, x_ld) factor
                                       int64_t x_ld,               // row stride of x
                                       int64_t x_off,              // first column of x
                                       int64_t rows,               // number of rows (B)
                                       int64_t cols,               // columns to process
                                       int64_t H,                  // width (columns < H are layer 0)
                                       T slope) {                  // leaky-ReLU negative slope
  const int64_t total = rows * cols;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / cols;
    const int64_t j = idx - i * cols;
    const int64_t m = pre_off + j;
    out[i * out_ld + out_off + j] =
        dsigma_col<act>(m, H, pre[i * pre_ld + m], slope) * x[i * x_ld + x_off + j];
  }
}

// delta[i, m] = sigma'_m(a) e[i, m] for m < L*H (e_{L-1} = sigma'(a_L) w_out
// rebuilt), delta[i, M-1] = sigma'(a_L).
template <typename T, Activation act>
__global__ void icnn_delta_kernel(T* __restrict__ delta,           // (B, M) out: stacked delta
                                  const T* __restrict__ pre,       // (B, M) pre-activations
                                  const T* __restrict__ upstream,  // (B, (L-1)*H) e_0..e_{L-2}
                                  const T* __restrict__ w_out,     // (H) last-layer weights
                                  int64_t rows,                    // B
                                  int64_t H,                       // width
                                  int64_t L,                       // number of layers
                                  T slope) {                       // leaky-ReLU negative slope
  const int64_t M = L * H + 1;
  const int64_t LHs = (L - 1) * H;
  const int64_t total = rows * M;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / M;
    const int64_t m = idx - i * M;
    const T a = pre[idx];
    if (m < LHs) {
      delta[idx] = dsigma_col<act>(m, H, a, slope) * upstream[i * LHs + m];
    } else if (m < M - 1) {
      const T delta_out = Act<act>::df(pre[i * M + M - 1], slope);
      delta[idx] = dsigma_col<act>(m, H, a, slope) * (delta_out * w_out[m - LHs]);
    } else {
      delta[idx] = Act<act>::df(a, slope);
    }
  }
}

// Forward output layer, one warp per row: a_L += w_out . z_{L-1};
// psi = sigma(a_L) + alpha/2 |y|^2; delta_L = sigma'(a_L);
// delta_{L-1} = sigma'_{L-1}(a_{L-1}) e_{L-1} with e_{L-1} = delta_L w_out
// (not saved: the backward rebuilds it from a_L).
template <typename T, Activation act>
__global__ void icnn_forward_output_kernel(T* __restrict__ pre,       // (B, M) in/out: a_L completed
                                           T* __restrict__ psi,       // (B) out: potential
                                           T* __restrict__ delta,     // (B, M) out: delta_L, delta_{L-1}
                                           const T* __restrict__ z,   // (B, H) z_{L-1}
                                           const T* __restrict__ y,   // (B, K) inputs
                                           const T* __restrict__ w_out,  // (H) last-layer weights
                                           int64_t B,                 // batch size
                                           int64_t K,                 // columns of y
                                           int64_t H,                 // width
                                           int64_t L,                 // number of layers
                                           T alpha,                   // strong convexity
                                           T slope) {                 // leaky-ReLU negative slope
  const int64_t M = L * H + 1;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  for (int64_t i = int64_t(blockIdx.x) * kRowsPerBlock + warp; i < B;
       i += int64_t(gridDim.x) * kRowsPerBlock) {
    T part = T(0);
    for (int64_t j = lane; j < H; j += kWarpSize) part += z[i * H + j] * w_out[j];
    T sq = T(0);
    for (int64_t k = lane; k < K; k += kWarpSize) sq += y[i * K + k] * y[i * K + k];
    part = segment_sum<kWarpSize>(part, 0xffffffffu);
    sq = segment_sum<kWarpSize>(sq, 0xffffffffu);
    const T a_out = pre[i * M + M - 1] + part;
    const T delta_out = Act<act>::df(a_out, slope);
    __syncwarp();  // every lane has read pre[i, M-1] before lane 0 overwrites it
    if (lane == 0) {
      pre[i * M + M - 1] = a_out;
      psi[i] = Act<act>::f(a_out, slope) + T(0.5) * alpha * sq;
      delta[i * M + M - 1] = delta_out;
    }
    const int64_t off = (L - 1) * H;
    for (int64_t j = lane; j < H; j += kWarpSize) {
      delta[i * M + off + j] = dsigma_col<act>(off + j, H, pre[i * M + off + j], slope) * (delta_out * w_out[j]);
    }
  }
}

// Leaky-ReLU curvature adjoint (only layer 0):
// r[i, j] = sigma_0''(a_0) adot_0 e_0, j < H; r is (B, H). For L = 1,
// e_0 = sigma'(a_L) w_out is rebuilt.
template <typename T, Activation act>
__global__ void icnn_r0_kernel(T* __restrict__ r,               // (B, H) out
                               const T* __restrict__ pre,       // (B, M) pre-activations
                               const T* __restrict__ tan,       // (B, M) tangent adot
                               const T* __restrict__ upstream,  // (B, (L-1)*H) e_0..e_{L-2}
                               const T* __restrict__ w_out,     // (H) last-layer weights
                               int64_t rows,                    // B
                               int64_t H,                       // width
                               int64_t L,                       // number of layers
                               T slope) {                       // leaky-ReLU negative slope
  const int64_t M = L * H + 1;
  const int64_t LHs = (L - 1) * H;
  const int64_t total = rows * H;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / H;
    const int64_t j = idx - i * H;
    const T e = L > 1 ? upstream[i * LHs + j] : Act<act>::df(pre[i * M + M - 1], slope) * w_out[j];
    r[idx] = Act<act>::d2f0(pre[i * M + j], slope) * tan[i * M + j] * e;
  }
}

// Curved activations, top of the adjoint pass, one warp per row:
// adot_L = tan[i, M-1] + w_out . zdot_{L-1}; r_L = sigma''(a_L) adot_L;
// r_{L-1} = sigma''(a) adot e_{L-1} + sigma'(a) r_L w_out (block L-1 of r),
// with e_{L-1} = sigma'(a_L) w_out.
template <typename T, Activation act>
__global__ void icnn_r_out_kernel(T* __restrict__ r,               // (B, M) out: r_L, r_{L-1}
                                  const T* __restrict__ pre,       // (B, M) pre-activations
                                  const T* __restrict__ tan,       // (B, M) tangent adot
                                  const T* __restrict__ ztan,      // (B, L*H) zdot
                                  const T* __restrict__ w_out,     // (H) last-layer weights
                                  int64_t B,                       // batch size
                                  int64_t H,                       // width
                                  int64_t L,                       // number of layers
                                  T slope) {                       // leaky-ReLU negative slope
  const int64_t M = L * H + 1;
  const int64_t LH = L * H;
  const int64_t off = (L - 1) * H;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  for (int64_t i = int64_t(blockIdx.x) * kRowsPerBlock + warp; i < B;
       i += int64_t(gridDim.x) * kRowsPerBlock) {
    T part = T(0);
    for (int64_t j = lane; j < H; j += kWarpSize) part += ztan[i * LH + off + j] * w_out[j];
    part = segment_sum<kWarpSize>(part, 0xffffffffu);
    const T a_dot = tan[i * M + M - 1] + part;
    const T a_out = pre[i * M + M - 1];
    const T r_out = Act<act>::d2f(a_out, slope) * a_dot;
    const T delta_out = Act<act>::df(a_out, slope);
    if (lane == 0) r[i * M + M - 1] = r_out;
    for (int64_t j = lane; j < H; j += kWarpSize) {
      const int64_t m = off + j;
      const T a = pre[i * M + m];
      r[i * M + m] = d2sigma_col<act>(m, H, a, slope) * tan[i * M + m] * (delta_out * w_out[j]) +
                     dsigma_col<act>(m, H, a, slope) * (r_out * w_out[j]);
    }
  }
}

// Curved activations, adjoint step for layer block `off` = (l-1)*H:
// r[i, off + j] = sigma''(a) adot e + sigma'(a) back[i, j], back = r_l W_l.
template <typename T, Activation act>
__global__ void icnn_r_hidden_kernel(T* __restrict__ r,               // (B, M) out: block off
                                     const T* __restrict__ pre,       // (B, M) pre-activations
                                     const T* __restrict__ tan,       // (B, M) tangent adot
                                     const T* __restrict__ upstream,  // (B, (L-1)*H) e_0..e_{L-2}
                                     const T* __restrict__ back,      // (B, H) W_l^T r_l per row
                                     int64_t rows,                    // B
                                     int64_t H,                       // width
                                     int64_t L,                       // number of layers
                                     int64_t off,                     // first column (l-1)*H < (L-1)*H
                                     T slope) {                       // leaky-ReLU negative slope
  const int64_t M = L * H + 1;
  const int64_t LHs = (L - 1) * H;
  const int64_t total = rows * H;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / H;
    const int64_t j = idx - i * H;
    const int64_t m = off + j;
    const T a = pre[i * M + m];
    r[i * M + m] = d2sigma_col<act>(m, H, a, slope) * tan[i * M + m] * upstream[i * LHs + m] +
                   dsigma_col<act>(m, H, a, slope) * back[idx];
  }
}

}  // namespace cuda
}  // namespace lidvae
