// zero_stage 0 (DDP): every rank holds the whole parameters, gradients and optimizer state;
// buckets of the flat gradient buffer that end on parameter boundaries are averaged by an
// all-reduce as soon as their gradients are final, overlapping the rest of backward. Every rank
// then runs the same optimizer step on the same averaged gradients.
//
// Embedding tables are synchronised in two parts. A lookup runs first in forward, so last in
// backward: a table whose whole gradient waited for it (a tied lm_head's 154 MB for GPT-2)
// would be all-reduced after backward, with nothing left to hide it behind. Instead each table
// has a bucket of its own, and its lookups hand their gradient rows to the strategy
// (autograd::set_row_gradient_handler). The table's dense gradient (the tied projection's)
// is then final early and its bucket is all-reduced during backward as any other; the
// lookup's rows, a few per token, are all-gathered at the end and added, divided by the
// world size, once the bucket's average is in. Where the rows of all ranks would outnumber
// the table's, the lookup's gradient is added to the bucket before it goes (or, when the
// bucket is already on the wire, averaged apart as a dense table). Micro-steps that do not
// synchronise add the rows in place. An untied table that only took rows this window needs no
// all-reduce of its bucket at all.
#include "distributed/parallel/ddp.h"

#include "autograd/node.h"
#include "common/error.h"
#include "nn/layers.h"
#include "optim/clip.h"
#include "tensor/ops.h"

namespace hfrun::dist {
namespace {

// The largest of every rank's `v` in `group`, waited for.
int64_t max_over(ProcessGroup& group, int64_t v, const CollectiveOptions& opts) {
  Tensor t = ops::full({1}, static_cast<double>(v), DType::kI64);
  group.allreduce(t, ReduceOp::kMax, opts)->wait();
  return t.to_int_vector()[0];
}

}  // namespace

Ddp::~Ddp() {
  for (const RowTable& t : tables_) autograd::set_row_gradient_handler(leaves_[t.param], nullptr);
}

void Ddp::lay_out(nn::Module& model) {
  std::vector<bool> table(params_.size(), false);
  if (ctx_.size > 1) {
    for (const auto& [path, module] : model.named_modules()) {
      const auto* embedding = dynamic_cast<nn::Embedding*>(module);
      if (embedding == nullptr) continue;
      const Tensor weight = embedding->weight().get();
      for (size_t p = 0; p < params_.size(); ++p) table[p] = table[p] || leaves_[p].is_same(weight);
    }
  }
  std::vector<ParamRange> ranges;
  for (const Param& p : params_) ranges.push_back({p.offset, p.numel});
  units_ = bucket_layout(ranges, total_, ctx_.bucket_elements, table);
  const auto overlaps = units_of_params(ranges, units_);
  for (size_t p = 0; p < params_.size(); ++p) params_[p].units = overlaps[p];
  wire_.assign(units_.size(), Tensor());
  table_of_unit_.assign(units_.size(), -1);
  for (size_t p = 0; p < params_.size(); ++p) {
    if (!table[p]) continue;
    const size_t k = tables_.size();
    tables_.push_back(RowTable{p, params_[p].units.front(), false});
    table_of_unit_[tables_[k].unit] = static_cast<int>(k);
    autograd::register_grad_ready_hook(leaves_[p], [this, k](Tensor&) { tables_[k].local = true; });
    autograd::set_row_gradient_handler(
        leaves_[p], [this, k](const Tensor& dy, const Tensor& ids) { rows_ready(k, dy, ids); });
  }
}

void Ddp::rows_ready(size_t k, const Tensor& dy, const Tensor& ids) {
  RowTable& t = tables_[k];
  Tensor grad = leaves_[t.param].grad();
  HF_CHECK(grad.defined(), "DDP: embedding table ", params_[t.param].name,
           " has no gradient buffer");
  const Tensor rows = dy.dtype() == grad.dtype() ? dy : ops::to_dtype(dy, grad.dtype());
  if (!synchronising()) {  // accumulation stays local until the window's last micro-step
    ops::embedding_backward_add_(grad, rows, ids);
    t.local = true;
    return;
  }
  // The longest lookup of any rank decides how the rows travel, alike on every rank.
  const int64_t most = max_over(*ctx_.data, ids.numel(), ctx_.opts);
  const int64_t V = grad.size(0), C = grad.size(1), n = ids.numel();
  RowsInFlight f;
  f.table = k;
  if (most * ctx_.size < V) {
    // Every rank's ids and rows, each rank's block padded with id 0 and zero rows.
    f.ids = ops::empty({most * ctx_.size}, ids.dtype(), ids.device());
    f.rows = ops::empty({most * ctx_.size, C}, rows.dtype(), rows.device());
    Tensor my_ids = ops::narrow(f.ids, 0, ctx_.rank * most, most);
    Tensor my_rows = ops::narrow(f.rows, 0, ctx_.rank * most, most);
    ops::fill_(my_ids, 0);
    ops::fill_(my_rows, 0);
    if (n > 0) {
      Tensor head_ids = ops::narrow(my_ids, 0, 0, n), head_rows = ops::narrow(my_rows, 0, 0, n);
      ops::copy_(head_ids, ids);
      ops::copy_(head_rows, rows);
    }
    f.work = ctx_.data_device->allgather_coalesced({f.ids, f.rows}, {my_ids, my_rows}, ctx_.opts);
  } else if (!issued(t.unit)) {
    ops::embedding_backward_add_(grad, rows, ids);  // goes with the table's all-reduce
    t.local = true;
    return;
  } else {
    f.dense = ops::zeros({V, C}, grad.dtype(), grad.device());
    ops::embedding_backward_add_(f.dense, rows, ids);
    f.work = ctx_.data_device->allreduce(f.dense, ReduceOp::kAvg, ctx_.opts);
  }
  rows_in_flight_.push_back(std::move(f));
}

void Ddp::synchronised() {
  for (RowsInFlight& f : rows_in_flight_) {
    Tensor grad = leaves_[tables_[f.table].param].grad();
    f.work->wait();
    if (f.dense.defined()) {
      ops::add_(grad, f.dense);
    } else {
      ops::scale_(f.rows, 1.0 / ctx_.size);
      ops::embedding_backward_add_(grad, f.rows, f.ids);
    }
  }
  rows_in_flight_.clear();
  // Every rank now holds the same gradients.
  for (RowTable& t : tables_) t.local = false;
}

std::shared_ptr<Work> Ddp::issue(size_t u) {
  const int k = table_of_unit_.empty() ? -1 : table_of_unit_[u];
  if (k >= 0 && !synchronising()) {
    // A table that no dense gradient reached in this backward: its buffer differs between
    // ranks only if some rank added to it since the last synchronisation.
    if (max_over(*ctx_.data, tables_[k].local ? 1 : 0, ctx_.opts) == 0) return nullptr;
  }
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
