// One line chart of `hfrun report` as inline SVG: series of (step, value) points drawn over
// "nice" axes (ticks at 1/2/5 x 10^k, linear or log y), with grid lines, axis labels, a title
// and a legend. It renders without scripts; every series also carries its exact data as
// attributes, so a test (or a user) can read back what was drawn:
//   <svg data-chart="loss" data-yscale="log" ...>
//     <polyline data-run="RUN" data-key="loss" data-values="1:0.686466 20:0.699088" points=.../>
// data-values holds every point as "step:value" (value printed shortest round-trip, so it
// parses back to the same double); `points` holds the pixels, thinned to about two points per
// pixel column for long series.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hfrun::cli::report {

struct Point {
  int64_t step;
  double value;
};

struct ChartSeries {
  std::string run;    // the legend's label and data-run
  std::string key;    // the metrics key, data-key
  std::string color;  // "#rrggbb"
  bool dashed = false;
  std::vector<Point> points;  // ascending steps
};

enum class YScale { kLinear, kLog, kAuto };  // kAuto: log when positive and spanning > 1 decade

struct ChartSpec {
  std::string id;       // data-chart
  std::string title;    // above the plot
  std::string y_label;  // along the y axis
  YScale y_scale = YScale::kLinear;
  std::vector<ChartSeries> series;
  std::string style_note;  // e.g. "solid: train, dashed: validation"; empty for none
  // Steps the x axis spans at least (a report's charts share one step range); none when
  // x_max < x_min.
  int64_t x_min = 0, x_max = -1;
};

// The chart as an <svg> element (viewBox-sized, scales to its container's width).
std::string render_chart_svg(const ChartSpec& spec);

// Tick positions on [lo, hi] at multiples of 1, 2 or 5 x 10^k, about `target` of them; the
// returned range is widened to whole ticks (first and last tick).
std::vector<double> nice_linear_ticks(double lo, double hi, int target);
// Ticks for a log axis over [lo, hi] (both > 0): 1/2/5 x 10^k (powers of ten only beyond 8
// decades); the first and last enclose [lo, hi]. The chart labels them all up to 2 decades,
// else only the powers of ten (the rest are minor grid lines).
std::vector<double> nice_log_ticks(double lo, double hi);
// A tick label, short: "0", "0.25", "1.5k", "12M", "5e-4" (`sci`: "2e-3", not "0.002").
std::string format_tick(double v, bool sci = false);
// The labels of one axis's ticks, in one notation: scientific below 1 when any tick is < 1e-3.
std::vector<std::string> format_ticks(const std::vector<double>& ticks);
// The shortest text that parses back to the same double ("0.686466", "1e-05").
std::string format_exact(double v);
// Text made safe for HTML element content and attribute values.
std::string html_escape(const std::string& text);

}  // namespace hfrun::cli::report
