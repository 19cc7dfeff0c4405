#include "optim/clip.h"

#include <algorithm>
#include <cmath>

#include "optim/fused.h"
#include "tensor/ops.h"

namespace hfrun::optim {
namespace {

const Tensor* checked_grad(const Tensor& param, size_t i, Tensor& holder) {
  holder = param.grad();
  if (!holder.defined()) return nullptr;
  HF_CHECK(holder.dtype() == DType::kF32, "clip_grad_norm: gradient of parameter ", i, " is ",
           holder.str(), "; f32 gradients required");
  HF_CHECK(holder.device().is_cpu(), "clip_grad_norm: gradient of parameter ", i, " is on ",
           holder.device().str(), "; only CPU gradients are supported");
  return &holder;
}

// Sum of squares of a contiguous f32 range: per-chunk double partials summed in chunk order.
double sum_squares(const float* x, int64_t n) {
  const int64_t chunks = (n + detail::kChunk - 1) / detail::kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  cpu::parallel_for(chunks, detail::kChunk, [&](int64_t c) {
    const int64_t lo = c * detail::kChunk, hi = std::min(n, lo + detail::kChunk);
    // Independent lanes: one accumulator would be a serial chain of dependent adds.
    constexpr int64_t kLanes = 16;
    double acc[kLanes] = {};
    int64_t i = lo;
    for (; i + kLanes <= hi; i += kLanes) {
      for (int64_t l = 0; l < kLanes; ++l) acc[l] += static_cast<double>(x[i + l]) * x[i + l];
    }
    for (; i < hi; ++i) acc[0] += static_cast<double>(x[i]) * x[i];
    double sum = 0;
    for (double a : acc) sum += a;
    partial[static_cast<size_t>(c)] = sum;
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

double grad_norm_squared(const std::vector<Tensor>& params) {
  double total = 0;
  Tensor holder;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor* g = checked_grad(params[i], i, holder);
    if (!g) continue;
    Tensor c = ops::contiguous(*g);
    total += sum_squares(c.data<float>(), c.numel());
  }
  return total;
}

void scale_grads(const std::vector<Tensor>& params, double coef) {
  const float coef_f = static_cast<float>(coef);
  Tensor holder;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor* g = checked_grad(params[i], i, holder);
    if (!g) continue;
    float* x = g->data<float>();
    detail::for_each_element(*g, *g, [=](int64_t ip, int64_t, int64_t) { x[ip] *= coef_f; });
  }
}

double clip_coefficient(double total_norm, double max_norm) {
  if (!std::isfinite(total_norm)) return 1.0;
  // In f32, as torch computes it on the f32 norm tensor, so clipped grads match bit for bit.
  const float coef = static_cast<float>(max_norm) / (static_cast<float>(total_norm) + 1e-6f);
  return std::min(1.0, static_cast<double>(coef));
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  HF_CHECK_INPUT(max_norm > 0, "clip_grad_norm: max_norm must be > 0, got ", max_norm,
                 " (a grad_clip of 0 means: do not call it)");
  const double total = std::sqrt(grad_norm_squared(params));
  const double coef = clip_coefficient(total, max_norm);
  if (coef < 1.0) scale_grads(params, coef);
  return total;
}

}  // namespace hfrun::optim
