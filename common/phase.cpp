#include "common/phase.h"

#include <atomic>

namespace hfrun {
namespace {
std::atomic<const char*> g_phase{""};
}  // namespace

void set_phase(const char* phase) {
  g_phase.store(phase, std::memory_order_relaxed);
}

const char* current_phase() {
  return g_phase.load(std::memory_order_relaxed);
}

}  // namespace hfrun
