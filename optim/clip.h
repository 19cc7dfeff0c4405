// Global gradient-norm clipping as torch.nn.utils.clip_grad_norm_ with norm_type 2.
#pragma once

#include <vector>

#include "tensor/tensor.h"

namespace hfrun::optim {

// Sum of squares of every defined gradient of `params` (f32 grads, accumulated in double, in a
// fixed order independent of the thread count). The partial that a sharded (ZeRO) run
// all-reduces before taking the square root. With loss scaling, inv_scale != 1 unscales the
// gradients in place in the same pass (GradScaler::unscale and this in one): the sum is then
// the unscaled gradients', and inf or NaN exactly when one of them is (so, across ranks, a
// finite global norm means no rank overflowed). The gradients must then be contiguous.
double grad_norm_squared(const std::vector<Tensor>& params, float inv_scale = 1.0f);

// Multiplies every defined gradient of `params` by `coef` in place (f32 arithmetic).
void scale_grads(const std::vector<Tensor>& params, double coef);

// The clip coefficient torch applies for a total norm: max_norm / (total_norm + 1e-6) in f32,
// clamped to at most 1. Returns 1 (no clipping) for a non-finite total norm.
double clip_coefficient(double total_norm, double max_norm);

// total = sqrt(grad_norm_squared(params)); when clip_coefficient(total, max_norm) < 1 the grads
// are scaled by it. Returns total. A non-finite total (inf/NaN gradients) is returned with the
// grads untouched: the caller decides (skip the step, reduce the loss scale). max_norm > 0.
// inv_scale != 1: the gradients are unscaled first, in the norm's pass (grad_norm_squared).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, float inv_scale = 1.0f);

}  // namespace hfrun::optim
