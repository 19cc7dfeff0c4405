// The Accelerator's private state, shared by the files that implement it (accelerator.cpp:
// construction, prepare, backward, collectives; accelerator_step.cpp: clipping, unscaling, the
// optimizer step; accelerator_checkpoint.cpp: save, restore, state dicts). Not a public header.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "common/stop_signals.h"
#include "train/accelerator.h"
#include "train/distributed_setup.h"

namespace hfrun::train {

struct Accelerator::State {
  AcceleratorOptions options;
  std::unique_ptr<DataParallel> dp;  // null on one process
  nn::Module* model = nullptr;
  std::unique_ptr<optim::Optimizer> optimizer;
  std::vector<ParamSlice> slices;  // where each optimizer parameter sits in the model
  std::vector<Tensor> prepared;  // the parameters prepare() hands to make_optimizer (until adopted)
  // The optimizer updates exactly those, whose gradients clip_grad_norm() measures: it may then
  // unscale them in the norm's pass, and an overflow shows as a non-finite norm.
  bool clip_covers_optimizer = false;
  bool model_prepared = false;
  Device device = Device::cpu();
  optim::GradScaler scaler;
  std::optional<StopSignals> stop_signals;
};

}  // namespace hfrun::train
