#include "tensor/profiler.h"

#include <atomic>
#include <mutex>

namespace hfrun::profiler {
namespace {
std::atomic<bool> g_enabled{false};
std::atomic<bool> g_shapes{false};
std::mutex g_mu;
std::map<std::string, OpStats>& table() {
  static auto* t = new std::map<std::string, OpStats>();
  return *t;
}
}  // namespace

void set_enabled(bool on) {
  g_enabled = on;
}
bool enabled() {
  return g_enabled.load(std::memory_order_relaxed);
}

void set_shapes(bool on) {
  g_shapes = on;
}
bool shapes() {
  return g_shapes.load(std::memory_order_relaxed);
}

void reset() {
  std::lock_guard<std::mutex> lock(g_mu);
  table().clear();
}

std::map<std::string, OpStats> snapshot() {
  std::lock_guard<std::mutex> lock(g_mu);
  return table();
}

void add(const char* name, double seconds) {
  add(std::string(name), seconds, 0);
}

void add(const std::string& name, double seconds, double flops) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto& s = table()[name];
  s.seconds += seconds;
  ++s.calls;
  s.flops += flops;
}

}  // namespace hfrun::profiler
