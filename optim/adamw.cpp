// AdamW as torch.optim.AdamW's single-tensor path (torch/optim/adamw.py, _single_tensor_adamw),
// fused into one pass. Scalars are computed in double as Python does and rounded to f32 where
// torch passes them to an f32 kernel; per element the f32 operations run in torch's order and
// round where its AVX2 kernels round (one fused multiply-add where they fuse one). The loops
// are the device backend's adamw_update (tensor/backend/{cpu,cuda}/optim_update.*):
//   param.mul_(1 - lr * wd)
//   exp_avg.mul_(b1).add_(grad, alpha=1 - b1)
//   exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
//   denom = (exp_avg_sq.sqrt() / sqrt(1 - b2^t)).add_(eps)
//   param.addcdiv_(exp_avg, denom, value=-lr / (1 - b1^t))
#include <cmath>

#include "optim/optimizer.h"
#include "tensor/backend.h"

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

void AdamW::update(const std::vector<PendingUpdate>& updates, float grad_scale) {
  const double lr = this->lr();
  const double b1 = options_.betas[0], b2 = options_.betas[1];
  std::vector<AdamWUpdate> fused;
  fused.reserve(updates.size());
  for (const PendingUpdate& u : updates) {
    const double wd = params()[u.index].decay ? options_.weight_decay : 0.0;
    const double t = static_cast<double>(u.param_step);
    const double bias_correction1 = 1 - std::pow(b1, t);
    const double bias_correction2 = 1 - std::pow(b2, t);
    AdamWScalars s;
    s.grad_scale = grad_scale;
    s.decay = static_cast<float>(1 - lr * wd);
    s.beta1 = static_cast<float>(b1);
    s.one_minus_beta1 = static_cast<float>(1 - b1);
    s.beta2 = static_cast<float>(b2);
    s.one_minus_beta2 = static_cast<float>(1 - b2);
    s.bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
    s.eps = static_cast<float>(options_.eps);
    s.neg_step_size = static_cast<float>(-(lr / bias_correction1));
    fused.push_back({u.param, u.grad, u.state[0], u.state[1], s, u.copy});
  }
  backend_for(device()).adamw_update(fused);
}

}  // namespace hfrun::optim
