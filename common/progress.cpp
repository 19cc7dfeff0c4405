#include "common/progress.h"

#include <cstdio>
#include <cstdlib>

#include "common/job_env.h"

namespace hfrun {
namespace {

// Rank 0 of a job, or not in a job.
bool first_process() {
  return job_rank_from_env() <= 0;
}

std::string size_str(int64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (b >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.1f GB", b / 1e9);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f MB", b / 1e6);
  }
  return buf;
}

}  // namespace

Progress::Progress(std::string what, int64_t total_bytes)
    : what_(std::move(what)), total_(total_bytes), enabled_(first_process()) {
  if (const char* q = std::getenv("HFRUN_PROGRESS_AFTER_S")) quiet_s_ = std::atof(q);
  next_s_ = quiet_s_;
}

Progress::~Progress() {
  if (printed_) print(true);
}

void Progress::advance(int64_t bytes) {
  done_ += bytes;
  if (!enabled_) return;
  const double t = watch_.seconds();
  if (t < next_s_) return;
  next_s_ = t + 2;
  print(false);
}

void Progress::print(bool last) {
  printed_ = true;
  const double pct = total_ > 0 ? 100.0 * static_cast<double>(done_) / total_ : 100.0;
  std::fprintf(stderr, "hfrun: %s: %s of %s (%.0f%%), %.0f s%s\n", what_.c_str(),
               size_str(done_).c_str(), size_str(total_).c_str(), pct, watch_.seconds(),
               last ? ", done" : "");
  std::fflush(stderr);
}

}  // namespace hfrun
