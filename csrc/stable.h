// The tensor operations the CPU kernels need, on the LibTorch stable ABI (torch >= 2.10,
// TORCH_TARGET_VERSION = 2.10; docs/wheel.md). Everything here goes through
// torch::stable (C shim calls and boxed dispatcher calls), never through ATen's C++ API,
// so the library built from csrc/*.cpp and csrc/cpu/*.cpp loads beside every torch from
// 2.10 on.
//
// What the stable ABI lacks is written here:
//   - an error check with one clean message line (LIDVAE_CHECK, std::runtime_error: the
//     stable kernel wrapper turns it into a RuntimeError with that message);
//   - parallel_for that records "inside a parallel region" (no stable in_parallel_region),
//     and the worker's thread index (C shim torch_get_thread_idx);
//   - the ATen GEMM fallback: aten::mm.out through the dispatcher, alpha/beta through the
//     AOTI C shim aoti_torch_cpu_addmm_out (the dispatcher's boxed calls cannot carry a
//     Scalar before torch 2.13);
//   - the few elementwise updates (x += c * y, x += a * b, x *= c) as CPU loops over 1-D/2-D
//     strided views: no Scalar arguments, no temporaries.
#pragma once

#include <torch/csrc/inductor/aoti_torch/generated/c_shim_cpu.h>
#include <torch/csrc/stable/c/shim.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace lidvae {

using Tensor = torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;
using IntList = std::vector<int64_t>;

namespace detail {

inline void append(std::ostringstream&) {}
template <typename First, typename... Rest>
void append(std::ostringstream& os, const First& first, const Rest&... rest) {
  os << first;
  append(os, rest...);
}

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  append(os, args...);
  return os.str();
}

}  // namespace detail

// TORCH_CHECK for the stable ABI: throws std::runtime_error with exactly the message.
#define LIDVAE_CHECK(cond, ...)                                              \
  do {                                                                       \
    if (!(cond)) throw std::runtime_error(::lidvae::detail::cat(__VA_ARGS__)); \
  } while (0)

// "[2, 3]", as ATen prints sizes.
inline std::string shape_str(const IntList& sizes) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < sizes.size(); ++i) os << (i ? ", " : "") << sizes[i];
  os << "]";
  return os.str();
}
inline IntList sizes_of(const Tensor& t) {
  const auto s = t.sizes();
  return IntList(s.begin(), s.end());
}
inline std::string shape_str(const Tensor& t) { return shape_str(sizes_of(t)); }

// "cpu", "cuda:0": as ATen prints devices.
inline std::string device_str(const Tensor& t) {
  if (t.is_cpu()) return "cpu";
  const std::string kind = t.is_cuda() ? "cuda" : "device";
  return kind + ":" + std::to_string(static_cast<int>(t.get_device_index()));
}
inline bool same_device(const Tensor& a, const Tensor& b) {
  return a.is_cpu() == b.is_cpu() && a.is_cuda() == b.is_cuda() &&
         (a.is_cpu() || a.get_device_index() == b.get_device_index());
}
inline bool is_floating(ScalarType t) { return t == ScalarType::Float || t == ScalarType::Double; }

// Calls fn(T{}) with T = float or double for the tensor's dtype (AT_DISPATCH_FLOATING_TYPES).
template <typename Fn>
void dispatch_floating(ScalarType dtype, const char* op, const Fn& fn) {
  switch (dtype) {
    case ScalarType::Float:
      fn(float{});
      break;
    case ScalarType::Double:
      fn(double{});
      break;
    default:
      LIDVAE_CHECK(false, op, ": expected float32 or float64, got ", dtype);
  }
}

// ---- views and allocation -----------------------------------------------------------------
// Allocation and the views the kernels take on every call go through direct C shim calls
// (aoti_torch_empty_strided, aoti_torch__reinterpret_tensor, aoti_torch_as_strided) where one exists,
// not through boxed
// dispatcher calls, which look the operator up by name each time: that per-call cost showed
// in the small-batch backward.
inline Tensor empty_sizes(const IntList& sizes, const Tensor& like) {
  IntList strides(sizes.size(), 1);
  for (size_t i = sizes.size(); i-- > 1;) strides[i - 1] = strides[i] * std::max<int64_t>(sizes[i], 1);
  int32_t dtype = 0, device_type = 0, device_index = 0;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_dtype(like.get(), &dtype));
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_type(like.get(), &device_type));
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_index(like.get(), &device_index));
  AtenTensorHandle out = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_empty_strided(static_cast<int64_t>(sizes.size()), sizes.data(),
                                                         strides.data(), dtype, device_type, device_index,
                                                         &out));
  return Tensor(out);
}
inline Tensor empty(std::initializer_list<int64_t> sizes, const Tensor& like) {
  return empty_sizes(IntList(sizes), like);
}
inline Tensor zeros(std::initializer_list<int64_t> sizes, const Tensor& like) {
  return torch::stable::new_zeros(like, IntList(sizes));
}
inline Tensor empty_as(const Tensor& t) { return empty_sizes(sizes_of(t), t); }
// A view of t with the given sizes and strides whose first element is `offset` elements past
// t's (aoti_torch__reinterpret_tensor: no operator call, so no dispatcher or profiler cost;
// the kernels take a few dozen such views per call, which showed at small batches).
inline Tensor offset_view(const Tensor& t, const IntList& sizes, const IntList& strides, int64_t offset) {
  AtenTensorHandle out = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch__reinterpret_tensor(t.get(), static_cast<int64_t>(sizes.size()),
                                                               sizes.data(), strides.data(), offset, &out));
  return Tensor(out);
}
inline IntList strides_of(const Tensor& t) { return IntList(t.strides().begin(), t.strides().end()); }
// t.narrow(dim, start, length).
inline Tensor narrowed(const Tensor& t, int64_t dim, int64_t start, int64_t length) {
  LIDVAE_CHECK(dim >= 0 && dim < t.dim() && start >= 0 && length >= 0 && start + length <= t.size(dim),
               "narrowed: dim ", dim, " start ", start, " length ", length, " out of range for a tensor with ",
               t.dim(), " dims");
  IntList sizes = sizes_of(t);
  sizes[dim] = length;
  return offset_view(t, sizes, strides_of(t), start * t.stride(dim));
}
// A view with the given sizes and strides (as many as t has dims) at t's storage offset.
inline Tensor restrided(const Tensor& t, const IntList& sizes, const IntList& strides) {
  AtenTensorHandle out = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_as_strided(t.get(), sizes.data(), strides.data(), &out));
  return Tensor(out);
}
// t.t() of a 2-D tensor.
inline Tensor transposed(const Tensor& t) {
  return restrided(t, IntList{t.size(1), t.size(0)}, IntList{t.stride(1), t.stride(0)});
}
// t.select(dim, index).
inline Tensor pick(const Tensor& t, int64_t dim, int64_t index) {
  LIDVAE_CHECK(dim >= 0 && dim < t.dim() && index >= 0 && index < t.size(dim), "pick: dim ", dim, " index ",
               index, " out of range for a tensor with ", t.dim(), " dims");
  IntList sizes = sizes_of(t), strides = strides_of(t);
  sizes.erase(sizes.begin() + dim);
  strides.erase(strides.begin() + dim);
  return offset_view(t, sizes, strides, index * t.stride(dim));
}
// t itself when contiguous (no dispatcher call), else a contiguous copy.
inline Tensor contig(const Tensor& t) { return t.is_contiguous() ? t : torch::stable::contiguous(t); }
inline void copy_into(const Tensor& dst, const Tensor& src) {
  Tensor self = dst;
  torch::stable::copy_(self, src);
}
inline void fill_zero(const Tensor& t) {
  Tensor self = t;
  torch::stable::zero_(self);
}
// The same elements in the same place (a view of itself, or the tensor itself).
inline bool same_view(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined()) return false;
  return a.get() == b.get() ||
         (a.data_ptr() == b.data_ptr() && a.dim() == b.dim() && sizes_of(a) == sizes_of(b) &&
          IntList(a.strides().begin(), a.strides().end()) ==
              IntList(b.strides().begin(), b.strides().end()));
}

// ---- dispatcher calls without Scalars -----------------------------------------------------
template <size_t N>
void call_op(const char* name, const char* overload, std::array<StableIValue, N>& stack) {
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher(name, overload, stack.data(), TORCH_ABI_VERSION));
}

// out = a @ b (aten::mm.out).
inline void mm_out(const Tensor& out, const Tensor& a, const Tensor& b) {
  std::array<StableIValue, 3> stack{torch::stable::detail::from(a), torch::stable::detail::from(b),
                                    torch::stable::detail::from(out)};
  call_op("aten::mm", "out", stack);
  (void)torch::stable::detail::to<Tensor>(stack[0]);
}
// out = mat @ vec (aten::mv.out).
inline void mv_out(const Tensor& out, const Tensor& mat, const Tensor& vec) {
  std::array<StableIValue, 3> stack{torch::stable::detail::from(mat), torch::stable::detail::from(vec),
                                    torch::stable::detail::from(out)};
  call_op("aten::mv", "out", stack);
  (void)torch::stable::detail::to<Tensor>(stack[0]);
}
// out = beta * base + alpha * a @ b (ATen's addmm, `base` may be `out`), CPU tensors.
inline void addmm_out_cpu(const Tensor& out, const Tensor& base, const Tensor& a, const Tensor& b,
                          double beta, double alpha) {
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_cpu_addmm_out(out.get(), base.get(), a.get(), b.get(), beta, alpha));
}
// out = sum of t over dim 0.
inline void sum0_out(const Tensor& out, const Tensor& t) {
  Tensor self = out;
  torch::stable::sum_out(self, t, IntList{0});
}
inline Tensor sum0(const Tensor& t) { return torch::stable::sum(t, IntList{0}); }

// ---- CPU elementwise updates on strided 1-D / 2-D views --------------------------------------
// fn(dst_element, i, j) for every element of the (rows, cols) view t (1-D: one row).
template <typename T, typename Fn>
void for_each_element(const Tensor& t, const Fn& fn) {
  T* p = t.mutable_data_ptr<T>();
  const int64_t rows = t.dim() == 2 ? t.size(0) : 1, cols = t.dim() == 2 ? t.size(1) : t.size(0);
  const int64_t rs = t.dim() == 2 ? t.stride(0) : 0, cs = t.dim() == 2 ? t.stride(1) : t.stride(0);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) fn(p[i * rs + j * cs], i, j);
}
// Element (i, j) of a 1-D / 2-D view (1-D: j indexes it).
template <typename T>
struct Strided {
  const T* p;
  int64_t rs, cs;
  explicit Strided(const Tensor& t)
      : p(t.const_data_ptr<T>()), rs(t.dim() == 2 ? t.stride(0) : 0), cs(t.stride(t.dim() - 1)) {}
  T operator()(int64_t i, int64_t j) const { return p[i * rs + j * cs]; }
};

// x += c * y
template <typename T>
void add_scaled_(const Tensor& x, const Tensor& y, T c) {
  const Strided<T> ys(y);
  for_each_element<T>(x, [&](T& e, int64_t i, int64_t j) { e += c * ys(i, j); });
}
// x += a * col, col a (rows,) vector broadcast over x's columns (x.addcmul_(a, col.unsqueeze(1))).
template <typename T>
void add_mul_col_(const Tensor& x, const Tensor& a, const Tensor& col) {
  const Strided<T> as(a);
  const T* c = col.const_data_ptr<T>();
  const int64_t cst = col.stride(0);
  for_each_element<T>(x, [&](T& e, int64_t i, int64_t j) { e += as(i, j) * c[i * cst]; });
}
// out += mat @ vec
template <typename T>
void addmv_(const Tensor& out, const Tensor& mat, const Tensor& vec) {
  const Tensor product = empty({mat.size(0)}, out);
  mv_out(product, mat, vec);
  add_scaled_<T>(out, product, T(1));
}
// x *= c
template <typename T>
void scale_(const Tensor& x, T c) {
  for_each_element<T>(x, [&](T& e, int64_t, int64_t) { e *= c; });
}
// Whether any element of a contiguous CPU tensor is nonzero.
template <typename T>
bool any_nonzero(const Tensor& t) {
  const T* p = t.const_data_ptr<T>();
  for (int64_t i = 0, n = t.numel(); i < n; ++i)
    if (p[i] != T(0)) return true;
  return false;
}
// min over a non-empty CPU tensor (NaN if any element is NaN), as double: ATen's reduction
// (aten::min, vectorized and parallel) through the dispatcher. A scalar loop here cost C1's
// forward about 10% (W has 512 x 512 elements there).
inline double min_of(const Tensor& t) {
  std::array<StableIValue, 1> stack{torch::stable::detail::from(t)};
  call_op("aten::min", "", stack);
  const Tensor result = torch::stable::detail::to<Tensor>(stack[0]);
  double value = 0.0;
  dispatch_floating(result.scalar_type(), "min_of", [&](auto zero) {
    using T = decltype(zero);
    value = static_cast<double>(*result.const_data_ptr<T>());
  });
  return value;
}

// ---- threads ------------------------------------------------------------------------------------
// Whether the calling thread runs inside one of our parallel_for bodies (at::in_parallel_region
// has no stable counterpart; the kernels only need to know about their own regions).
inline bool& in_parallel_region_flag() {
  static thread_local bool flag = false;
  return flag;
}
inline bool in_parallel_region() { return in_parallel_region_flag(); }
inline int64_t get_num_threads() { return static_cast<int64_t>(torch::stable::get_num_threads()); }
// Index of the calling worker in the current parallel region (0 outside one).
inline int64_t get_thread_num() {
  uint32_t idx = 0;
  STABLE_TORCH_ERROR_CODE_CHECK(torch_get_thread_idx(&idx));
  return static_cast<int64_t>(idx);
}
// at::parallel_for through the stable ABI, with the region flag set in the bodies.
template <typename Fn>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const Fn& fn) {
  torch::stable::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) {
    bool& flag = in_parallel_region_flag();
    const bool outer = flag;
    flag = true;
    try {
      fn(b, e);
    } catch (...) {
      flag = outer;
      throw;
    }
    flag = outer;
  });
}

// A `str` operator argument. The stable header of torch 2.10-2.13 unboxes std::string through a
// heap-allocated copy it never frees (detail::ToImpl<std::string>::call in
// stableivalue_conversions.h: `new std::string(...)`, returned by value): one leaked std::string
// per call of an operator with a `str` argument, which LeakSanitizer reports (the CI sanitizer
// stage). Kernels take StrArg instead; its conversion below copies the characters and frees the
// handle, nothing else.
struct StrArg {
  std::string value;
  operator const std::string&() const { return value; }  // NOLINT: used as the string it holds
};

}  // namespace lidvae

namespace torch::stable::detail {

// StableIValue -> lidvae::StrArg: the characters of the string handle, then the handle deleted.
template <>
struct ToImpl<lidvae::StrArg> {
  static lidvae::StrArg call(StableIValue val, [[maybe_unused]] uint64_t extension_build_version,
                             [[maybe_unused]] bool is_internal) {
    StringHandle handle = torch::stable::detail::to<StringHandle>(val);
    size_t length = 0;
    STABLE_TORCH_ERROR_CODE_CHECK(torch_string_length(handle, &length));
    const char* data = nullptr;
    STABLE_TORCH_ERROR_CODE_CHECK(torch_string_c_str(handle, &data));
    lidvae::StrArg out{std::string(data, length)};
    STABLE_TORCH_ERROR_CODE_CHECK(torch_delete_string(handle));
    return out;
  }
};

}  // namespace torch::stable::detail

