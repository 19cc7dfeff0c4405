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
  void adopt_optimizer(optim::Optimizer& optimizer) override;
  bool steps_optimizer() const override { return !shared_ || split_ || ctx_.rank == 0; }
  void after_optimizer_step() override;
  std::vector<Tensor> shared_weight_copies() const override;
  void complete_shared_copies(const std::vector<bool>& written) override;

 private:
  void lay_out(nn::Module& model) override;
  std::shared_ptr<Work> issue(size_t u) override;
  void complete(size_t u) override;
  void synchronised() override;
  // This rank's part [lo, hi) of parameter p's elements under a split step (may be empty).
  std::pair<int64_t, int64_t> part_of(size_t p) const;

  std::vector<Tensor> wire_;  // per unit in flight: its bf16 copy (reduce_dtype bf16)
  // Shared parameters: the flat elements [part_lo_, part_hi_) are this rank's to update when
  // the optimizer's step is split (split_).
  int64_t part_lo_ = 0, part_hi_ = 0;
  bool split_ = false;
};

}  // namespace hfrun::dist
