// The CPU thread pool: one OpenMP pool, shared by our kernels and oneDNN (both use libgomp),
// sized by OMP_NUM_THREADS or set_num_threads().
#pragma once

#include <string>

namespace hfrun {

int num_threads();
void set_num_threads(int n);

struct CpuRuntimeInfo {
  std::string onednn_version;  // "2.6.3"
  std::string onednn_isa;      // the ISA oneDNN dispatches to, e.g. "avx512_core_bf16"
  int threads = 1;
};
CpuRuntimeInfo cpu_runtime_info();

}  // namespace hfrun
