// Progress of a long phase (loading a large model or checkpoint, checking its checksums), on
// stderr: nothing for phases shorter than 2 s, then a line at most every 2 s and a last one when
// done ("hfrun: loading weights m/model.safetensors: 6.1 of 13.5 GB (45%), 4 s"). Only in the
// job's first process (rank 0, or a process outside a job); HFRUN_PROGRESS_AFTER_S sets the
// quiet time (0: report from the start).
#pragma once

#include <cstdint>
#include <string>

#include "common/stopwatch.h"

namespace hfrun {

class Progress {
 public:
  Progress(std::string what, int64_t total_bytes);
  ~Progress();  // the closing line, when any was printed
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(int64_t bytes);

 private:
  void print(bool last);

  std::string what_;
  int64_t total_ = 0, done_ = 0;
  bool enabled_ = false, printed_ = false;
  double quiet_s_ = 2, next_s_ = 0;
  Stopwatch watch_;
};

}  // namespace hfrun
