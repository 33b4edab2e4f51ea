// Pieces shared by the CPU backward kernels (backward_leaky.h, backward_curved.h).
#pragma once


#include <algorithm>
#include <cstdint>
#include <utility>

#include "cpu/row_ops.h"
#include "cpu/workspace.h"
#include "stable.h"
#include "icnn_activations.h"

namespace lidvae {
namespace cpu {


// Input dimensions up to this use row-by-row input products instead of skinny BLAS calls,
// which are dominated by call and packing overhead at that shape.
constexpr int64_t kSkinnyDim = 8;

// Column block [layer*H, (layer+1)*H) of a (B, *) row-major matrix.
inline Tensor block(const Tensor& t, int64_t layer, int64_t hidden) {
  return narrowed(t, 1, layer * hidden, hidden);
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
  SkinnyGradA(int64_t batch, int64_t dim, int64_t stacked, Workspace& scratch)
      : batch_(batch), dim_(dim), stacked_(stacked),
        partial_(scratch.zeros({get_num_threads(), dim, stacked})) {}

  // dA[off + j, k] += sum_i rows[i * ld + j] * coef[i * coef_ld + k] for j < n, k < cols.
  void add(const T* rows, int64_t ld, int64_t off, int64_t n, const T* coef, int64_t coef_ld,
           int64_t cols) {
    T* part = partial_.mutable_data_ptr<T>();
    const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, n * cols));
    parallel_for(0, batch_, grain, [&](int64_t begin, int64_t end) {
      T* acc = part + get_thread_num() * dim_ * stacked_ + off;
      for (int64_t i = begin; i < end; ++i)
        for (int64_t k = 0; k < cols; ++k)
          cpu::row_axpy(acc + k * stacked_, rows + i * ld, coef[i * coef_ld + k], n);
    });
  }

  // The calling thread's partial dA^T (d, M), for fused row passes inside parallel_for:
  // row j of layer block off..off+n, column k, is at [k * M + off + j].
  T* thread_partial() { return partial_.mutable_data_ptr<T>() + get_thread_num() * dim_ * stacked_; }

  void write(Tensor& grad_A) const { copy_into(grad_A, transposed(sum0(partial_))); }

 private:
  int64_t batch_, dim_, stacked_;
  Tensor partial_;
};

}  // namespace cpu
}  // namespace lidvae
