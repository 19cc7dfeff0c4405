// hfrun report: the HTML page around the charts (summary, eval table, configs, styles).
#include "launcher/report_html.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <set>
#include <sstream>

#include "common/version.h"
#include "launcher/report_chart.h"

namespace hfrun::cli::report {
namespace {

constexpr const char* kDash = "\u2014";  // an empty cell

const char* kStyle = R"(
body { margin: 0; background: #f5f6f8; color: #1f2328;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 22px; margin: 4px 0 2px; }
h2 { font-size: 16px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d8dbe0; }
.sub { color: #656d76; margin: 0 0 16px; }
table { border-collapse: collapse; background: #fff; border: 1px solid #d8dbe0; }
th, td { padding: 6px 12px; border-bottom: 1px solid #eaecef; text-align: right;
  font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: #f0f2f5; font-weight: 600; font-size: 13px; }
th:first-child, td:first-child { text-align: left; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
  margin-right: 7px; vertical-align: -1px; }
.path { color: #656d76; font-size: 12px; margin-left: 6px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 16px; }
.card { background: #fff; border: 1px solid #d8dbe0; border-radius: 6px; overflow: hidden; }
svg.chart { display: block; width: 100%; height: auto;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  font-size: 11px; fill: #57606a; }
svg.chart .title { font-size: 13px; font-weight: 600; fill: #1f2328; }
svg.chart .note { font-size: 11px; font-weight: normal; fill: #8c959f; }
svg.chart .label { font-size: 11.5px; fill: #3d444d; }
svg.chart .legend text { fill: #3d444d; }
svg.chart .grid line { stroke: #e3e6ea; stroke-width: 1; }
svg.chart .grid line.minor { stroke: #f0f1f3; }
svg.chart .axis line { stroke: #9aa1a9; stroke-width: 1; }
.configs { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 16px; }
.configs h3 { font-size: 14px; margin: 0; padding: 8px 12px; border-bottom: 1px solid #eaecef; }
pre { margin: 0; padding: 10px 12px; font: 12px/1.5 ui-monospace, "DejaVu Sans Mono", monospace;
  white-space: pre-wrap; overflow-wrap: anywhere; max-height: 560px; overflow-y: auto; }
pre mark { background: #fff3bf; color: inherit; }
.muted { color: #656d76; }
)";

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

// A metric in a table: 4 decimals in the usual range, else 4 significant digits.
std::string metric_text(double v) {
  const double a = std::abs(v);
  if (a == 0 || (a >= 0.01 && a < 1e5)) return fixed(v, 4);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

std::string thousands(double v) {  // 16290.8 -> "16,291"
  std::string digits = fixed(std::abs(v), 0), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string duration_text(double s) {
  char buf[64];
  if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%.1f s", s);
  } else if (s < 3600) {
    const long t = std::lround(s);
    std::snprintf(buf, sizeof(buf), "%ld min %02ld s", t / 60, t % 60);
  } else {
    const long t = std::lround(s / 60);
    std::snprintf(buf, sizeof(buf), "%ld h %02ld min", t / 60, t % 60);
  }
  return buf;
}

std::vector<Point> series_of(const std::map<int64_t, MetricsLine>& lines, const std::string& key) {
  std::vector<Point> points;
  for (const auto& [step, line] : lines) {
    auto it = line.find(key);
    if (it != line.end()) points.push_back({step, it->second});
  }
  return points;
}

std::string swatch(size_t i) {
  return "<span class=\"swatch\" style=\"background:" + run_color(i) + "\"></span>";
}

std::string run_cell(const Run& r, size_t i) {
  std::string path;  // where the run is, unless its name says it already
  if (r.path != r.name && r.path != r.name + "/")
    path = "<span class=\"path\">" + html_escape(r.path) + "</span>";
  return "<td>" + swatch(i) + "<b>" + html_escape(r.name) + "</b>" + path + "</td>";
}

bool any_has(const std::vector<Run>& runs, const std::string& key, bool eval) {
  for (const Run& r : runs)
    if (!series_of(eval ? r.eval : r.train, key).empty()) return true;
  return false;
}

void summary_table(std::ostringstream& o, const std::vector<Run>& runs) {
  const bool mem = any_has(runs, "peak_mem_mb", false);
  o << "<table class=\"summary\"><tr><th>run</th><th>steps</th><th>final loss</th>"
    << "<th>best val_loss</th><th>mean tokens/s</th>" << (mem ? "<th>peak memory</th>" : "")
    << "<th>wall time</th></tr>\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    o << "<tr>" << run_cell(r, i);
    const auto& [last_step, last] = *r.train.rbegin();
    o << "<td>" << last_step << "</td><td>" << metric_text(last.at("loss")) << "</td><td>";
    const std::vector<Point> val = series_of(r.eval, "val_loss");
    if (val.empty()) {
      o << kDash;
    } else {
      const Point best = *std::min_element(val.begin(), val.end(),
                                           [](auto& a, auto& b) { return a.value < b.value; });
      o << metric_text(best.value) << " <span class=\"muted\">@ " << best.step << "</span>";
    }
    o << "</td><td>";
    const std::vector<Point> tps = series_of(r.train, "tokens_per_s");
    double sum = 0;
    for (const Point& p : tps) sum += p.value;
    o << (tps.empty() ? kDash : thousands(sum / static_cast<double>(tps.size()))) << "</td>";
    if (mem) {
      double peak = -1;
      for (const Point& p : series_of(r.train, "peak_mem_mb")) peak = std::max(peak, p.value);
      o << "<td>" << (peak < 0 ? kDash : thousands(peak) + " MB") << "</td>";
    }
    o << "<td>" << (r.wall_s ? duration_text(*r.wall_s) : kDash) << "</td></tr>\n";
  }
  o << "</table>\n";
}

// Every val_* key of the runs' eval lines; val_loss first, the rest sorted.
std::vector<std::string> eval_keys(const std::vector<Run>& runs) {
  std::set<std::string> keys;
  for (const Run& r : runs)
    for (const auto& [step, line] : r.eval)
      for (const auto& [key, value] : line)
        if (key.starts_with("val_")) keys.insert(key);
  std::vector<std::string> out;
  if (keys.erase("val_loss")) out.push_back("val_loss");
  out.insert(out.end(), keys.begin(), keys.end());
  return out;
}

void eval_table(std::ostringstream& o, const std::vector<Run>& runs,
                const std::vector<std::string>& keys) {
  o << "<table class=\"eval\"><tr><th>run</th><th>last eval step</th>";
  for (const std::string& k : keys) o << "<th>" << html_escape(k) << "</th>";
  o << "</tr>\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    o << "<tr>" << run_cell(r, i) << "<td>"
      << (r.eval.empty() ? std::string(kDash) : std::to_string(r.eval.rbegin()->first)) << "</td>";
    for (const std::string& k : keys) {
      const std::vector<Point> s = series_of(r.eval, k);
      o << "<td>" << (s.empty() ? kDash : metric_text(s.back().value)) << "</td>";
    }
    o << "</tr>\n";
  }
  o << "</table>\n";
}

// One chart of `key` for every run that logged it (plus `dashed_key` dashed, e.g. val_loss).
ChartSpec chart(const std::vector<Run>& runs, const std::string& key, bool eval,
                const std::string& title, const std::string& y_label, YScale scale,
                const std::string& dashed_key = "") {
  ChartSpec c{key, title, y_label, scale, {}, ""};
  for (size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    ChartSeries s{r.name, key, run_color(i), false, series_of(eval ? r.eval : r.train, key)};
    if (!s.points.empty()) c.series.push_back(std::move(s));
    if (dashed_key.empty()) continue;
    ChartSeries d{r.name, dashed_key, run_color(i), true, series_of(r.eval, dashed_key)};
    if (!d.points.empty()) c.series.push_back(std::move(d));
  }
  if (!dashed_key.empty() && any_has(runs, dashed_key, true))
    c.style_note = "solid: train \u00b7 dashed: validation";
  return c;
}

// For each line of a YAML text: its mapping path and content ("optimizer/lr: 0.001"), so lines
// of two configs compare by meaning rather than by position. Blank lines get "".
std::vector<std::string> config_line_keys(const std::string& yaml) {
  std::vector<std::string> keys;
  std::vector<std::pair<size_t, std::string>> parents;  // (indent, key)
  std::istringstream in(yaml);
  for (std::string line; std::getline(in, line);) {
    const size_t indent = line.find_first_not_of(' ');
    if (indent == std::string::npos || line[indent] == '#') {
      keys.emplace_back();
      continue;
    }
    const std::string content = line.substr(indent);
    const bool item = content.starts_with("- ");
    while (!parents.empty() &&
           (parents.back().first > indent || (parents.back().first == indent && !item)))
      parents.pop_back();
    std::string path;
    for (const auto& p : parents) path += p.second + "/";
    keys.push_back(path + content);
    if (content.back() == ':') parents.emplace_back(indent, content.substr(0, content.size() - 1));
  }
  return keys;
}

void configs(std::ostringstream& o, const std::vector<Run>& runs) {
  std::vector<std::vector<std::string>> keys;
  std::map<std::string, size_t> count;  // in how many configs a line (by its key) occurs
  size_t with_config = 0;
  for (const Run& r : runs) {
    keys.push_back(r.config_yaml ? config_line_keys(*r.config_yaml) : std::vector<std::string>{});
    if (!r.config_yaml) continue;
    ++with_config;
    for (const std::string& k : std::set<std::string>(keys.back().begin(), keys.back().end()))
      ++count[k];
  }
  if (with_config > 1)
    o << "<p class=\"sub\">Highlighted lines differ between the runs' configs.</p>\n";
  o << "<div class=\"configs\">\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    o << "<div class=\"card\"><h3>" << swatch(i) << html_escape(r.name)
      << "<span class=\"path\">config.resolved.yaml</span></h3>";
    if (!r.config_yaml) {
      o << "<pre class=\"muted\">no config.resolved.yaml in " << html_escape(r.path)
        << "</pre></div>\n";
      continue;
    }
    o << "<pre>";
    std::istringstream in(*r.config_yaml);
    size_t n = 0;
    for (std::string line; std::getline(in, line); ++n) {
      const bool differs =
          with_config > 1 && !keys[i][n].empty() && count[keys[i][n]] < with_config;
      o << (differs ? "<mark>" : "") << html_escape(line) << (differs ? "</mark>" : "") << "\n";
    }
    o << "</pre></div>\n";
  }
  o << "</div>\n";
}

}  // namespace

std::string run_color(size_t index) {
  static const char* kTableau[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  if (index < 10) return kTableau[index];
  // Further runs: hues a golden angle apart at a fixed saturation and lightness (HSL -> RGB).
  const double h = std::fmod(static_cast<double>(index) * 137.508, 360.0) / 60.0;
  const double s = 0.6, l = 0.45, c = (1 - std::abs(2 * l - 1)) * s;
  const double x = c * (1 - std::abs(std::fmod(h, 2.0) - 1)), m = l - c / 2;
  const double rgb[6][3] = {{c, x, 0}, {x, c, 0}, {0, c, x}, {0, x, c}, {x, 0, c}, {c, 0, x}};
  const double* p = rgb[static_cast<int>(h) % 6];
  char buf[8];
  std::snprintf(buf, sizeof(buf), "#%02x%02x%02x", static_cast<int>(std::lround((p[0] + m) * 255)),
                static_cast<int>(std::lround((p[1] + m) * 255)),
                static_cast<int>(std::lround((p[2] + m) * 255)));
  return buf;
}

std::string render_report(const std::vector<Run>& runs) {
  // Every chart spans the steps of every run, so charts line up one under the other.
  int64_t x_min = INT64_MAX, x_max = INT64_MIN;
  for (const Run& r : runs) {
    for (const auto* lines : {&r.train, &r.eval}) {
      if (lines->empty()) continue;
      x_min = std::min(x_min, lines->begin()->first);
      x_max = std::max(x_max, lines->rbegin()->first);
    }
  }
  std::vector<ChartSpec> train_charts = {
      chart(runs, "loss", false, "Loss", "loss", YScale::kAuto, "val_loss"),
      chart(runs, "lr", false, "Learning rate", "lr", YScale::kLinear),
      chart(runs, "grad_norm", false, "Gradient norm", "grad norm", YScale::kAuto),
      chart(runs, "tokens_per_s", false, "Throughput", "tokens/s", YScale::kLinear),
      chart(runs, "peak_mem_mb", false, "Peak memory", "MB", YScale::kLinear)};
  const std::vector<std::string> val_keys = eval_keys(runs);
  std::vector<ChartSpec> eval_charts;
  for (const std::string& k : val_keys)
    if (k != "val_loss") eval_charts.push_back(chart(runs, k, true, k, k, YScale::kLinear));

  for (auto* charts : {&train_charts, &eval_charts}) {
    for (ChartSpec& c : *charts) {
      c.x_min = x_min;
      c.x_max = x_max;
    }
  }
  std::string names;
  for (const Run& r : runs) names += (names.empty() ? "" : ", ") + r.name;
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    << "<title>hfrun report: " << html_escape(names) << "</title>\n<style>" << kStyle
    << "</style>\n</head>\n<body>\n<main>\n<h1>Training report</h1>\n<p class=\"sub\">"
    << runs.size() << (runs.size() == 1 ? " run" : " runs") << " \u00b7 hfrun " << version()
    << "</p>\n";
  summary_table(o, runs);
  o << "<h2>Training</h2>\n<div class=\"grid\">\n";
  for (const ChartSpec& c : train_charts) {
    if (c.series.empty()) continue;  // e.g. peak_mem_mb, when no run logged it
    o << "<div class=\"card\">" << render_chart_svg(c) << "</div>\n";
  }
  o << "</div>\n";
  if (!val_keys.empty()) {
    o << "<h2>Evaluation</h2>\n";
    eval_table(o, runs, val_keys);
    if (!eval_charts.empty()) {
      o << "<div class=\"grid\" style=\"margin-top:16px\">\n";
      for (const ChartSpec& c : eval_charts)
        o << "<div class=\"card\">" << render_chart_svg(c) << "</div>\n";
      o << "</div>\n";
    }
  }
  o << "<h2>Configuration</h2>\n";
  configs(o, runs);
  o << "</main>\n</body>\n</html>\n";
  return o.str();
}

}  // namespace hfrun::cli::report
