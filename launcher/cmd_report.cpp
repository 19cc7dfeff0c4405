// hfrun report: the training curves of one or more runs (their metrics.jsonl and
// config.resolved.yaml) as one self-contained HTML file; the page itself is report_html.cpp.
#include <boost/program_options.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/file_util.h"
#include "launcher/commands.h"
#include "launcher/report_html.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace hfrun::cli {
namespace {

// Keys whose values the report reads: anything else a line carries is ignored.
bool known_key(const std::string& key) {
  return key == "loss" || key == "lr" || key == "grad_norm" || key == "tokens_per_s" ||
         key == "elapsed_s" || key == "peak_mem_mb" || key.starts_with("val_");
}

// nlohmann's message without its "[json.exception.parse_error.101] " tag.
std::string parse_error_text(const nlohmann::json::exception& e) {
  std::string s = e.what();
  const size_t tag_end = s.starts_with("[") ? s.find("] ") : std::string::npos;
  return tag_end == std::string::npos ? s : s.substr(tag_end + 2);
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  HF_CHECK_INPUT(in.good(), path.string(), ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  HF_CHECK_INPUT(!in.bad(), path.string(), ": cannot read");
  return ss.str();
}

// The run's label: its directory's name ("runs/x/", "runs/x" and "." in runs/x all give "x").
std::string run_name(const std::string& dir) {
  fs::path p = fs::absolute(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  const std::string name = p.filename().string();
  return name.empty() ? dir : name;
}

// Reads RUN_DIR/metrics.jsonl (one JSON object per line; the later line of a repeated step
// wins) and RUN_DIR/config.resolved.yaml when present. An incomplete last line (no newline:
// the run is writing it right now) is skipped with a note; any other bad line is an error.
report::Run read_run(const std::string& dir) {
  HF_CHECK_INPUT(fs::is_directory(dir), dir, ": no such run directory");
  const fs::path metrics = fs::path(dir) / "metrics.jsonl";
  HF_CHECK_INPUT(fs::is_regular_file(metrics), metrics.string(),
                 ": not found (a run directory holds the metrics.jsonl its training wrote)");
  const std::string content = read_file(metrics);
  report::Run run;
  run.path = dir;
  run.name = run_name(dir);
  size_t line_no = 0;
  for (size_t begin = 0; begin < content.size();) {
    size_t end = content.find('\n', begin);
    const bool complete = end != std::string::npos;
    if (!complete) end = content.size();
    std::string_view text(content.data() + begin, end - begin);
    begin = end + 1;
    ++line_no;
    if (text.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = metrics.string() + ":" + std::to_string(line_no);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      if (!complete) {
        std::cerr << "hfrun report: " << where << ": skipping the incomplete last line\n";
        break;
      }
      HF_CHECK_INPUT(false, where, ": expected one JSON object per line: ", parse_error_text(e));
    }
    HF_CHECK_INPUT(j.is_object(), where, ": expected a JSON object, got a JSON ", j.type_name());
    auto step_it = j.find("step");
    HF_CHECK_INPUT(step_it != j.end(), where, ": expected a \"step\" key (an integer >= 0)");
    HF_CHECK_INPUT(step_it->is_number_integer() && step_it->get<int64_t>() >= 0, where,
                   ": expected \"step\" to be an integer >= 0, got ", step_it->dump());
    report::MetricsLine line;
    for (const auto& [key, value] : j.items()) {
      if (key == "step") continue;
      if (value.is_number()) {
        line[key] = value.get<double>();
      } else {
        HF_CHECK_INPUT(!known_key(key), where, ": expected a number for \"", key, "\", got ",
                       value.dump());
      }
    }
    if (auto it = line.find("elapsed_s"); it != line.end()) run.wall_s = it->second;
    const int64_t step = step_it->get<int64_t>();
    bool eval = false;
    for (const auto& kv : line) eval = eval || kv.first.starts_with("val_");
    if (line.count("loss")) {
      run.train[step] = std::move(line);
    } else if (eval) {
      run.eval[step] = std::move(line);
    }
  }
  HF_CHECK_INPUT(!run.train.empty(), metrics.string(),
                 ": no training lines (JSON objects with \"step\" and \"loss\")");
  const fs::path config = fs::path(dir) / "config.resolved.yaml";
  if (fs::is_regular_file(config)) run.config_yaml = read_file(config);
  return run;
}

}  // namespace

int cmd_report(const Args& args) {
  std::vector<std::string> dirs;
  std::string output = "report.html";
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")("output,o", po::value(&output),
                                                 "the HTML file to write (default: report.html)");
  po::options_description all;
  all.add(desc).add_options()("runs", po::value(&dirs), "run directories");
  po::positional_options_description pos;
  pos.add("runs", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << "Usage: hfrun report RUN_DIR... [--output report.html]\n"
                 "Writes one self-contained HTML file (inline SVG, no scripts, no network) with "
                 "each run's curves against step: loss and val_loss, lr, grad_norm, tokens/s, "
                 "peak memory and every val_* metric, several runs overlaid; a summary table, "
                 "the last eval values and each run's config.resolved.yaml.\n"
              << desc;
    return 0;
  }
  po::notify(vm);
  HF_CHECK_INPUT(!dirs.empty(),
                 "report: no run directory given (hfrun report RUN_DIR... [--output FILE])");
  std::vector<report::Run> runs;
  for (const std::string& d : dirs) runs.push_back(read_run(d));
  // Two runs named alike (a/run, b/run) are told apart by their paths.
  std::map<std::string, size_t> named;
  for (const report::Run& r : runs) ++named[r.name];
  for (report::Run& r : runs)
    if (named[r.name] > 1) r.name = r.path;

  const fs::path parent = fs::path(output).parent_path();
  HF_CHECK_INPUT(parent.empty() || fs::is_directory(parent), output, ": no such directory ",
                 parent.string());
  HF_CHECK_INPUT(!fs::is_directory(output), output, ": is a directory; --output names a file");
  const std::string html = report::render_report(runs);
  write_file_atomically(output, [&](int fd) { write_all(fd, html.data(), html.size(), output); });
  std::cout << "wrote " << output << " (" << runs.size() << (runs.size() == 1 ? " run" : " runs")
            << ")\n";
  return 0;
}

}  // namespace hfrun::cli
