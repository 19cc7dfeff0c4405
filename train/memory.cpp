#include "train/memory.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/process_memory.h"
#include "tensor/allocator.h"
#include "tensor/storage.h"

namespace hfrun::train {

void trace_memory(const char* phase, Device device) {
  static const bool on = [] {
    const char* v = std::getenv("HFRUN_MEMORY_TRACE");
    return v != nullptr && *v != '\0' && std::string(v) != "0";
  }();
  if (!on) return;
  const ProcessMemory p = process_memory();
  const AllocatorStats a = allocator_for(device).stats();
  const double mib = 1024.0 * 1024.0;
  std::fprintf(stderr,
               "[memory] %-20s resident %8.1f MiB  peak %8.1f MiB  tensors %8.1f MiB (peak %8.1f)"
               "  cached %8.1f MiB  system allocs %llu\n",
               phase, p.resident_bytes / mib, p.peak_bytes / mib, a.allocated_bytes / mib,
               a.peak_allocated_bytes / mib, a.cached_bytes / mib,
               static_cast<unsigned long long>(a.system_allocs));
}

double peak_memory_mib(Device device) {
  const double bytes =
      device.is_cpu() ? static_cast<double>(process_memory().peak_bytes)
                      : static_cast<double>(allocator_for(device).stats().peak_allocated_bytes);
  return bytes / (1024.0 * 1024.0);
}

}  // namespace hfrun::train
