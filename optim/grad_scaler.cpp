#include "optim/grad_scaler.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "tensor/backend.h"
#include "tensor/ops.h"

namespace hfrun::optim {

GradScaler::GradScaler(GradScalerOptions options) : options_(options) {
  const GradScalerOptions& o = options_;
  HF_CHECK_INPUT(std::isfinite(o.init_scale) && o.init_scale > 0 &&
                     std::isfinite(static_cast<float>(o.init_scale)),
                 "GradScaler: init_scale ", o.init_scale, " must be a positive f32 number");
  HF_CHECK_INPUT(o.growth_factor > 1, "GradScaler: growth_factor ", o.growth_factor,
                 " must be > 1");
  HF_CHECK_INPUT(o.backoff_factor > 0 && o.backoff_factor < 1, "GradScaler: backoff_factor ",
                 o.backoff_factor, " must be in (0, 1)");
  HF_CHECK_INPUT(o.growth_interval >= 1, "GradScaler: growth_interval ", o.growth_interval,
                 " must be at least 1");
  scale_ = static_cast<float>(o.init_scale);
}

float GradScaler::inv_scale() const {
  return static_cast<float>(1.0 / static_cast<double>(scale()));
}

bool GradScaler::unscale(const std::vector<Tensor>& params) const {
  if (!enabled()) return false;
  // Per device, in parameter order (normally one device: one pass, one host read).
  std::vector<std::pair<Device, std::vector<Tensor>>> by_device;
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor g = params[i].grad();
    if (!g.defined()) continue;
    HF_CHECK(g.dtype() == DType::kF32 && g.is_contiguous(), "GradScaler::unscale: gradient of ",
             "parameter ", i, " is ", g.str(), "; contiguous f32 gradients required");
    auto it = std::find_if(by_device.begin(), by_device.end(),
                           [&](const auto& d) { return d.first == g.device(); });
    if (it == by_device.end()) it = by_device.insert(by_device.end(), {g.device(), {}});
    it->second.push_back(std::move(g));
  }
  const float inv = inv_scale();
  bool found = false;
  for (const auto& [device, grads] : by_device) {
    found = backend_for(device).unscale_grads(grads, inv) || found;
  }
  return found;
}

void GradScaler::update(bool found_inf) {
  if (!enabled()) return;
  if (found_inf) {
    scale_ = static_cast<float>(static_cast<double>(scale_) * options_.backoff_factor);
    growth_tracker_ = 0;
    return;
  }
  const int64_t successful = growth_tracker_ + 1;
  if (successful == options_.growth_interval) {
    const float grown = static_cast<float>(static_cast<double>(scale_) * options_.growth_factor);
    if (std::isfinite(grown)) scale_ = grown;
    growth_tracker_ = 0;
  } else {
    growth_tracker_ = successful;
  }
}

void GradScaler::load(const GradScalerState& s) {
  HF_CHECK_INPUT(std::isfinite(s.scale) && s.scale >= 0 && s.growth_tracker >= 0,
                 "GradScaler: saved state (scale ", s.scale, ", growth_tracker ", s.growth_tracker,
                 ") is not a finite scale >= 0 and a count >= 0");
  scale_ = s.scale;
  growth_tracker_ = s.growth_tracker;
}

}  // namespace hfrun::optim
