// Global gradient-norm clipping as torch.nn.utils.clip_grad_norm_ with norm_type 2.
#pragma once

#include <vector>

#include "tensor/tensor.h"

namespace hfrun::optim {

// Sum of squares of every defined gradient of `params` (f32 grads, accumulated in double, in a
// fixed order independent of the thread count). The partial that a sharded (ZeRO) run
// all-reduces before taking the square root.
double grad_norm_squared(const std::vector<Tensor>& params);

// Multiplies every defined gradient of `params` by `coef` in place (f32 arithmetic).
void scale_grads(const std::vector<Tensor>& params, double coef);

// The clip coefficient torch applies for a total norm: max_norm / (total_norm + 1e-6) in f32,
// clamped to at most 1. Returns 1 (no clipping) for a non-finite total norm.
double clip_coefficient(double total_norm, double max_norm);

// total = sqrt(grad_norm_squared(params)); when clip_coefficient(total, max_norm) < 1 the grads
// are scaled by it. Returns total. A non-finite total (inf/NaN gradients) is returned with the
// grads untouched: the caller decides (skip the step, reduce the loss scale). max_norm > 0.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace hfrun::optim
