// SGD as torch.optim.SGD's single-tensor path (torch/optim/sgd.py, _single_tensor_sgd), fused
// into one pass. Per element, in f32 and torch's order, each add-with-alpha one fused
// multiply-add as in torch's vectorised add kernel (the loops are the device backend's
// sgd_update: tensor/backend/cpu/optim_update.cpp, tensor/backend/cuda/optim_update.cu):
//   d = grad + wd * param                          (d_p.add(param, alpha=wd), decay params)
//   buf = d on the first step, else buf * momentum + (1 - dampening) * d
//   d = nesterov ? d + momentum * buf : buf
//   param += -lr * d
#include "optim/optimizer.h"
#include "tensor/backend.h"

namespace hfrun::optim {

SGD::SGD(std::vector<ParamRef> params, SGDOptions options)
    : Optimizer(std::move(params), options.lr, "SGD"), options_(options) {
  const auto& o = options_;
  HF_CHECK_INPUT(o.momentum >= 0, "SGD: momentum must be >= 0, got ", o.momentum);
  HF_CHECK_INPUT(o.weight_decay >= 0, "SGD: weight_decay must be >= 0, got ", o.weight_decay);
  HF_CHECK_INPUT(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
                 "SGD: nesterov momentum requires momentum > 0 and dampening = 0 (got momentum ",
                 o.momentum, ", dampening ", o.dampening, ")");
  if (o.momentum != 0) add_state_kind("momentum_buffer");
}

void SGD::update(const std::vector<PendingUpdate>& updates, float grad_scale) {
  std::vector<SGDUpdate> fused;
  fused.reserve(updates.size());
  const bool momentum = options_.momentum != 0;
  for (const PendingUpdate& u : updates) {
    SGDScalars s;
    s.grad_scale = grad_scale;
    // torch adds the L2 term only when weight_decay != 0 (so an inf parameter stays out of d).
    s.l2 = params()[u.index].decay && options_.weight_decay != 0;
    s.weight_decay = static_cast<float>(options_.weight_decay);
    s.neg_lr = static_cast<float>(-lr());
    s.momentum = static_cast<float>(options_.momentum);
    s.one_minus_dampening = static_cast<float>(1 - options_.dampening);
    s.first = u.param_step == 1;
    s.nesterov = options_.nesterov;
    fused.push_back({u.param, u.grad, momentum ? u.state[0] : Tensor(), s, u.copy});
  }
  backend_for(device()).sgd_update(fused);
}

}  // namespace hfrun::optim
