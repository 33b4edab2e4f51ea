// Standalone translation unit for scripts/check_cuda_compile.sh: explicitly
// instantiates every kernel template of csrc/cuda/icnn_cuda_kernels.cuh
// (every dtype x fused width x activation) with plain nvcc, without torch.
// It lives outside csrc/cuda/ on purpose: setup.py globs csrc/cuda/*.cu and
// must not compile these instantiations a second time.
#include <cstdint>

#include "cuda/icnn_cuda_kernels.cuh"

namespace lidvae {
namespace cuda {

#define LIDVAE_INSTANTIATE_FUSED(T, H, ACT)                                                          \
  template __global__ void icnn_fused_forward_kernel<T, H, ACT>(                                     \
      const T*, const T*, const T*, const T*, const T*, T*, T*, T*, T*, int64_t, int, int, int, T, T);       \
  template __global__ void icnn_fused_backward_kernel<T, H, ACT>(                                    \
      const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*, T*,  \
      T*, int64_t, int, int, int, int, T, T);

#define LIDVAE_INSTANTIATE_GENERIC(T, ACT)                                                           \
  template __global__ void icnn_act_columns_kernel<T, ACT>(T*, int64_t, int64_t, const T*, int64_t,  \
                                                           int64_t, int64_t, int64_t, int64_t, T);   \
  template __global__ void icnn_dact_scale_kernel<T, ACT>(T*, int64_t, int64_t, const T*, int64_t,   \
                                                          int64_t, const T*, int64_t, int64_t,       \
                                                          int64_t, int64_t, int64_t, T);             \
  template __global__ void icnn_delta_kernel<T, ACT>(T*, const T*, const T*, const T*, int64_t,     \
                                                     int64_t, int64_t, T);                           \
  template __global__ void icnn_forward_output_kernel<T, ACT>(T*, T*, T*, const T*, const T*,        \
                                                              const T*, int64_t, int64_t, int64_t,   \
                                                              int64_t, T, T);                        \
  template __global__ void icnn_r0_kernel<T, ACT>(T*, const T*, const T*, const T*, const T*,       \
                                                  int64_t, int64_t, int64_t, T);                     \
  template __global__ void icnn_r_out_kernel<T, ACT>(T*, const T*, const T*, const T*, const T*,     \
                                                     int64_t, int64_t, int64_t, T);                  \
  template __global__ void icnn_r_hidden_kernel<T, ACT>(T*, const T*, const T*, const T*, const T*,  \
                                                        int64_t, int64_t, int64_t, int64_t, T);

#define LIDVAE_INSTANTIATE_DTYPE_ACT(T, ACT) \
  LIDVAE_INSTANTIATE_FUSED(T, 16, ACT)       \
  LIDVAE_INSTANTIATE_FUSED(T, 32, ACT)       \
  LIDVAE_INSTANTIATE_FUSED(T, 64, ACT)       \
  LIDVAE_INSTANTIATE_FUSED(T, 128, ACT)      \
  LIDVAE_INSTANTIATE_GENERIC(T, ACT)

LIDVAE_INSTANTIATE_DTYPE_ACT(float, Activation::LeakyReLU)
LIDVAE_INSTANTIATE_DTYPE_ACT(float, Activation::Softplus)
LIDVAE_INSTANTIATE_DTYPE_ACT(double, Activation::LeakyReLU)
LIDVAE_INSTANTIATE_DTYPE_ACT(double, Activation::Softplus)

template __global__ void icnn_reduce_partials_kernel<float>(const float*, int, int64_t, int64_t, int64_t,
                                                            int64_t, float*, float*, float*, float*);
template __global__ void icnn_reduce_partials_kernel<double>(const double*, int, int64_t, int64_t, int64_t,
                                                             int64_t, double*, double*, double*, double*);

#undef LIDVAE_INSTANTIATE_DTYPE_ACT
#undef LIDVAE_INSTANTIATE_GENERIC
#undef LIDVAE_INSTANTIATE_FUSED

}  // namespace cuda
}  // namespace lidvae
