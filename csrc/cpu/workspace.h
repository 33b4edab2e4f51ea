// Scratch memory of the CPU kernels, kept between operator calls.
//
// The backward of one training step needs several (B, M)-sized scratch buffers. Taken
// from the system allocator on every call, each of them was a fresh mmap (glibc maps
// chunks above its dynamic threshold and trims the heap top after a step frees them), so
// every step paid a page fault per 4 KiB touched: at C3 (B = 4096, d = 2, H = 64, L = 3)
// 1 000-2 000 faults and 2-3.6 ms of system time per map call (docs/benchmarks.md, "CPU
// scratch memory"). A Workspace takes its buffers
// from a process-wide cache of blocks that keep their pages, and gives them back to it
// when the operator call ends.
//
// The cache holds at most limit bytes of free blocks (LIDVAE_CPU_WORKSPACE_MB, default
// 256 MiB; 0 turns it off, and it is off by default in AddressSanitizer builds so that a
// use after the call stays visible); the least recently returned blocks go back to the
// system first. Python: lidvae_ext.cpu_workspace_info(), set_cpu_workspace_limit(),
// release_cpu_workspace().
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "stable.h"

namespace lidvae {
namespace cpu {

struct WorkspaceStats {
  int64_t cached_bytes;   // free blocks held by the cache
  int64_t cached_blocks;  // how many
  int64_t limit_bytes;    // most bytes the cache keeps
  int64_t hits;           // requests served from the cache since the process started
  int64_t misses;         // requests that took new memory from the system
};

WorkspaceStats workspace_stats();
// Sets the limit (negative: leave it), evicting the oldest blocks down to it; returns stats.
WorkspaceStats set_workspace_limit(int64_t limit_bytes);
// Returns every cached block to the system; the bytes freed.
int64_t release_workspace();

// The scratch tensors of one operator call: contiguous, uninitialized (or zeroed) tensors
// of `like`'s dtype on the CPU, whose memory goes back to the cache when the Workspace is
// destroyed. The tensors do not own their memory: declare the Workspace before them and
// never let one escape the call (outputs come from empty(), not from here).
class Workspace {
 public:
  explicit Workspace(const Tensor& like);
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  Tensor empty(std::initializer_list<int64_t> sizes);
  Tensor zeros(std::initializer_list<int64_t> sizes);

 private:
  struct Block {
    void* ptr;
    size_t bytes;
  };
  int32_t dtype_ = 0, device_type_ = 0, device_index_ = 0;
  size_t element_size_ = 0;
  std::vector<Block> taken_;

  friend class WorkspaceCache;
};

}  // namespace cpu
}  // namespace lidvae
