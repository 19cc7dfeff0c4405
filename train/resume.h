// How a training run picks up where an earlier one stopped (train.yaml checkpoint.resume).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "train/config.h"

namespace hfrun::train {

// "sha256:<hex>" of the resolved configuration without output_dir and the checkpoint section
// (they do not change what is trained), recorded in every checkpoint's manifest.
std::string config_hash(const TrainConfig& config);

// Rewrites metrics.jsonl keeping only the lines of steps <= `step` (so a resumed run appends
// after its checkpoint without repeating steps); lines without a readable "step" (a line cut
// short by a crash) are dropped. A missing file is left missing. Atomic (temp + rename).
void truncate_metrics(const std::string& path, int64_t step);

}  // namespace hfrun::train
