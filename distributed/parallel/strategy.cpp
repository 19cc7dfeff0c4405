// What every data-parallel strategy shares: attaching to the model's flat buffers, the
// grad-ready countdown of the units, the queue of units in flight, and global-norm clipping
// across the tensor- and data-parallel groups.
#include "distributed/parallel/strategy.h"

#include <algorithm>
#include <cmath>

#include "autograd/node.h"
#include "common/error.h"
#include "distributed/parallel/ddp.h"
#include "distributed/parallel/zero.h"
#include "optim/clip.h"
#include "tensor/ops.h"

namespace hfrun::dist {

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

void Strategy::attach(nn::Module& model) {
  HF_CHECK(units_.empty(), "DataParallel::attach: already attached");
  const nn::FlatParameters* flat = model.flat();
  HF_CHECK(flat != nullptr && flat->grads.defined(),
           "DataParallel::attach: flatten the model's parameters first");
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
  for (const Param& p : params_) {
    for (size_t u : p.units) ++sync_[u].params;
  }
  const auto live = model.named_trainable_parameters();
  for (size_t i = 0; i < live.size(); ++i) {
    Tensor p = live[i].second;
    autograd::register_grad_ready_hook(p, [this, i](Tensor& leaf) { grad_ready(i, leaf); });
  }
}

void Strategy::before_backward(bool last_micro_step) {
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
