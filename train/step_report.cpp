#include "train/step_report.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "optim/optimizer.h"
#include "tensor/ops.h"

namespace hfrun::train::detail {

Poison nonfinite_fault(int rank, int64_t attempt) {
  const char* env = std::getenv("HFRUN_FAULT_NONFINITE");
  if (env == nullptr) return Poison::kNone;
  std::istringstream specs(env);
  for (std::string spec; std::getline(specs, spec, ',');) {
    int r = -1;
    long long first = 0, count = 1;
    char what[8] = "";
    if (std::sscanf(spec.c_str(), "%d:%lld:%lld:%7s", &r, &first, &count, what) < 2) continue;
    if (r != rank || attempt < first || attempt >= first + count) continue;
    return std::string(what) == "grad" ? Poison::kGrad : Poison::kLoss;
  }
  return Poison::kNone;
}

void poison_first_gradient(Accelerator& acc) {
  for (const optim::ParamRef& p : acc.optimizer().params()) {
    Tensor g = p.param.grad();
    if (!g.defined() || g.numel() == 0) continue;
    Tensor first = ops::narrow(ops::reshape(g, {g.numel()}), 0, 0, 1);
    ops::fill_(first, std::numeric_limits<double>::infinity());
    return;
  }
}

std::string nonfinite_reason(Accelerator& acc, double local_loss, double loss, double grad_norm) {
  const std::vector<std::string> all =
      acc.allgather_strings(std::isfinite(local_loss) ? "" : std::to_string(local_loss));
  std::string ranks;
  std::string value;
  for (size_t r = 0; r < all.size(); ++r) {
    if (all[r].empty()) continue;
    ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
    if (value.empty()) value = all[r];
  }
  char buf[64];
  if (!std::isfinite(loss)) {
    if (ranks.empty()) {
      std::snprintf(buf, sizeof buf, "loss %g", loss);
      return buf;
    }
    return "loss " + value + " on rank" + (ranks.find(',') == std::string::npos ? " " : "s ") +
           ranks;
  }
  std::snprintf(buf, sizeof buf, "grad_norm %g", grad_norm);
  return buf;
}

std::string format_metrics(const StepMetrics& m) {
  char buf[512];
  if (m.val_loss >= 0) {
    std::string extra;
    char part[64];
    if (m.val_accuracy >= 0) {
      std::snprintf(part, sizeof(part), ", \"val_accuracy\": %.6f", m.val_accuracy);
      extra += part;
    }
    if (m.val_f1 >= 0) {
      std::snprintf(part, sizeof(part), ", \"val_f1\": %.6f", m.val_f1);
      extra += part;
    }
    std::snprintf(buf, sizeof(buf), "{\"step\": %lld, \"val_loss\": %.6f%s, \"elapsed_s\": %.3f}",
                  static_cast<long long>(m.step), m.val_loss, extra.c_str(), m.elapsed_s);
  } else {
    std::snprintf(buf, sizeof(buf),
                  "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, "
                  "\"tokens_per_s\": %.1f, \"peak_mem_mb\": %.1f, \"elapsed_s\": %.3f",
                  static_cast<long long>(m.step), m.loss, m.lr, m.grad_norm, m.tokens_per_s,
                  m.peak_mem_mb, m.elapsed_s);
    std::string line = buf;
    if (m.loss_scale > 0) {
      std::snprintf(buf, sizeof(buf), ", \"loss_scale\": %.9g%s", m.loss_scale,
                    m.update_skipped ? ", \"update_skipped\": true" : "");
      line += buf;
    }
    return line + "}";
  }
  return buf;
}

}  // namespace hfrun::train::detail
