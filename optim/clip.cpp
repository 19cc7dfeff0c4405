#include "optim/clip.h"

#include <algorithm>
#include <cmath>

#include "tensor/backend.h"
#include "tensor/ops.h"

namespace hfrun::optim {
namespace {

const Tensor* checked_grad(const Tensor& param, size_t i, Tensor& holder) {
  holder = param.grad();
  if (!holder.defined()) return nullptr;
  HF_CHECK(holder.dtype() == DType::kF32, "clip_grad_norm: gradient of parameter ", i, " is ",
           holder.str(), "; f32 gradients required");
  return &holder;
}

}  // namespace

double grad_norm_squared(const std::vector<Tensor>& params, float inv_scale) {
  // Per device (normally one), in parameter order: each backend sums its gradients' squares in
  // double in an order fixed by the sizes (the CPU: per-chunk partials; a GPU: one launch over
  // every gradient, partials summed in a fixed tree), and copies the total to the host.
  std::vector<std::pair<Device, std::vector<Tensor>>> by_device;
  Tensor holder;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor* g = checked_grad(params[i], i, holder);
    if (!g) continue;
    auto it = std::find_if(by_device.begin(), by_device.end(),
                           [&](const auto& d) { return d.first == g->device(); });
    if (it == by_device.end()) it = by_device.insert(by_device.end(), {g->device(), {}});
    // Unscaling writes the gradients: it needs them themselves, not contiguous copies.
    HF_CHECK(inv_scale == 1.0f || g->is_contiguous(), "clip_grad_norm: gradient of parameter ", i,
             " is ", g->str(), "; unscaling needs contiguous gradients");
    it->second.push_back(ops::contiguous(*g));
  }
  double total = 0;
  for (const auto& [device, grads] : by_device) {
    total += backend_for(device).sum_squares(grads, inv_scale);
  }
  return total;
}

void scale_grads(const std::vector<Tensor>& params, double coef) {
  Tensor holder;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor* g = checked_grad(params[i], i, holder);
    if (!g) continue;
    // x *= f32(coef) in f32, as torch's grads.mul_(clip_coef_clamped).
    if (g->is_contiguous()) {
      Tensor x = *g;
      backend_for(x.device()).scale(x, coef);
    } else {
      Tensor c = ops::contiguous(*g);
      backend_for(c.device()).scale(c, coef);
      Tensor x = *g;
      ops::copy_(x, c);
    }
  }
}

double clip_coefficient(double total_norm, double max_norm) {
  if (!std::isfinite(total_norm)) return 1.0;
  // In f32, as torch computes it on the f32 norm tensor, so clipped grads match bit for bit.
  const float coef = static_cast<float>(max_norm) / (static_cast<float>(total_norm) + 1e-6f);
  return std::min(1.0, static_cast<double>(coef));
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, float inv_scale) {
  HF_CHECK_INPUT(max_norm > 0, "clip_grad_norm: max_norm must be > 0, got ", max_norm,
                 " (a grad_clip of 0 means: do not call it)");
  const double total = std::sqrt(grad_norm_squared(params, inv_scale));
  const double coef = clip_coefficient(total, max_norm);
  if (coef < 1.0) scale_grads(params, coef);
  return total;
}

}  // namespace hfrun::optim
