// Dynamic loss scaling, as torch.cuda.amp.GradScaler: the loss is multiplied by a scale before
// backward so that small f16 gradients do not flush to zero; the gradients are divided by it
// again (unscaled) before clipping and the update; a step whose gradients hold an inf or NaN
// (the scale made them overflow) makes no update and halves the scale (backoff_factor), and
// every growth_interval clean steps in a row double it (growth_factor).
//
//   GradScaler scaler({.enabled = true});
//   autograd::backward(mul_scalar(loss, scaler.scale()));
//   const bool found_inf = scaler.unscale(params);  // grads /= scale; any inf or NaN?
//   if (!found_inf) optimizer.step();
//   scaler.update(found_inf);
//
// The arithmetic is torch's to the bit: the scale is an f32, inv_scale = f32(1 / f64(scale)),
// growth and backoff multiply the f32 scale by the f64 factor and narrow to f32, and a grown
// scale that is not finite is not taken (ATen's AmpKernels.cu). The Accelerator drives it across
// ranks (train/accelerator.h); here it is one process's state machine.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace hfrun::optim {

struct GradScalerOptions {
  bool enabled = false;
  double init_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;   // > 1
  double backoff_factor = 0.5;  // in (0, 1)
  int64_t growth_interval = 2000;
};

// What a checkpoint keeps (torch's GradScaler.state_dict(): scale and _growth_tracker).
struct GradScalerState {
  float scale = 0;
  int64_t growth_tracker = 0;
};

class GradScaler {
 public:
  // Checks the options (an hfrun::Error of kind invalid input names the bad one).
  explicit GradScaler(GradScalerOptions options = {});

  bool enabled() const { return options_.enabled; }
  const GradScalerOptions& options() const { return options_; }
  // The factor the loss is multiplied by before backward (1 when disabled).
  float scale() const { return enabled() ? scale_ : 1.0f; }
  // f32(1 / f64(scale)), the factor unscale() multiplies the gradients by.
  float inv_scale() const;
  // Multiplies every defined gradient of `params` (f32) by inv_scale() in place and returns
  // whether any element was inf or NaN before (this process's gradients only). Disabled: checks
  // nothing and returns false.
  bool unscale(const std::vector<Tensor>& params) const;
  // After the step: with found_inf the scale backs off and the count of clean steps restarts;
  // otherwise the count grows and at growth_interval the scale grows. No-op when disabled.
  void update(bool found_inf);
  // Clean steps since the last backoff or growth.
  int64_t growth_tracker() const { return growth_tracker_; }

  GradScalerState state() const { return {scale_, growth_tracker_}; }
  void load(const GradScalerState& s);

 private:
  GradScalerOptions options_;
  float scale_ = 0;
  int64_t growth_tracker_ = 0;
};

}  // namespace hfrun::optim
