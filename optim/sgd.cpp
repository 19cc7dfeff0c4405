// SGD as torch.optim.SGD's single-tensor path (torch/optim/sgd.py, _single_tensor_sgd), fused
// into one pass. Per element, in f32 and torch's order, each add-with-alpha one fused
// multiply-add as in torch's vectorised add kernel (detail::madd):
//   d = grad + wd * param                          (d_p.add(param, alpha=wd), decay params)
//   buf = d on the first step, else buf * momentum + (1 - dampening) * d
//   d = nesterov ? d + momentum * buf : buf
//   param += -lr * d
#include "optim/fused.h"
#include "optim/optimizer.h"

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

void SGD::update(size_t i, const Tensor& grad, int64_t param_step) {
  // torch adds the L2 term only when weight_decay != 0 (so an inf parameter stays out of d).
  const bool l2 = params()[i].decay && options_.weight_decay != 0;
  const float wd_f = static_cast<float>(options_.weight_decay);
  const float neg_lr_f = static_cast<float>(-lr());
  float* p = params()[i].param.data<float>();
  const float* g = grad.data<float>();
  if (options_.momentum == 0) {
    detail::for_each_element(params()[i].param, grad, [=](int64_t ip, int64_t ig, int64_t) {
      const float d = l2 ? detail::madd(p[ip], wd_f, g[ig]) : g[ig];
      p[ip] = detail::madd(d, neg_lr_f, p[ip]);
    });
    return;
  }
  const float mom_f = static_cast<float>(options_.momentum);
  const float one_minus_damp_f = static_cast<float>(1 - options_.dampening);
  const bool first = param_step == 1, nesterov = options_.nesterov;
  float* buf = state(0, i).data<float>();
  detail::for_each_element(params()[i].param, grad, [=](int64_t ip, int64_t ig, int64_t is) {
    const float d = l2 ? detail::madd(p[ip], wd_f, g[ig]) : g[ig];
    const float b = first ? d : detail::madd(d, one_minus_damp_f, buf[is] * mom_f);
    buf[is] = b;
    p[ip] = detail::madd(nesterov ? detail::madd(b, mom_f, d) : b, neg_lr_f, p[ip]);
  });
}

}  // namespace hfrun::optim
