// zero_stage 0: replicated training with bucketed gradient all-reduce (ddp.cpp).
#pragma once

#include "distributed/parallel/strategy.h"

namespace hfrun::dist {

class Ddp final : public Strategy {
 public:
  using Strategy::Strategy;
  std::vector<optim::ParamRef> optimizer_params(const std::vector<optim::ParamRef>& full,
                                                std::vector<ParamSlice>* slices) const override;
  double clip_grad_norm(double max_norm, float inv_scale) override;
  TrainingMemory memory(const optim::Optimizer& optimizer) const override;

 private:
  void lay_out(nn::Module& model) override;
  std::shared_ptr<Work> issue(size_t u) override;
  void complete(size_t u) override;
  void synchronised() override;

  std::vector<Tensor> wire_;  // per unit in flight: its bf16 copy (reduce_dtype bf16)
};

}  // namespace hfrun::dist
