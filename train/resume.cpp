#include "train/resume.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/digest.h"
#include "common/error.h"
#include "train/checkpoint.h"
#include "train/checkpoint_fs.h"

namespace hfrun::train {

namespace fs = std::filesystem;

std::string config_hash(const TrainConfig& config) {
  TrainConfig c = config;
  c.source.clear();
  c.output_dir.clear();
  c.checkpoint = CheckpointSection{};
  c.train.device = "cpu";  // a checkpoint resumes on any device with the same losses
  return "sha256:" + sha256_hex(c.to_yaml());
}

namespace {

// The value of "step" in a metrics line, or -1.
int64_t line_step(const std::string& line) {
  const std::string key = "\"step\": ";
  const size_t at = line.find(key);
  if (at == std::string::npos || line.empty() || line.back() != '}') return -1;
  size_t i = at + key.size();
  int64_t v = 0;
  bool any = false;
  for (; i < line.size() && line[i] >= '0' && line[i] <= '9'; ++i) {
    v = v * 10 + (line[i] - '0');
    any = true;
  }
  return any ? v : -1;
}

}  // namespace

void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in.good()) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    const int64_t s = line_step(line);
    if (s >= 0 && s <= step) kept += line + "\n";
  }
  in.close();
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  detail::write_synced(tmp, kept);
  fs::rename(tmp, path);
}

}  // namespace hfrun::train
