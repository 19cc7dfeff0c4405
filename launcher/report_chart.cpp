// hfrun report: line charts as inline SVG (see report_chart.h for what a chart carries).
#include "launcher/report_chart.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

namespace hfrun::cli::report {
namespace {

// Layout in SVG user units (the viewBox; the page scales it to the column width).
constexpr double kWidth = 600;
constexpr double kLeft = 66, kRight = 18;  // room for y tick labels and the y label
constexpr double kPlotHeight = 230;
constexpr double kBottom = 46;  // x tick labels and the x label
constexpr double kLegendRow = 18;
constexpr double kLegendTop = 42;    // the first legend row's baseline
constexpr int kLegendMaxRows = 3;    // beyond that the chart points to the page's run table
constexpr double kCharWidth = 6.4;   // of 11px sans text, to lay out the legend
constexpr size_t kMarkersUpTo = 60;  // series this short get a marker (with a tooltip) per point

std::string num(double v) {  // a pixel coordinate
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

std::string format_g(double v, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.*g", digits, v);
  return buf;
}

bool is_power_of_ten(double v) {
  const double e = std::log10(v);
  return std::abs(e - std::round(e)) < 1e-9;
}

// Maps data to pixels on one axis; log axes map log10 of the value.
struct Axis {
  double lo, hi;          // data range (the first and last tick)
  double pix_lo, pix_hi;  // pixels of lo and hi
  bool log = false;
  double operator()(double v) const {
    const double t = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo))
                         : (v - lo) / (hi - lo);
    return pix_lo + t * (pix_hi - pix_lo);
  }
};

struct LegendItem {
  std::string run, color;
  double x, y;
};

// Legend entries flow left to right under the title, wrapping at the chart's width.
std::vector<LegendItem> layout_legend(const std::vector<ChartSeries>& series, double top) {
  std::vector<LegendItem> items;
  double x = kLeft, y = top;
  for (const ChartSeries& s : series) {
    bool seen = false;
    for (const LegendItem& it : items) seen = seen || it.run == s.run;
    if (seen) continue;
    const double w = 22 + kCharWidth * static_cast<double>(std::min<size_t>(s.run.size(), 40)) + 18;
    if (x + w > kWidth - kRight && x > kLeft) {
      x = kLeft;
      y += kLegendRow;
    }
    items.push_back({s.run, s.color, x, y});
    x += w;
  }
  return items;
}

std::string shorten(const std::string& s, size_t n) {
  return s.size() <= n ? s : s.substr(0, n - 1) + "\u2026";
}

// The pixels of a series: every point, or for long series the first, lowest, highest and last
// point of each pixel column (the line looks the same; the file stays small).
std::vector<std::pair<double, double>> pixels(const std::vector<Point>& points, const Axis& x,
                                              const Axis& y) {
  std::vector<std::pair<double, double>> all;
  all.reserve(points.size());
  for (const Point& p : points) all.emplace_back(x(static_cast<double>(p.step)), y(p.value));
  if (all.size() <= 4 * static_cast<size_t>(kWidth)) return all;
  std::vector<std::pair<double, double>> out;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    size_t lo = i, hi = i;
    const double column = std::floor(all[i].first);
    while (j < all.size() && std::floor(all[j].first) == column) {
      if (all[j].second < all[lo].second) lo = j;
      if (all[j].second > all[hi].second) hi = j;
      ++j;
    }
    size_t keep[4] = {i, std::min(lo, hi), std::max(lo, hi), j - 1};
    for (int k = 0; k < 4; ++k)
      if (k == 0 || keep[k] != keep[k - 1]) out.push_back(all[keep[k]]);
    i = j;
  }
  return out;
}

}  // namespace

std::vector<double> nice_linear_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) {  // one value: a range around it
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.05;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double r = raw / mag;
  const double step = (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
  const double k0 = std::floor(lo / step + 1e-9), k1 = std::ceil(hi / step - 1e-9);
  std::vector<double> ticks;
  for (double k = k0; k <= k1; k += 1) ticks.push_back(k == 0 ? 0.0 : k * step);
  return ticks;
}

std::vector<double> nice_log_ticks(double lo, double hi) {
  const int e0 = static_cast<int>(std::floor(std::log10(lo) + 1e-12));
  int e1 = static_cast<int>(std::ceil(std::log10(hi) - 1e-12));
  if (e1 <= e0) e1 = e0 + 1;
  const bool powers_only = e1 - e0 > 8;
  std::vector<double> candidates;
  for (int e = e0; e <= e1; ++e) {
    const double p = std::pow(10.0, e);
    candidates.push_back(p);
    if (!powers_only && e < e1) {
      candidates.push_back(2 * p);
      candidates.push_back(5 * p);
    }
  }
  size_t first = 0, last = candidates.size() - 1;
  while (first + 1 < candidates.size() && candidates[first + 1] <= lo * (1 + 1e-12)) ++first;
  while (last > first + 1 && candidates[last - 1] >= hi * (1 - 1e-12)) --last;
  return std::vector<double>(candidates.begin() + static_cast<std::ptrdiff_t>(first),
                             candidates.begin() + static_cast<std::ptrdiff_t>(last) + 1);
}

std::string format_tick(double v, bool sci) {
  if (v == 0) return "0";
  const double a = std::abs(v);
  if (a >= 1e3 && a < 1e12) {
    const char* suffix = a >= 1e9 ? "G" : a >= 1e6 ? "M" : "k";
    const double scale = a >= 1e9 ? 1e9 : a >= 1e6 ? 1e6 : 1e3;
    return format_g(v / scale, 4) + suffix;
  }
  if (a >= 1 && a < 1e3) return format_g(v, 4);
  if (a >= 1e-3 && a < 1 && !sci) return format_g(v, 4);
  const int e = static_cast<int>(std::floor(std::log10(a) + 1e-9));
  return format_g(v / std::pow(10.0, e), 3) + "e" + std::to_string(e);
}

std::vector<std::string> format_ticks(const std::vector<double>& ticks) {
  bool sci = false;
  for (double t : ticks) sci = sci || (t != 0 && std::abs(t) < 1e-3);
  std::vector<std::string> labels;
  for (double t : ticks) labels.push_back(format_tick(t, sci));
  return labels;
}

std::string format_exact(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string render_chart_svg(const ChartSpec& spec) {
  // Data ranges over every series.
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin;
  double ymin = xmin, ymax = -xmin;
  for (const ChartSeries& s : spec.series) {
    for (const Point& p : s.points) {
      xmin = std::min(xmin, static_cast<double>(p.step));
      xmax = std::max(xmax, static_cast<double>(p.step));
      ymin = std::min(ymin, p.value);
      ymax = std::max(ymax, p.value);
    }
  }
  if (!(xmin <= xmax)) xmin = xmax = ymin = ymax = 0;  // no points: an empty frame
  if (spec.x_min <= spec.x_max) {
    xmin = std::min(xmin, static_cast<double>(spec.x_min));
    xmax = std::max(xmax, static_cast<double>(spec.x_max));
  }
  const bool log = ymin > 0 && (spec.y_scale == YScale::kLog ||
                                (spec.y_scale == YScale::kAuto && ymax / ymin > 10));

  // Title, then the legend rows (or, for many runs, a pointer to the run table), then the plot.
  std::vector<LegendItem> legend = layout_legend(spec.series, kLegendTop);
  const bool legend_fits =
      legend.empty() || legend.back().y < kLegendTop + kLegendMaxRows * kLegendRow;
  if (!legend_fits) legend.clear();
  const double legend_bottom = legend_fits && legend.empty() ? 30
                               : legend_fits                 ? legend.back().y + 8
                                                             : kLegendTop + 8;
  const double top = legend_bottom + 12, bottom = top + kPlotHeight;
  const double height = bottom + kBottom;

  std::vector<double> xticks = nice_linear_ticks(xmin, xmax == xmin ? xmin + 1 : xmax, 6);
  if (xticks.size() > 1 && xticks[1] - xticks[0] < 1) {  // steps are integers
    xticks.clear();
    for (double s = std::floor(xmin); s <= std::ceil(xmax == xmin ? xmin + 1 : xmax); ++s)
      xticks.push_back(s);
  }
  const std::vector<double> yticks =
      log ? nice_log_ticks(ymin, ymax) : nice_linear_ticks(ymin, ymax, 5);
  // The x axis ends at the last step (as TensorBoard's), not at the next round tick.
  const double x_hi = xmax > xticks.front() ? xmax : xticks.back();
  while (xticks.size() > 1 && xticks.back() > x_hi + 1e-9) xticks.pop_back();
  const Axis x{xticks.front(), x_hi, kLeft, kWidth - kRight};
  const Axis y{yticks.front(), yticks.back(), bottom, top, log};
  // On a log axis spanning many decades only powers of ten are labelled (the rest are minor).
  const bool label_all_y = !log || std::log10(y.hi / y.lo) <= 2.01;

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 " << kWidth << ' '
    << num(height) << "\" width=\"" << kWidth << "\" height=\"" << num(height) << "\" data-chart=\""
    << html_escape(spec.id) << "\" data-yscale=\"" << (log ? "log" : "linear")
    << "\" role=\"img\" aria-label=\"" << html_escape(spec.title) << "\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
  o << "<text class=\"title\" x=\"14\" y=\"22\">" << html_escape(spec.title)
    << (log ? " <tspan class=\"note\">(log scale)</tspan>" : "") << "</text>\n";
  if (!spec.style_note.empty())
    o << "<text class=\"note\" x=\"" << kWidth - kRight << "\" y=\"22\" text-anchor=\"end\">"
      << html_escape(spec.style_note) << "</text>\n";
  if (!legend_fits)
    o << "<text class=\"note\" x=\"" << kLeft << "\" y=\"" << kLegendTop
      << "\">colours as in the run table</text>\n";
  for (const LegendItem& it : legend) {
    o << "<g class=\"legend\"><line x1=\"" << num(it.x) << "\" y1=\"" << num(it.y - 4) << "\" x2=\""
      << num(it.x + 16) << "\" y2=\"" << num(it.y - 4) << "\" stroke=\"" << it.color
      << "\" stroke-width=\"3\"/><text x=\"" << num(it.x + 22) << "\" y=\"" << num(it.y)
      << "\"><title>" << html_escape(it.run) << "</title>" << html_escape(shorten(it.run, 40))
      << "</text></g>\n";
  }

  // Grid, axes, tick labels.
  o << "<g class=\"grid\">\n";
  for (double t : yticks) {
    const bool major = label_all_y || is_power_of_ten(t);
    o << "<line x1=\"" << num(kLeft) << "\" x2=\"" << num(kWidth - kRight) << "\" y1=\""
      << num(y(t)) << "\" y2=\"" << num(y(t)) << "\"" << (major ? "" : " class=\"minor\"")
      << "/>\n";
  }
  for (double t : xticks)
    o << "<line x1=\"" << num(x(t)) << "\" x2=\"" << num(x(t)) << "\" y1=\"" << num(top)
      << "\" y2=\"" << num(bottom) << "\" class=\"minor\"/>\n";
  o << "</g>\n<g class=\"axis\">\n";
  o << "<line x1=\"" << num(kLeft) << "\" x2=\"" << num(kWidth - kRight) << "\" y1=\""
    << num(bottom) << "\" y2=\"" << num(bottom) << "\"/>\n";
  o << "<line x1=\"" << num(kLeft) << "\" x2=\"" << num(kLeft) << "\" y1=\"" << num(top)
    << "\" y2=\"" << num(bottom) << "\"/>\n";
  const std::vector<std::string> ylabels = format_ticks(yticks);
  for (size_t i = 0; i < yticks.size(); ++i) {
    if (!label_all_y && !is_power_of_ten(yticks[i])) continue;
    o << "<text x=\"" << num(kLeft - 7) << "\" y=\"" << num(y(yticks[i]))
      << "\" dy=\"0.32em\" text-anchor=\"end\">" << ylabels[i] << "</text>\n";
  }
  for (double t : xticks)
    o << "<text x=\"" << num(x(t)) << "\" y=\"" << num(bottom + 16) << "\" text-anchor=\"middle\">"
      << format_tick(t) << "</text>\n";
  o << "<text class=\"label\" x=\"" << num((kLeft + kWidth - kRight) / 2) << "\" y=\""
    << num(bottom + 36) << "\" text-anchor=\"middle\">step</text>\n";
  o << "<text class=\"label\" transform=\"translate(16 " << num((top + bottom) / 2)
    << ") rotate(-90)\" text-anchor=\"middle\">" << html_escape(spec.y_label) << "</text>\n";
  o << "</g>\n";

  // The series: a polyline each (with its exact data), markers with tooltips when short.
  for (const ChartSeries& s : spec.series) {
    if (s.points.empty()) continue;
    o << "<polyline class=\"series\" data-run=\"" << html_escape(s.run) << "\" data-key=\""
      << html_escape(s.key) << "\" data-values=\"";
    for (size_t i = 0; i < s.points.size(); ++i)
      o << (i ? " " : "") << s.points[i].step << ':' << format_exact(s.points[i].value);
    o << "\" fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"2\""
      << (s.dashed ? " stroke-dasharray=\"6 4\"" : "") << " points=\"";
    const auto px = pixels(s.points, x, y);
    for (size_t i = 0; i < px.size(); ++i)
      o << (i ? " " : "") << num(px[i].first) << ',' << num(px[i].second);
    o << "\"><title>" << html_escape(s.run) << " \u00b7 " << html_escape(s.key)
      << "</title></polyline>\n";
    if (s.points.size() > kMarkersUpTo) continue;
    o << "<g class=\"markers\" fill=\"" << (s.dashed ? "#fff" : s.color) << "\" stroke=\""
      << s.color << "\">";
    for (const Point& p : s.points) {
      o << "<circle cx=\"" << num(x(static_cast<double>(p.step))) << "\" cy=\"" << num(y(p.value))
        << "\" r=\"" << (s.dashed ? "3" : "2.2") << "\"><title>" << html_escape(s.run) << " \u00b7 "
        << html_escape(s.key) << " at step " << p.step << ": " << format_g(p.value, 6)
        << "</title></circle>";
    }
    o << "</g>\n";
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace hfrun::cli::report
