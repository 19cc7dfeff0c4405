// zero_stage 0: replicated training with bucketed gradient all-reduce (ddp.cpp).
#pragma once

#include "distributed/parallel/strategy.h"

namespace hfrun::dist {

class Ddp final : public Strategy {
 public:
  using Strategy::Strategy;
  ~Ddp() override;
  std::vector<optim::ParamRef> optimizer_params(const std::vector<optim::ParamRef>& full,
                                                std::vector<ParamSlice>* slices) const override;
  double clip_grad_norm(double max_norm, float inv_scale) override;
  TrainingMemory memory(const optim::Optimizer& optimizer) const override;

 private:
  void lay_out(nn::Module& model) override;
  std::shared_ptr<Work> issue(size_t u) override;
  void complete(size_t u) override;
  void synchronised() override;
  void rows_ready(size_t k, const Tensor& dy, const Tensor& ids);

  std::vector<Tensor> wire_;  // per unit in flight: its bf16 copy (reduce_dtype bf16)

  // An embedding table whose lookups' gradient rows are synchronised on their own (ddp.cpp).
  struct RowTable {
    size_t param = 0, unit = 0;
    // Since the last synchronisation its gradient buffer took something no other rank's has
    // (a dense gradient, or rows added in place); the unit is then all-reduced.
    bool local = false;
  };
  // Rows of one lookup on their way: every rank's ids and rows (padded to the longest), or the
  // lookup's dense gradient being averaged.
  struct RowsInFlight {
    size_t table = 0;
    Tensor ids, rows, dense;
    std::shared_ptr<Work> work;
  };
  std::vector<RowTable> tables_;
  std::vector<int> table_of_unit_;  // per unit: its table, or -1
  std::vector<RowsInFlight> rows_in_flight_;
};

}  // namespace hfrun::dist
