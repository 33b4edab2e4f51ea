// The process-wide cache behind cpu::Workspace (workspace.h).
#include "cpu/workspace.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>

namespace lidvae {
namespace cpu {

namespace {

constexpr int64_t kDefaultLimitMiB = 256;
constexpr size_t kAlignment = 64;  // a cache line, and an AVX-512 vector

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// LIDVAE_CPU_WORKSPACE_MB, read once: a non-negative whole number of MiB.
int64_t limit_from_environment() {
  const char* text = std::getenv("LIDVAE_CPU_WORKSPACE_MB");
  if (text == nullptr || *text == '\0') return kSanitized ? 0 : kDefaultLimitMiB << 20;
  errno = 0;
  char* end = nullptr;
  const long long mib = std::strtoll(text, &end, 10);
  LIDVAE_CHECK(errno == 0 && end != text && *end == '\0' && mib >= 0 && mib <= (int64_t{1} << 40),
               "LIDVAE_CPU_WORKSPACE_MB must be a whole number of MiB >= 0 (0 turns the CPU "
               "workspace cache off), got '", text, "'");
  return static_cast<int64_t>(mib) << 20;
}

}  // namespace

class WorkspaceCache {
 public:
  static WorkspaceCache& instance() {
    // Never destroyed: operator calls from other threads may still run while the process
    // exits, and the system takes the memory back then anyway.
    static WorkspaceCache* cache = new WorkspaceCache();
    return *cache;
  }

  Workspace::Block acquire(size_t bytes) {
    bytes = (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ensure_limit();
      // Smallest cached block that fits without wasting more than half of it.
      size_t best = free_.size();
      for (size_t i = 0; i < free_.size(); ++i) {
        const size_t have = free_[i].bytes;
        if (have >= bytes && have / 2 <= bytes && (best == free_.size() || have < free_[best].bytes))
          best = i;
      }
      if (best != free_.size()) {
        Workspace::Block block = free_[best];
        free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
        cached_ -= static_cast<int64_t>(block.bytes);
        ++hits_;
        return block;
      }
      ++misses_;
    }
    void* ptr = std::aligned_alloc(kAlignment, bytes);
    LIDVAE_CHECK(ptr != nullptr, "lidvae_ext: out of memory allocating ", bytes,
                 " bytes of CPU scratch space (LIDVAE_CPU_WORKSPACE_MB limits only what is kept "
                 "between calls; a smaller batch needs less)");
    return {ptr, bytes};
  }

  void give_back(const Workspace::Block& block) {
    std::lock_guard<std::mutex> lock(mutex_);
    ensure_limit();
    free_.push_back(block);
    cached_ += static_cast<int64_t>(block.bytes);
    evict_to(limit_);
  }

  WorkspaceStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    ensure_limit();
    return {cached_, static_cast<int64_t>(free_.size()), limit_, hits_, misses_};
  }

  WorkspaceStats set_limit(int64_t limit) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ensure_limit();
      if (limit >= 0) {
        limit_ = limit;
        evict_to(limit_);
      }
    }
    return stats();
  }

  int64_t release() {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t freed = cached_;
    evict_to(0);
    return freed;
  }

 private:
  void ensure_limit() {
    if (limit_ < 0) limit_ = limit_from_environment();
  }

  // Oldest returned blocks first.
  void evict_to(int64_t limit) {
    while (cached_ > limit && !free_.empty()) {
      cached_ -= static_cast<int64_t>(free_.front().bytes);
      std::free(free_.front().ptr);
      free_.pop_front();
    }
  }

  std::mutex mutex_;
  std::deque<Workspace::Block> free_;  // in the order they came back
  int64_t cached_ = 0;
  int64_t limit_ = -1;  // not read from the environment yet
  int64_t hits_ = 0, misses_ = 0;
};

WorkspaceStats workspace_stats() { return WorkspaceCache::instance().stats(); }
WorkspaceStats set_workspace_limit(int64_t limit_bytes) {
  return WorkspaceCache::instance().set_limit(limit_bytes);
}
int64_t release_workspace() { return WorkspaceCache::instance().release(); }

Workspace::Workspace(const Tensor& like) {
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_dtype(like.get(), &dtype_));
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_type(like.get(), &device_type_));
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_index(like.get(), &device_index_));
  element_size_ = like.element_size();
}

Workspace::~Workspace() {
  for (const Block& block : taken_) WorkspaceCache::instance().give_back(block);
}

Tensor Workspace::empty(std::initializer_list<int64_t> sizes) {
  const IntList shape(sizes);
  IntList strides(shape.size(), 1);
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * std::max<int64_t>(shape[i], 1);
  taken_.reserve(taken_.size() + 1);  // so the push below cannot throw after the acquire
  const Block block = WorkspaceCache::instance().acquire(static_cast<size_t>(numel) * element_size_);
  taken_.push_back(block);
  AtenTensorHandle out = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_create_tensor_from_blob_v2(
      block.ptr, static_cast<int64_t>(shape.size()), shape.data(), strides.data(), 0, dtype_,
      device_type_, device_index_, &out, aoti_torch_layout_strided(), nullptr, 0));
  return Tensor(out);
}

Tensor Workspace::zeros(std::initializer_list<int64_t> sizes) {
  Tensor t = empty(sizes);
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  std::memset(t.mutable_data_ptr(), 0, static_cast<size_t>(numel) * element_size_);
  return t;
}

}  // namespace cpu
}  // namespace lidvae
