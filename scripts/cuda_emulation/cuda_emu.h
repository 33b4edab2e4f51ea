// CPU emulation of the small CUDA subset used by csrc/cuda (development tool,
// not part of the package): lets the *unchanged* kernel and host code of
// csrc/cuda/icnn_cuda.cu run on a machine without a GPU, so that its indexing,
// shared-memory layout and synchronisation can be tested against the
// reference (tests/test_cuda_emulation.py).
//
// Model: every CUDA thread of a block is a real std::thread (stricter than
// lock-step warps: a missing __syncwarp / __syncthreads shows up as a wrong
// result or, under -fsanitize=thread, as a data race). Blocks of a grid run
// one after another and share one static shared-memory buffer that is filled
// with NaN bytes before every block. __syncwarp(mask) and __shfl_xor_sync are
// barriers over the lanes named in `mask`; every lane must pass the same mask
// and may only read lanes in it (checked). Launches check the dynamic shared
// memory against the limit the host code set with cudaFuncSetAttribute.
// Device limits come from LIDVAE_EMU_SMS (default 2 SMs), LIDVAE_EMU_SMEM
// (default 232448 bytes = H100 opt-in) and LIDVAE_EMU_BLOCKS_PER_SM (1);
// LIDVAE_EMU_DEVICE is the device index (the host code caches limits per device).
#pragma once

#ifndef LIDVAE_CUDA_EMULATION
#error "cuda_emu.h is only for builds with -DLIDVAE_CUDA_EMULATION"
#endif

#include "stable.h"  // LIDVAE_CHECK (the host code under test is on the stable ABI)

#include <atomic>
#include <barrier>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

// ---- CUDA keywords --------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct emu_uint3 {
  unsigned x = 0, y = 0, z = 0;
};

namespace emu {

constexpr std::size_t kSmemBytes = 1u << 20;

inline int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoll(v) : fallback;
}
inline int sms() { return static_cast<int>(env_int("LIDVAE_EMU_SMS", 2)); }
inline int smem_optin() { return static_cast<int>(env_int("LIDVAE_EMU_SMEM", 232448)); }
inline int blocks_per_sm() { return static_cast<int>(env_int("LIDVAE_EMU_BLOCKS_PER_SM", 1)); }
inline int device() { return static_cast<int>(env_int("LIDVAE_EMU_DEVICE", 0)); }

struct Warp {
  std::mutex mutex;
  std::map<unsigned, std::unique_ptr<std::barrier<>>> barriers;
  uint64_t slots[32] = {};
  unsigned masks[32] = {};

  std::barrier<>& barrier_for(unsigned mask) {
    std::lock_guard<std::mutex> lock(mutex);
    auto& slot = barriers[mask];
    if (!slot) slot = std::make_unique<std::barrier<>>(std::popcount(mask));
    return *slot;
  }
};

struct Block {
  explicit Block(unsigned threads) : sync(threads), warps((threads + 31) / 32) {}
  std::barrier<> sync;
  std::vector<Warp> warps;
};

inline thread_local emu_uint3 tl_thread_idx, tl_block_idx;
inline thread_local dim3 tl_block_dim, tl_grid_dim;
inline thread_local Block* tl_block = nullptr;

inline Warp& my_warp() { return tl_block->warps[tl_thread_idx.x / 32]; }
inline int my_lane() { return static_cast<int>(tl_thread_idx.x % 32); }

[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "cuda_emu: %s (block %u thread %u)\n", what.c_str(), tl_block_idx.x,
               tl_thread_idx.x);
  std::abort();
}

inline void check_mask(unsigned mask, const char* op) {
  const int lane = my_lane();
  if ((mask & (1u << lane)) == 0) fail(std::string(op) + ": calling lane not in mask");
}

// Lanes named in `mask` meet; each must have passed the same mask.
inline void warp_barrier(unsigned mask, const char* op) {
  check_mask(mask, op);
  Warp& w = my_warp();
  w.masks[my_lane()] = mask;
  std::barrier<>& bar = w.barrier_for(mask);
  bar.arrive_and_wait();
  for (int l = 0; l < 32; ++l) {
    if ((mask & (1u << l)) && w.masks[l] != mask) fail(std::string(op) + ": lanes passed different masks");
  }
  bar.arrive_and_wait();
}

// Shared memory of the running block (blocks run one at a time): the
// harness points this at the kernels' `extern __shared__` array, which it
// defines with kSmemBytes bytes.
inline unsigned char* smem_base = nullptr;

inline std::mutex attr_mutex;
// cudaFuncAttributeMaxDynamicSharedMemorySize per (kernel, device), as in CUDA.
inline std::map<std::pair<const void*, int>, int> max_dynamic_smem;

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t smem, Args&&... args) {
  int allowed = 48 * 1024;
  {
    std::lock_guard<std::mutex> lock(attr_mutex);
    auto it = max_dynamic_smem.find({reinterpret_cast<const void*>(kernel), device()});
    if (it != max_dynamic_smem.end()) allowed = it->second;
  }
  LIDVAE_CHECK(grid.x >= 1 && grid.y == 1 && grid.z == 1 && block.y == 1 && block.z == 1 &&
                  block.x >= 1 && block.x <= 1024,
              "cuda_emu: invalid launch configuration");
  LIDVAE_CHECK(smem <= static_cast<std::size_t>(allowed),
              "cuda_emu: launch with ", smem, " bytes of dynamic shared memory, but only ", allowed,
              " were enabled with cudaFuncSetAttribute");
  LIDVAE_CHECK(smem <= kSmemBytes, "cuda_emu: shared memory request too large");
  std::tuple<std::decay_t<KArgs>...> kargs(std::forward<Args>(args)...);
  for (unsigned bx = 0; bx < grid.x; ++bx) {
    LIDVAE_CHECK(smem_base != nullptr, "cuda_emu: emu::smem_base not set");
    std::memset(smem_base, 0xFF, kSmemBytes);  // NaN poison
    Block ctx(block.x);
    std::vector<std::thread> threads;
    threads.reserve(block.x);
    for (unsigned tx = 0; tx < block.x; ++tx) {
      threads.emplace_back([&, tx] {
        tl_thread_idx = emu_uint3{tx, 0, 0};
        tl_block_idx = emu_uint3{bx, 0, 0};
        tl_block_dim = block;
        tl_grid_dim = grid;
        tl_block = &ctx;
        std::apply(kernel, kargs);
        tl_block = nullptr;
      });
    }
    for (auto& t : threads) t.join();
  }
}

}  // namespace emu

#define threadIdx (::emu::tl_thread_idx)
#define blockIdx (::emu::tl_block_idx)
#define blockDim (::emu::tl_block_dim)
#define gridDim (::emu::tl_grid_dim)

inline void __syncthreads() { emu::tl_block->sync.arrive_and_wait(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::warp_barrier(mask, "__syncwarp"); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "cuda_emu: shuffle of a type wider than 64 bits");
  emu::check_mask(mask, "__shfl_xor_sync");
  emu::Warp& w = emu::my_warp();
  const int lane = emu::my_lane();
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  w.slots[lane] = bits;
  emu::warp_barrier(mask, "__shfl_xor_sync");
  int src = lane ^ lane_mask;
  if (src / width != lane / width) src = lane;  // outside the segment: own value
  if ((mask & (1u << src)) == 0) emu::fail("__shfl_xor_sync: source lane not in mask");
  T out;
  std::memcpy(&out, &w.slots[src], sizeof(T));
  emu::warp_barrier(mask, "__shfl_xor_sync");
  return out;
}

// ---- CUDA runtime API stubs ------------------------------------------------
using cudaStream_t = void*;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
struct cudaFuncAttributes {
  int maxThreadsPerBlock = 1024;
};
struct cudaDeviceProp {
  char name[256] = "cuda_emu (CPU emulation)";
  int major = 9;
  int minor = 0;
};

inline const char* cudaGetErrorString(cudaError_t err) {
  return err == cudaSuccess ? "no error" : "invalid argument";
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
template <typename F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F* /*func*/) {
  *attr = cudaFuncAttributes{};
  return cudaSuccess;
}
template <typename F>
cudaError_t cudaFuncSetAttribute(F* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > emu::smem_optin()) {
    return cudaErrorInvalidValue;
  }
  std::lock_guard<std::mutex> lock(emu::attr_mutex);
  emu::max_dynamic_smem[{reinterpret_cast<const void*>(func), emu::device()}] = value;
  return cudaSuccess;
}
template <typename F>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, F* /*func*/, int threads,
                                                          std::size_t smem) {
  *blocks = threads <= 1024 && smem <= static_cast<std::size_t>(emu::smem_optin()) ? emu::blocks_per_sm() : 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int /*device*/) {
  *value = attr == cudaDevAttrMultiProcessorCount ? emu::sms() : emu::smem_optin();
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int /*device*/) {
  *prop = cudaDeviceProp{};
  return cudaSuccess;
}

inline cudaError_t cudaGetDevice(int* device) {
  *device = emu::device();
  return cudaSuccess;
}

namespace emu {
// torch::stable::accelerator::DeviceGuard's stand-in (one emulated device).
struct DeviceGuard {
  explicit DeviceGuard(int) {}
};
}  // namespace emu

#define LIDVAE_EMU_LAUNCH(kernel, grid, block, smem, ...) ::emu::launch(kernel, grid, block, smem, __VA_ARGS__)
