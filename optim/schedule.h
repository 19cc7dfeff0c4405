// Learning-rate schedules as Hugging Face transformers' get_{constant,linear,cosine}_schedule_
// with_warmup: the LambdaLR multiplier lr_lambda(current_step). The lr used by optimizer step s
// (counting from 0) is base_lr * lr_multiplier(type, s, ...).
#pragma once

#include <cstdint>
#include <string>

namespace hfrun::optim {

enum class ScheduleType { kConstant, kLinear, kCosine };

// "constant" | "linear" | "cosine"; anything else is an input error naming the value.
ScheduleType parse_schedule_type(const std::string& name);
const char* schedule_type_name(ScheduleType type);

// step < warmup_steps: step / max(1, warmup_steps); then
//   constant: 1
//   linear:   max(0, (total_steps - step) / max(1, total_steps - warmup_steps))
//   cosine:   max(0, 0.5 (1 + cos(pi * num_cycles * 2 * progress))),
//             progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
// (total_steps and num_cycles are unused by constant.)
double lr_multiplier(ScheduleType type, int64_t step, int64_t warmup_steps, int64_t total_steps,
                     double num_cycles = 0.5);

}  // namespace hfrun::optim
