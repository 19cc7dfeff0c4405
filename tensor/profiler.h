// A cheap op profiler: when enabled, ops wrapped in HF_PROFILE_SCOPE("matmul") add their wall
// time to a per-name total. Benchmarks use it to report the share of a step spent in GEMMs.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace hfrun::profiler {

struct OpStats {
  double seconds = 0;
  int64_t calls = 0;
  double flops = 0;  // where the op counts them (GEMMs keyed by shape)
};

void set_enabled(bool on);
bool enabled();
// With shapes on (HFRUN_PROFILE=shapes), the profiling backend keys each GEMM by its operands'
// shapes, layouts and dtypes and counts its flops, so a profile shows which products run below
// the machine's rate.
void set_shapes(bool on);
bool shapes();
void reset();
std::map<std::string, OpStats> snapshot();
void add(const char* name, double seconds);
void add(const std::string& name, double seconds, double flops);

class Scope {
 public:
  explicit Scope(const char* name) : name_(enabled() ? name : nullptr) {
    if (name_) start_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (name_) {
      add(name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* name_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace hfrun::profiler

#define HF_PROFILE_CONCAT2(a, b) a##b
#define HF_PROFILE_CONCAT(a, b) HF_PROFILE_CONCAT2(a, b)
#define HF_PROFILE_SCOPE(name) ::hfrun::profiler::Scope HF_PROFILE_CONCAT(hf_prof_, __LINE__)(name)
