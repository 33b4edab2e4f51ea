// Sizes of one ICNN call and the activation dispatch: plain C++, shared by the stable-ABI
// CPU library (icnn_checks.h) and the per-torch CUDA library (cuda/icnn_checks_aten.h).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "icnn_activations.h"

namespace lidvae {

// Sizes of one ICNN call: batch B, input dim d (= A.size(1)), width H, depth
// L, M = L*H + 1, and in_dim = y.size(1) <= d: when in_dim < d, y stands for
// the zero-padded [y, 0] (the fixed beta = [I; 0] of a LIDDecoder), and the
// kernels skip the products with the zero columns.
struct IcnnDims {
  int64_t batch;
  int64_t dim;
  int64_t hidden;
  int64_t layers;
  int64_t stacked;
  int64_t in_dim;
};

// Parses the activation name; errors list the valid names.
inline Activation parse_activation(const std::string& name, const char* op) {
  if (name == "leaky_relu") return Activation::LeakyReLU;
  if (name == "softplus") return Activation::Softplus;
  throw std::runtime_error(std::string(op) + ": activation must be 'leaky_relu' or 'softplus', got '" +
                           name + "'");
}

// Calls fn(std::integral_constant<Activation, act>{}) for the runtime `act`,
// so kernels get the activation as a compile-time template parameter.
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

}  // namespace lidvae
