#include "optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "common/error.h"

namespace hfrun::optim {

ScheduleType parse_schedule_type(const std::string& name) {
  if (name == "constant") return ScheduleType::kConstant;
  if (name == "linear") return ScheduleType::kLinear;
  if (name == "cosine") return ScheduleType::kCosine;
  HF_CHECK_INPUT(false, "unknown scheduler type '", name,
                 "' (expected constant, linear or cosine)");
  return ScheduleType::kConstant;
}

const char* schedule_type_name(ScheduleType type) {
  switch (type) {
    case ScheduleType::kConstant:
      return "constant";
    case ScheduleType::kLinear:
      return "linear";
    case ScheduleType::kCosine:
      return "cosine";
  }
  return "?";
}

double lr_multiplier(ScheduleType type, int64_t step, int64_t warmup_steps, int64_t total_steps,
                     double num_cycles) {
  HF_CHECK_INPUT(step >= 0 && warmup_steps >= 0, "lr schedule: step (", step,
                 ") and warmup_steps (", warmup_steps, ") must be >= 0");
  if (step < warmup_steps) {
    return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  }
  if (type == ScheduleType::kConstant) return 1.0;
  const double decay_steps = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  if (type == ScheduleType::kLinear) {
    return std::max(0.0, static_cast<double>(total_steps - step) / decay_steps);
  }
  const double progress = static_cast<double>(step - warmup_steps) / decay_steps;
  return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * num_cycles * 2.0 * progress)));
}

}  // namespace hfrun::optim
