// Vector ISA of the CPU row passes (row_ops.h), chosen at run time.
//
// The row kernels are compiled three times — for the x86-64 baseline (SSE2), for AVX2+FMA
// and for AVX-512 (F/BW/VL/DQ) — and every operator call picks one: the best the CPU
// supports, or the one LIDVAE_CPU_ISA=auto|baseline|avx2|avx512 asks for (an ISA the CPU
// lacks is an error, never a crash). Other architectures get the baseline build only.
#pragma once

#include <atomic>
#include <vector>

namespace lidvae {
namespace cpu {

enum class Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

#if defined(__x86_64__) && defined(__GNUC__)
#define LIDVAE_X86_ISA_VARIANTS 1
#else
#define LIDVAE_X86_ISA_VARIANTS 0
#endif

// "baseline" / "avx2" / "avx512".
const char* isa_name(Isa isa);

// The ISAs this build has and this CPU runs, best last.
std::vector<Isa> supported_isas();

// The ISA LIDVAE_CPU_ISA asks for (auto: the best supported), checked against the CPU.
Isa select_isa();

// The ISA the row passes of the running operator use (set by the operator entry points:
// the row passes run on the intra-op worker threads, so it is process-wide).
inline std::atomic<int>& active_isa_slot() {
  static std::atomic<int> slot{0};
  return slot;
}
inline Isa active_isa() { return static_cast<Isa>(active_isa_slot().load(std::memory_order_relaxed)); }
inline void set_active_isa(Isa isa) {
  active_isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace cpu
}  // namespace lidvae
