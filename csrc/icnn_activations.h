// Activation functors shared by the CPU and CUDA kernels (plain C++, no ATen,
// usable from nvcc device code).
//
// Each activation family provides the first-layer nonlinearity sigma_0 and
// the later-layer nonlinearity sigma, each with its first and second
// derivative, matching the conventions of torch's autograd (the reference):
//   leaky_relu: sigma_0(t) = lrelu(t)^2, sigma(t) = lrelu(t), derivatives at
//               t = 0 taken from the t <= 0 branch (as F.leaky_relu does).
//   softplus:   sigma_0 = sigma = softplus with torch's threshold 20 (the
//               function is the identity above it, derivatives 1 and 0).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define LIDVAE_HD __host__ __device__ __forceinline__
#else
#define LIDVAE_HD inline
#endif

namespace lidvae {

enum class Activation : int { LeakyReLU = 0, Softplus = 1 };

template <Activation act>
struct Act;

template <>
struct Act<Activation::LeakyReLU> {
  // sigma'' = 0 on every layer after the first: only layer 0 carries curvature.
  static constexpr bool kHiddenCurvature = false;

  // Written as a select between constants followed by arithmetic, never as a
  // branch between two arithmetic expressions: compilers then vectorize the
  // loops (an FP multiply under a branch may not be speculated).
  template <typename T>
  LIDVAE_HD static T slope_of(T t, T s) {
    return t > T(0) ? T(1) : s;
  }
  template <typename T>
  LIDVAE_HD static T f(T t, T s) {
    return t * slope_of(t, s);
  }
  template <typename T>
  LIDVAE_HD static T df(T t, T s) {
    return slope_of(t, s);
  }
  template <typename T>
  LIDVAE_HD static T d2f(T, T) {
    return T(0);
  }
  template <typename T>
  LIDVAE_HD static T f0(T t, T s) {
    const T l = f(t, s);
    return l * l;
  }
  template <typename T>
  LIDVAE_HD static T df0(T t, T s) {
    return t * d2f0(t, s);  // 2 lrelu(t) lrelu'(t)
  }
  template <typename T>
  LIDVAE_HD static T d2f0(T t, T s) {
    const T k = slope_of(t, s);
    return T(2) * k * k;
  }
};

template <>
struct Act<Activation::Softplus> {
  static constexpr bool kHiddenCurvature = true;
  static constexpr double kThreshold = 20.0;  // torch.nn.functional.softplus default

  template <typename T>
  LIDVAE_HD static T f(T t, T) {
    return t > T(kThreshold) ? t : log1p(exp(t));
  }
  template <typename T>
  LIDVAE_HD static T df(T t, T) {
    return t > T(kThreshold) ? T(1) : T(1) / (T(1) + exp(-t));
  }
  template <typename T>
  LIDVAE_HD static T d2f(T t, T) {
    if (t > T(kThreshold)) return T(0);
    const T sig = T(1) / (T(1) + exp(-t));
    return sig * (T(1) - sig);
  }
  template <typename T>
  LIDVAE_HD static T f0(T t, T s) {
    return f(t, s);
  }
  template <typename T>
  LIDVAE_HD static T df0(T t, T s) {
    return df(t, s);
  }
  template <typename T>
  LIDVAE_HD static T d2f0(T t, T s) {
    return d2f(t, s);
  }
};

}  // namespace lidvae
