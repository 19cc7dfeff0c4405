// zero_stage 0 (DDP): every rank holds the whole parameters, gradients and optimizer state;
// buckets of the flat gradient buffer that end on parameter boundaries are averaged by an
// all-reduce as soon as their gradients are final, overlapping the rest of backward. Every rank
// then runs the same optimizer step on the same averaged gradients.
//
// Embedding tables have buckets of their own, and their lookups' rows are synchronised apart
// (strategy.h explains).
#include "distributed/parallel/ddp.h"

#include "common/error.h"
#include "optim/clip.h"
#include "tensor/ops.h"

namespace hfrun::dist {

void Ddp::lay_out(nn::Module& model) {
  const std::vector<bool> table = embedding_tables(model);
  std::vector<ParamRange> ranges;
  for (const Param& p : params_) ranges.push_back({p.offset, p.numel});
  units_ = bucket_layout(ranges, total_, ctx_.bucket_elements, table);
  const auto overlaps = units_of_params(ranges, units_);
  for (size_t p = 0; p < params_.size(); ++p) params_[p].units = overlaps[p];
  wire_.assign(units_.size(), Tensor());
  take_rows(table);
}

void Ddp::synchronised() {
  add_rows();
}

std::shared_ptr<Work> Ddp::issue(size_t u) {
  if (skips_table_unit(u)) return nullptr;
  Tensor v = flat_range(flat_grads_, units_[u].begin, units_[u].end - units_[u].begin);
  wire_[u] = wire_tensor(v, ctx_);
  return ctx_.data_device->allreduce(wire_[u], wire_op(ctx_), ctx_.opts);
}

void Ddp::complete(size_t u) {
  if (ctx_.reduce_dtype != DType::kF32 && wire_[u].defined()) {  // (a table's skipped unit)
    Tensor v = flat_range(flat_grads_, units_[u].begin, units_[u].end - units_[u].begin);
    ops::copy_(v, wire_[u]);  // widened back into the f32 gradients
  }
  wire_[u] = Tensor();
}

std::vector<optim::ParamRef> Ddp::optimizer_params(const std::vector<optim::ParamRef>& full,
                                                   std::vector<ParamSlice>* slices) const {
  HF_CHECK(full.size() == params_.size(), "optimizer_params: ", full.size(),
           " parameters given, the model has ", params_.size());
  if (slices) {
    slices->clear();
    for (const auto& r : full) slices->push_back(ParamSlice{r.name, 0, r.param.sizes()});
  }
  return full;
}

double Ddp::clip_grad_norm(double max_norm, float inv_scale) {
  // Without tensor parallelism every rank holds the same whole gradients.
  if (!ctx_.tensor) return optim::clip_grad_norm(leaves_, max_norm, inv_scale);
  std::vector<Tensor> split, replicated;
  for (size_t i = 0; i < leaves_.size(); ++i) {
    (tp_split_[i] ? split : replicated).push_back(leaves_[i]);
  }
  return clip_over(split, replicated, /*sharded=*/false, max_norm, inv_scale);
}

TrainingMemory Ddp::memory(const optim::Optimizer& optimizer) const {
  TrainingMemory m;
  m.params = static_cast<int64_t>(flat_params_.nbytes());
  m.grads = static_cast<int64_t>(flat_grads_.nbytes());
  m.optimizer = optimizer.state_bytes();
  return m;
}

}  // namespace hfrun::dist
