// AdamW as torch.optim.AdamW's single-tensor path (torch/optim/adamw.py, _single_tensor_adamw),
// fused into one pass. Scalars are computed in double as Python does and rounded to f32 where
// torch passes them to an f32 kernel; per element the f32 operations run in torch's order and
// round where its AVX2 kernels round (detail::madd where they fuse a multiply-add):
//   param.mul_(1 - lr * wd)
//   exp_avg.mul_(b1).add_(grad, alpha=1 - b1)
//   exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
//   denom = (exp_avg_sq.sqrt() / sqrt(1 - b2^t)).add_(eps)
//   param.addcdiv_(exp_avg, denom, value=-lr / (1 - b1^t))
#include <cmath>

#include "optim/fused.h"
#include "optim/optimizer.h"

namespace hfrun::optim {

AdamW::AdamW(std::vector<ParamRef> params, AdamWOptions options)
    : Optimizer(std::move(params), options.lr, "AdamW"), options_(options) {
  const auto& o = options_;
  HF_CHECK_INPUT(o.betas[0] >= 0 && o.betas[0] < 1, "AdamW: betas[0] must be in [0, 1), got ",
                 o.betas[0]);
  HF_CHECK_INPUT(o.betas[1] >= 0 && o.betas[1] < 1, "AdamW: betas[1] must be in [0, 1), got ",
                 o.betas[1]);
  HF_CHECK_INPUT(o.eps >= 0, "AdamW: eps must be >= 0, got ", o.eps);
  HF_CHECK_INPUT(o.weight_decay >= 0, "AdamW: weight_decay must be >= 0, got ", o.weight_decay);
  add_state_kind("exp_avg");
  add_state_kind("exp_avg_sq");
}

void AdamW::update(size_t i, const Tensor& grad, int64_t param_step) {
  const double lr = this->lr();
  const double b1 = options_.betas[0], b2 = options_.betas[1];
  const double wd = params()[i].decay ? options_.weight_decay : 0.0;
  const double t = static_cast<double>(param_step);
  const double bias_correction1 = 1 - std::pow(b1, t);
  const double bias_correction2 = 1 - std::pow(b2, t);
  const float decay_f = static_cast<float>(1 - lr * wd);
  const float b1_f = static_cast<float>(b1), one_minus_b1_f = static_cast<float>(1 - b1);
  const float b2_f = static_cast<float>(b2), one_minus_b2_f = static_cast<float>(1 - b2);
  const float bc2_sqrt_f = static_cast<float>(std::sqrt(bias_correction2));
  const float eps_f = static_cast<float>(options_.eps);
  const float neg_step_size_f = static_cast<float>(-(lr / bias_correction1));

  float* p = params()[i].param.data<float>();
  const float* g = grad.data<float>();
  float* m = state(0, i).data<float>();
  float* v = state(1, i).data<float>();
  detail::for_each_element(params()[i].param, grad, [=](int64_t ip, int64_t ig, int64_t is) {
    const float gi = g[ig];
    const float pi = p[ip] * decay_f;
    const float mi = detail::madd(gi, one_minus_b1_f, m[is] * b1_f);
    const float vi = detail::madd(one_minus_b2_f * gi, gi, v[is] * b2_f);
    const float denom = std::sqrt(vi) / bc2_sqrt_f + eps_f;
    m[is] = mi;
    v[is] = vi;
    p[ip] = pi + neg_step_size_f * mi / denom;
  });
}

}  // namespace hfrun::optim
