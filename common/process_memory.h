// This process's resident memory as the kernel counts it (/proc/self/status): what `top` shows
// and, for the peak, what `/usr/bin/time -f %M` reports. Zero where the kernel does not say.
#pragma once

#include <cstdint>

namespace hfrun {

struct ProcessMemory {
  int64_t resident_bytes = 0;  // VmRSS
  int64_t peak_bytes = 0;      // VmHWM: the most resident at any time since the process started
};

ProcessMemory process_memory();

}  // namespace hfrun
