// hfrun report's page: the metrics of one or more runs as one self-contained HTML file: a
// summary table, charts against step (loss with val_loss, lr, grad_norm, tokens/s, peak memory
// when logged, every val_* metric), the last eval values, and each run's resolved config. Inline
// SVG and CSS only: no scripts, nothing fetched, so it opens anywhere (and renders headless).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace hfrun::cli::report {

// The numbers of one metrics.jsonl line: every numeric key except "step".
using MetricsLine = std::map<std::string, double>;

struct Run {
  std::string name;  // the legend's label: the run directory's name
  std::string path;  // the directory as given
  // By step; a step logged twice (a resumed run) keeps its later line.
  std::map<int64_t, MetricsLine> train;    // lines with "loss"
  std::map<int64_t, MetricsLine> eval;     // lines with val_* keys and no "loss"
  std::optional<double> wall_s;            // "elapsed_s" of the file's last line
  std::optional<std::string> config_yaml;  // config.resolved.yaml, when the run has one
};

// The run's colour: Tableau's ten, then further hues.
std::string run_color(size_t index);

// The whole HTML document.
std::string render_report(const std::vector<Run>& runs);

}  // namespace hfrun::cli::report
