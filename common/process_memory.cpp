#include "common/process_memory.h"

#include <cstdio>
#include <cstring>

namespace hfrun {

ProcessMemory process_memory() {
  ProcessMemory m;
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return m;
  char line[256];
  long long kb = 0;
  while (std::fgets(line, sizeof line, f)) {
    if (std::sscanf(line, "VmRSS: %lld kB", &kb) == 1) m.resident_bytes = kb * 1024;
    if (std::sscanf(line, "VmHWM: %lld kB", &kb) == 1) m.peak_bytes = kb * 1024;
  }
  std::fclose(f);
  return m;
}

}  // namespace hfrun
