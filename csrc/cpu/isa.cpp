// Run-time choice of the row-pass ISA (see isa.h).
#include "cpu/isa.h"

#include "stable.h"

#include <cstdlib>
#include <cstring>
#include <string>

namespace lidvae {
namespace cpu {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "baseline";
  }
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out{Isa::kBaseline};
#if LIDVAE_X86_ISA_VARIANTS
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) out.push_back(Isa::kAvx2);
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    out.push_back(Isa::kAvx512);
#endif
  return out;
}

Isa select_isa() {
  static const std::vector<Isa> supported = supported_isas();
  const char* env = std::getenv("LIDVAE_CPU_ISA");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "auto") == 0) return supported.back();
  for (Isa isa : {Isa::kBaseline, Isa::kAvx2, Isa::kAvx512}) {
    if (std::strcmp(env, isa_name(isa)) != 0) continue;
    for (Isa have : supported)
      if (have == isa) return isa;
    LIDVAE_CHECK(false, "LIDVAE_CPU_ISA=", env, ": this CPU (or this build) does not support it; "
                "supported: ", isa_name(supported.back()), " and below");
  }
  LIDVAE_CHECK(false, "LIDVAE_CPU_ISA must be auto, baseline, avx2 or avx512, got '", env, "'");
}

}  // namespace cpu
}  // namespace lidvae
