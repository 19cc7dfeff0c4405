#include "common/fault.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "common/job_env.h"

namespace hfrun {

int job_rank_from_env() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID", "RANK"}) {
    if (const char* r = std::getenv(v)) return std::atoi(r);
  }
  return -1;
}

namespace fault {
namespace {

struct Config {
  long long kill_at = 0;  // 0: never
  std::FILE* trace = nullptr;
  std::string stall_at;  // a point's name; "": never
  double stall_s = 0;
};

const Config& config() {
  static const Config c = [] {
    Config c;
    const int rank = std::max(job_rank_from_env(), 0);
    if (const char* spec = std::getenv("HFRUN_FAULT_KILL")) {
      int r = -1;
      long long n = 0;
      if (std::sscanf(spec, "%d:%lld", &r, &n) == 2 && r == rank && n >= 1) c.kill_at = n;
    }
    if (const char* spec = std::getenv("HFRUN_FAULT_STALL")) {
      int r = -1;
      char where[128] = {0};
      double s = 0;
      if (std::sscanf(spec, "%d:%127[^:]:%lf", &r, where, &s) == 3 && r == rank && s > 0) {
        c.stall_at = where;
        c.stall_s = s;
      }
    }
    if (const char* path = std::getenv("HFRUN_FAULT_TRACE")) {
      const std::string file = std::string(path) + "." + std::to_string(rank);
      c.trace = std::fopen(file.c_str(), "a");
    }
    return c;
  }();
  return c;
}

}  // namespace

void point(const char* where) {
  const Config& c = config();
  if (c.kill_at == 0 && c.trace == nullptr && c.stall_at.empty()) return;
  static std::atomic<long long> count{0};
  static std::mutex trace_mutex;
  const long long n = ++count;
  if (c.trace != nullptr) {
    std::lock_guard<std::mutex> lock(trace_mutex);
    std::fprintf(c.trace, "%lld %s\n", n, where);
    std::fflush(c.trace);
  }
  if (n == c.kill_at) ::kill(::getpid(), SIGKILL);
  static std::atomic<bool> stalled{false};
  if (!c.stall_at.empty() && c.stall_at == where && !stalled.exchange(true))
    std::this_thread::sleep_for(std::chrono::duration<double>(c.stall_s));
}

}  // namespace fault
}  // namespace hfrun
