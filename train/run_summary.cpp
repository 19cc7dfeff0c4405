#include "train/run_summary.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/file_util.h"

namespace hfrun::train {
namespace {

double achieved_gflops(const RunSummary& s) {
  return s.steps_s > 0 ? s.flops_per_token * static_cast<double>(s.tokens) / s.steps_s * 1e-9 : 0;
}

std::string duration(double seconds) {
  char buf[64];
  if (seconds < 60) {
    std::snprintf(buf, sizeof buf, "%.1f s", seconds);
  } else if (seconds < 3600) {
    std::snprintf(buf, sizeof buf, "%d min %02d s", static_cast<int>(seconds) / 60,
                  static_cast<int>(seconds) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%d h %02d min", static_cast<int>(seconds) / 3600,
                  static_cast<int>(seconds) % 3600 / 60);
  }
  return buf;
}

// The time split: each part of the run's wall time (compute is the steps' time without their
// data and communication waits; "other" is logging and what is not counted).
struct Split {
  double compute, communication, data, eval, checkpoint, exporting, other;
};

Split split_of(const RunSummary& s) {
  Split t{};
  t.communication = s.communication_s;
  t.data = s.data_s;
  t.compute = std::max(0.0, s.steps_s - s.communication_s - s.data_s);
  t.eval = s.eval_s;
  t.checkpoint = s.checkpoint_s;
  t.exporting = s.export_s;
  t.other = std::max(0.0, s.wall_s - s.steps_s - s.eval_s - s.checkpoint_s - s.export_s);
  return t;
}

}  // namespace

std::string run_summary_json(const RunSummary& s, double peak_gflops) {
  nlohmann::ordered_json j;
  j["steps"] = s.steps;
  j["steps_this_run"] = s.steps_run;
  j["skipped_steps"] = s.skipped_steps;
  j["overflow_steps"] = s.overflow_steps;
  j["stopped_by_signal"] = s.stop_signal != 0;
  j["first_loss"] = s.first_loss;
  j["last_loss"] = s.last_loss;
  j["wall_s"] = s.wall_s;
  j["tokens"] = s.tokens;
  j["tokens_per_s"] = s.wall_s > 0 ? static_cast<double>(s.tokens) / s.wall_s : 0.0;
  j["train_tokens_per_s"] = s.steps_s > 0 ? static_cast<double>(s.tokens) / s.steps_s : 0.0;
  j["flops_per_token"] = s.flops_per_token;
  j["achieved_gflops"] = achieved_gflops(s);
  if (peak_gflops > 0) {
    j["peak_gflops"] = peak_gflops;
    j["mfu"] = achieved_gflops(s) / peak_gflops;
  } else {
    j["peak_gflops"] = nullptr;
    j["mfu"] = nullptr;
  }
  const Split t = split_of(s);
  j["time_s"] = {
      {"compute", t.compute}, {"communication_wait", t.communication}, {"data_loading", t.data},
      {"evaluation", t.eval}, {"checkpointing", t.checkpoint},         {"export", t.exporting},
      {"other", t.other}};
  j["device"] = s.device;
  j["world"] = s.world;
  j["peak_mem_mb"] = s.peak_mem_mb;
  j["checkpoints_saved"] = s.checkpoints_saved;
  j["last_checkpoint"] = s.last_checkpoint;
  j["final_dir"] = s.final_dir;
  return j.dump(2) + "\n";
}

std::string run_summary_text(const RunSummary& s, double peak_gflops) {
  std::string out;
  char line[512];
  const double tps = s.wall_s > 0 ? static_cast<double>(s.tokens) / s.wall_s : 0;
  std::snprintf(line, sizeof line, "trained %lld steps in %s: loss %.4g -> %.4g, %.0f tokens/s",
                static_cast<long long>(s.steps_run), duration(s.wall_s).c_str(), s.first_loss,
                s.last_loss, tps);
  out += line;
  if (peak_gflops > 0) {
    std::snprintf(line, sizeof line, ", MFU %.2f (%.0f of %.0f GFLOP/s)",
                  achieved_gflops(s) / peak_gflops, achieved_gflops(s), peak_gflops);
    out += line;
  }
  if (s.skipped_steps > 0) {
    out += ", " + std::to_string(s.skipped_steps) + " skipped (non-finite)";
  }
  if (s.overflow_steps > 0) {
    out += ", " + std::to_string(s.overflow_steps) + " without update (loss scale overflow)";
  }
  out += "\n";
  const Split t = split_of(s);
  const double total = std::max(s.wall_s, 1e-9);
  auto part = [&](const char* name, double v) {
    char b[96];
    std::snprintf(b, sizeof b, "%s %.0f%% (%s)", name, 100 * v / total, duration(v).c_str());
    return std::string(b);
  };
  out += "  time: " + part("compute", t.compute) + ", " +
         part("communication wait", t.communication) + ", " + part("data", t.data) + ", " +
         part("eval", t.eval) + ", " + part("checkpoints", t.checkpoint) + ", " +
         part("export", t.exporting) + "\n";
  out += "  peak memory (" + s.device + "):";
  for (size_t r = 0; r < s.peak_mem_mb.size(); ++r) {
    std::snprintf(line, sizeof line, "%s rank %zu %.0f MiB", r ? "," : "", r, s.peak_mem_mb[r]);
    out += line;
  }
  out += "\n";
  if (!s.final_dir.empty()) {
    out += "  model: " + s.final_dir + "\n";
  } else if (!s.last_checkpoint.empty()) {
    out += "  checkpoint: " + s.last_checkpoint + "\n";
  }
  out += "  summary: " + (std::filesystem::path(s.output_dir) / "summary.json").string() + "\n";
  return out;
}

void write_run_summary(const RunSummary& s, double peak_gflops) {
  const std::string path = (std::filesystem::path(s.output_dir) / "summary.json").string();
  const std::string text = run_summary_json(s, peak_gflops);
  write_file_atomically(path, [&](int fd) { write_all(fd, text.data(), text.size(), path); });
}

}  // namespace hfrun::train
