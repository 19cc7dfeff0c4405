#include "tensor/threads.h"

#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>

#include "common/error.h"

namespace hfrun {

int num_threads() {
  return omp_get_max_threads();
}

void set_num_threads(int n) {
  HF_CHECK(n >= 1, "set_num_threads: need at least one thread, got ", n);
  omp_set_num_threads(n);
}

namespace {
const char* isa_name(dnnl::cpu_isa isa) {
  using dnnl::cpu_isa;
  switch (isa) {
    case cpu_isa::sse41:
      return "sse41";
    case cpu_isa::avx:
      return "avx";
    case cpu_isa::avx2:
      return "avx2";
    case cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case cpu_isa::avx512_core:
      return "avx512_core";
    case cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "other";
  }
}
}  // namespace

CpuRuntimeInfo cpu_runtime_info() {
  CpuRuntimeInfo info;
  const dnnl_version_t* v = dnnl_version();
  info.onednn_version =
      std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
  info.onednn_isa = isa_name(dnnl::get_effective_cpu_isa());
  info.threads = num_threads();
  return info;
}

}  // namespace hfrun
