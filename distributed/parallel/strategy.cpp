// What every data-parallel strategy shares: attaching to the model's flat buffers, the
// grad-ready countdown of the units, the queue of units in flight, and global-norm clipping
// across the tensor- and data-parallel groups.
#include "distributed/parallel/strategy.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "autograd/node.h"
#include "common/error.h"
#include "distributed/parallel/ddp.h"
#include "distributed/parallel/zero.h"
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

Tensor wire_tensor(const Tensor& grads, const StrategyContext& ctx) {
  if (ctx.reduce_dtype == DType::kF32) return grads;
  Tensor w = ops::to_dtype(grads, ctx.reduce_dtype);
  ops::scale_(w, 1.0 / ctx.size);
  return w;
}

std::unique_ptr<Strategy> Strategy::create(int zero_stage, const StrategyContext& ctx) {
  switch (zero_stage) {
    case 0:
      return std::make_unique<Ddp>(ctx);
    case 1:
    case 2:
      return std::make_unique<Zero12>(ctx, zero_stage);
    case 3:
      return std::make_unique<Zero3>(ctx);
    default:
      HF_CHECK_INPUT(false, "distributed.zero_stage ", zero_stage, " is not one of 0, 1, 2, 3");
  }
  return nullptr;
}

Strategy::~Strategy() {
  for (const RowTable& t : tables_) autograd::set_row_gradient_handler(leaves_[t.param], nullptr);
}

void Strategy::attach(nn::Module& model) {
  HF_CHECK(units_.empty(), "DataParallel::attach: already attached");
  const nn::FlatParameters* flat = model.flat();
  HF_CHECK(flat != nullptr, "DataParallel::attach: flatten the model's parameters first");
  HF_CHECK(flat->grads.defined() || syncs_every_micro_step(),
           "DataParallel::attach: the model's parameters were flattened without a gradient "
           "buffer, which only ZeRO stages 2 and 3 do without");
  // Frozen parameters (after the trainable ones in the buffer) take no part: no gradient to
  // synchronise, no optimizer state to shard; every rank holds them whole.
  flat_params_ = flat_range(flat->params, 0, flat->trainable);
  flat_grads_ = flat->grads;
  total_ = flat->trainable;
  const auto named = model.named_trainable_parameters();
  HF_CHECK(named.size() <= flat->slots.size(), "DataParallel::attach: ", named.size(),
           " trainable parameters but ", flat->slots.size(), " flat slots");
  for (size_t i = 0; i < named.size(); ++i) {
    const nn::FlatSlot& slot = flat->slots[i];
    HF_CHECK(slot.name == named[i].first, "DataParallel::attach: flat slot ", slot.name,
             " is not parameter ", named[i].first);
    params_.push_back(Param{slot.name, slot.offset, slot.numel, named[i].second.sizes(), {}});
    leaves_.push_back(named[i].second);
    tp_split_.push_back(ctx_.tensor != nullptr && model.tensor_parallel_split(slot.name).split());
  }
  HF_CHECK(std::is_sorted(params_.begin(), params_.end(),
                          [](const Param& a, const Param& b) { return a.offset < b.offset; }),
           "DataParallel::attach: flat slots are not in buffer order");
  lay_out(model);
  sync_.assign(units_.size(), UnitSync{});
  unit_params_.assign(units_.size(), {});
  for (size_t p = 0; p < params_.size(); ++p) {
    for (size_t u : params_[p].units) {
      ++sync_[u].params;
      unit_params_[u].push_back(p);
    }
  }
  const auto live = model.named_trainable_parameters();
  for (size_t i = 0; i < live.size(); ++i) {
    Tensor p = live[i].second;
    autograd::register_grad_ready_hook(p, [this, i](Tensor& leaf) { grad_ready(i, leaf); });
  }
}

void Strategy::before_backward(bool last_micro_step) {
  window_ends_ = last_micro_step;
  if (!last_micro_step && !syncs_every_micro_step()) return;  // accumulation stays local
  for (UnitSync& s : sync_) {
    s.pending = s.params;
    s.issued = s.retired = false;
  }
  in_flight_.clear();
  armed_ = true;
}

void Strategy::finish_gradient_sync() {
  if (!armed_) return;
  armed_ = false;
  // Units no gradient reached (or not all of them) are issued now, with what they hold.
  for (size_t u = 0; u < units_.size(); ++u) {
    if (!sync_[u].issued) start(u);
  }
  while (!in_flight_.empty()) retire_oldest();
  synchronised();
}

void Strategy::grad_ready(size_t p, Tensor& leaf) {
  if (!armed_) return;
  gradient_final(p, leaf);
  for (size_t u : params_[p].units) {
    UnitSync& s = sync_[u];
    if (--s.pending == 0 && !s.issued) {
      while (in_flight_.size() >= max_in_flight()) retire_oldest();
      start(u);
    }
  }
}

void Strategy::start(size_t u) {
  // A gradient zeroed lazily that no backward wrote holds stale values, and the collective
  // reads the flat buffer: grad() fills its zeros first.
  for (size_t p : unit_params_[u]) (void)leaves_[p].grad();
  sync_[u].issued = true;
  sync_[u].work = issue(u);
  in_flight_.push_back(u);
}

void Strategy::retire(size_t u) {
  UnitSync& s = sync_[u];
  if (s.retired) return;
  if (s.work) s.work->wait();
  s.retired = true;
  s.work.reset();
  complete(u);
}

void Strategy::retire_oldest() {
  retire(in_flight_.front());
  in_flight_.pop_front();
}

std::vector<bool> Strategy::embedding_tables(nn::Module& model) const {
  std::vector<bool> table(params_.size(), false);
  if (ctx_.size == 1) return table;
  for (const auto& [path, module] : model.named_modules()) {
    const auto* embedding = dynamic_cast<nn::Embedding*>(module);
    if (embedding == nullptr) continue;
    const Tensor weight = embedding->weight().get();
    for (size_t p = 0; p < params_.size(); ++p) table[p] = table[p] || leaves_[p].is_same(weight);
  }
  return table;
}

void Strategy::take_rows(const std::vector<bool>& table) {
  HF_CHECK(tables_.empty() && table.size() == params_.size(), "Strategy::take_rows: ", table.size(),
           " flags for ", params_.size(), " parameters, or called twice");
  table_of_unit_.assign(units_.size(), -1);
  for (size_t p = 0; p < params_.size(); ++p) {
    if (!table[p]) continue;
    const size_t k = tables_.size();
    tables_.push_back(RowTable{p, params_[p].units, false, -1});
    for (size_t u : params_[p].units) {
      for (size_t q = 0; q < params_.size(); ++q) {
        const auto& of = params_[q].units;
        HF_CHECK(q == p || std::find(of.begin(), of.end(), u) == of.end(),
                 "Strategy::take_rows: the unit of embedding table ", params_[p].name,
                 " also holds ", params_[q].name);
      }
      table_of_unit_[u] = static_cast<int>(k);
    }
    autograd::register_grad_ready_hook(leaves_[p], [this, k](Tensor&) { tables_[k].local = true; });
    autograd::set_row_gradient_handler(
        leaves_[p], [this, k](const Tensor& dy, const Tensor& ids) { rows_ready(k, dy, ids); });
  }
}

void Strategy::rows_ready(size_t k, const Tensor& dy, const Tensor& ids) {
  RowTable& t = tables_[k];
  Tensor grad = leaves_[t.param].grad();
  HF_CHECK(grad.defined(), "data parallelism: embedding table ", params_[t.param].name,
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
  } else if (std::none_of(t.units.begin(), t.units.end(), [&](size_t u) { return issued(u); })) {
    ops::embedding_backward_add_(grad, rows, ids);  // goes with the table's units
    t.local = true;
    return;
  } else {
    f.dense = ops::zeros({V, C}, grad.dtype(), grad.device());
    ops::embedding_backward_add_(f.dense, rows, ids);
    f.work = ctx_.data_device->allreduce(f.dense, ReduceOp::kAvg, ctx_.opts);
  }
  rows_in_flight_.push_back(std::move(f));
}

bool Strategy::skips_table_unit(size_t u) {
  const int k = table_of_unit_.empty() ? -1 : table_of_unit_[u];
  if (k < 0 || synchronising()) return false;
  RowTable& t = tables_[static_cast<size_t>(k)];
  // Its buffer differs between ranks only if some rank added to it since the last
  // synchronisation; once agreed, the table's other units take the same answer.
  if (t.untouched < 0) t.untouched = max_over(*ctx_.data, t.local ? 1 : 0, ctx_.opts) == 0;
  return t.untouched == 1;
}

void Strategy::add_rows() {
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
  // Every rank now holds the same gradients (where they are read).
  for (RowTable& t : tables_) {
    t.local = false;
    t.untouched = -1;
  }
}

void Strategy::share_parameters(nn::Module& model) {
  if (!ctx_.device.is_cpu() || ctx_.size < 2) return;
  const Tensor whole = model.flat()->params;  // the frozen ones (a LoRA base) too
  Tensor shared = ctx_.data->node_shared_tensor(whole.numel(), DType::kF32, ctx_.opts);
  if (!shared.defined()) return;
  if (ctx_.rank == 0) ops::copy_(shared, whole);  // every rank holds rank 0's values
  ctx_.data->barrier(ctx_.opts)->wait();
  model.move_flat_parameters(shared);
  flat_params_ = flat_range(shared, 0, total_);
  const auto named = model.named_trainable_parameters();
  for (size_t p = 0; p < leaves_.size(); ++p) leaves_[p] = named[p].second;
  shared_ = true;
  const std::optional<DType> compute = model.compute_dtype();
  if (compute && (*compute == DType::kBF16 || *compute == DType::kF16)) {
    shared_copies_ = ctx_.data->node_shared_tensor(total_, *compute, ctx_.opts);
  }
}

Tensor Strategy::shared_copy_of(const Tensor& source, const Tensor& copy) const {
  if (!shared_copies_.defined() || !source.defined() || !copy.defined() ||
      source.dtype() != DType::kF32 || copy.dtype() != shared_copies_.dtype() ||
      source.storage() != flat_params_.storage() || source.numel() == 0 ||
      copy.sizes() != source.sizes() || copy.strides() != source.strides() ||
      !ops::is_dense(source)) {
    return Tensor();
  }
  // The elements [first, first + span) of the flat buffer the source covers, all trainable.
  int64_t span = 1;
  for (int64_t d = 0; d < source.dim(); ++d) span += (source.sizes()[d] - 1) * source.strides()[d];
  const int64_t first = source.offset() - flat_params_.offset();
  if (first < 0 || first + span > total_) return Tensor();
  return make_view(shared_copies_, source.sizes(), source.strides(),
                   shared_copies_.offset() + first);
}

double Strategy::clip_over(const std::vector<Tensor>& split, const std::vector<Tensor>& replicated,
                           bool sharded, double max_norm, float inv_scale) {
  double sq_split = optim::grad_norm_squared(split, inv_scale);
  double sq_replicated = optim::grad_norm_squared(replicated, inv_scale);
  if (sharded) {
    sq_split = sum_over(*ctx_.data, sq_split, ctx_.opts);
    sq_replicated = sum_over(*ctx_.data, sq_replicated, ctx_.opts);
  }
  if (ctx_.tensor) sq_split = sum_over(*ctx_.tensor, sq_split, ctx_.opts);
  const double total = std::sqrt(sq_split + sq_replicated);
  const double coef = optim::clip_coefficient(total, max_norm);
  if (std::isfinite(total) && coef < 1.0) {
    optim::scale_grads(split, coef);
    optim::scale_grads(replicated, coef);
  }
  return total;
}

}  // namespace hfrun::dist
