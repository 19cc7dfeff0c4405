// Tensor parallelism applied to any module tree: the model's plan (Module::
// tensor_parallel_plan(), module-path pattern -> style, as HF's base_model_tp_plan) is matched
// against its modules, and each planned Linear, Embedding or norm keeps this rank's part of its
// parameters and switches its forward to the parallel form (nn/layers.h). No family writes a
// second forward for tensor parallelism.
#pragma once

#include <memory>
#include <utility>

#include "distributed/comm/process_group.h"
#include "nn/module.h"
#include "nn/tensor_parallel.h"

namespace hfrun::dist {

// The tensor-parallel communication models use (nn::TensorParallelGroup) over a process group.
class TensorParallelOverGroup : public nn::TensorParallelGroup {
 public:
  TensorParallelOverGroup(std::shared_ptr<ProcessGroup> g, CollectiveOptions o)
      : group_(std::move(g)), opts_(o) {}
  int rank() const override { return group_->rank(); }
  int size() const override { return group_->size(); }
  void allreduce_sum(Tensor& t) override { group_->allreduce(t, ReduceOp::kSum, opts_)->wait(); }
  void allreduce_max(Tensor& t) override { group_->allreduce(t, ReduceOp::kMax, opts_)->wait(); }

 private:
  std::shared_ptr<ProcessGroup> group_;
  CollectiveOptions opts_;
};

// Applies `model`'s plan over `group` (rank t of T keeps part t). Call after loading weights
// and before flatten_parameters(). Every rule must match at least one module, and every
// matched module must be a layer that can take its style; otherwise an error names the rule.
// Returns the number of modules parallelised.
int apply_tensor_parallel(nn::Module& model, nn::TensorParallelGroup& group);

}  // namespace hfrun::dist
