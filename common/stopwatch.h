// Wall-clock timing for the run's time split (train/run_summary.h): a stopwatch, and a scope
// that adds its duration to a running total.
#pragma once

#include <chrono>

namespace hfrun {

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

class AddTime {
 public:
  explicit AddTime(double& total) : total_(total) {}
  ~AddTime() { total_ += watch_.seconds(); }
  AddTime(const AddTime&) = delete;
  AddTime& operator=(const AddTime&) = delete;

 private:
  double& total_;
  Stopwatch watch_;
};

}  // namespace hfrun
