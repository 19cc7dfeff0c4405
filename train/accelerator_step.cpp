// The Accelerator's step: gradient clipping and unscaling, the optimizer update, and the weight
// copies mixed precision carries from one step to the next.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

#include "common/error.h"
#include "common/stopwatch.h"
#include "optim/clip.h"
#include "tensor/ops.h"
#include "train/accelerator.h"
#include "train/accelerator_state.h"

namespace hfrun::train {

double Accelerator::clip_grad_norm(double max_norm) {
  return clip(max_norm, /*in_step=*/false);
}

double Accelerator::clip_grad_norm_in_step(double max_norm) {
  return clip(max_norm, /*in_step=*/true);
}

double Accelerator::clip(double max_norm, bool in_step) {
  check_prepared("clip_grad_norm");
  HF_CHECK(awaiting_step_,
           "Accelerator::clip_grad_norm: the gradients are not synchronised; call it when "
           "sync_gradients() is true, before step()");
  HF_CHECK_INPUT(max_norm > 0, "Accelerator::clip_grad_norm: max_norm ", max_norm,
                 " must be positive (infinity measures only)");
  State& s = *s_;
  // With loss scaling, the norm's pass unscales the gradients too (no pass of its own), and the
  // norm is finite exactly when this rank's gradients held no inf or NaN. The ranks still agree
  // on it through one small collective: a DDP rank's norm is its own, and a rank whose
  // gradients alone went bad must not step apart from the others. Otherwise unscale first.
  const bool fused = s.scaler.enabled() && !unscaled_ && s.clip_covers_optimizer;
  if (!fused) unscale_gradients();
  const float inv_scale = fused ? s.scaler.inv_scale() : 1.0f;
  // In the step: the norm is only measured here (max_norm infinity scales nothing).
  in_step = in_step && s.clip_covers_optimizer;
  const double measure_to = in_step ? std::numeric_limits<double>::infinity() : max_norm;
  double total = 0;
  if (s.dp) {
    AddTime t(communication_s_);  // the norm's all-reduce (the norm itself is cheap)
    total = s.dp->clip_grad_norm(measure_to, inv_scale);
  } else {
    std::vector<Tensor> trainable;
    for (auto& [name, t] : s.model->named_trainable_parameters()) trainable.push_back(t);
    total = optim::clip_grad_norm(trainable, measure_to, inv_scale);
  }
  // A clip in place replaces one pending for the step: it measured the same gradients.
  clip_in_step_ = in_step ? optim::clip_coefficient(total, max_norm) : 1.0;
  if (fused) {
    const bool mine = !std::isfinite(total);
    found_inf_ = s.dp ? s.dp->max_over_job(mine ? 1 : 0) != 0 : mine;
    unscaled_ = true;
  }
  return total;
}

void Accelerator::unscale_gradients() {
  check_prepared("unscale_gradients");
  HF_CHECK(awaiting_step_,
           "Accelerator::unscale_gradients: the gradients are not synchronised; call it when "
           "sync_gradients() is true, before step()");
  State& s = *s_;
  if (!s.scaler.enabled() || unscaled_) return;
  // The gradients this rank's optimizer reads: the whole model's (DDP, replicated) or its
  // shard's (ZeRO); an overflow anywhere skips the step on every rank.
  std::vector<Tensor> params;
  for (const optim::ParamRef& p : s.optimizer->params()) params.push_back(p.param);
  const bool mine = s.scaler.unscale(params);
  found_inf_ = s.dp ? s.dp->max_over_job(mine ? 1 : 0) != 0 : mine;
  unscaled_ = true;
}

float Accelerator::loss_scale() const {
  return s_->scaler.scale();
}

const optim::GradScaler& Accelerator::grad_scaler() const {
  return s_->scaler;
}

void Accelerator::step() {
  update({});
}

std::vector<Tensor> Accelerator::shared_weight_copies() const {
  // Per optimizer parameter only where the optimizer updates exactly the prepared pieces, in
  // their order (alike on every rank: the strategy and the optimizer decide, not the caller).
  const State& s = *s_;
  if (!s.dp || !s.clip_covers_optimizer) return {};
  return s.dp->shared_weight_copies();
}

std::vector<bool> Accelerator::update(const std::vector<Tensor>& param_copies) {
  check_prepared("step");
  HF_CHECK(awaiting_step_,
           "Accelerator::step: the gradients are not synchronised; call step() after the "
           "backward() of the window's last micro-step (when sync_gradients() is true)");
  State& s = *s_;
  unscale_gradients();
  step_was_skipped_ = s.scaler.enabled() && found_inf_;
  std::vector<bool> written(s.optimizer->params().size(), false);
  if (!step_was_skipped_) {
    // Shared 16-bit weight copies are written by every rank's step, whatever copies the caller
    // carries: any rank may map its copies onto them afterwards (step(copies)).
    const std::vector<Tensor> shared = shared_weight_copies();
    // (DDP ranks sharing parameters whose optimizer could not share its step: rank 0 steps.)
    if (!s.dp || s.dp->steps_optimizer()) {
      written = s.optimizer->step(clip_in_step_, shared.empty() ? param_copies : shared);
    }
    if (!shared.empty()) s.dp->complete_shared_copies(written);
    {
      AddTime t(communication_s_);
      if (s.dp) s.dp->after_optimizer_step();  // ZeRO: every rank gets the updated shards
    }
    ++scheduler_steps_;
  }
  s.scaler.update(found_inf_);
  ++steps_;
  zero_grad();
  AddTime t(communication_s_);
  gather_for_forward();
  return written;
}

namespace {

// The bytes [first, last) a view reads (non-negative strides; empty for no elements).
std::pair<uintptr_t, uintptr_t> byte_span(const Tensor& t) {
  if (t.numel() == 0) return {0, 0};
  int64_t reach = 0;
  for (int64_t d = 0; d < t.dim(); ++d) reach += (t.sizes()[d] - 1) * t.strides()[d];
  const auto first = reinterpret_cast<uintptr_t>(t.raw_data());
  return {first, first + static_cast<uintptr_t>((reach + 1) * dtype_size(t.dtype()))};
}

// The copy of `c` the optimizer writes for `param` (contiguous f32), in the parameter's index
// order: a view of c.copy's memory, when c.source is exactly the parameter's memory, dense, and
// the copy has the source's layout (ops::to_dtype keeps a transposed weight's layout). Else
// undefined.
Tensor copy_in_param_order(const WeightCopy& c, const Tensor& param) {
  const Tensor& src = c.source;
  const Tensor& copy = c.copy;
  if (!param.is_contiguous() || param.numel() == 0 || src.dtype() != param.dtype() ||
      src.raw_data() != param.raw_data() || src.numel() != param.numel() ||
      src.device() != param.device() || copy.sizes() != src.sizes() ||
      copy.strides() != src.strides() || !ops::is_dense(src)) {
    return Tensor();
  }
  return make_view(copy, param.sizes(), contiguous_strides(param.sizes()), copy.offset());
}

}  // namespace

std::vector<WeightCopy> Accelerator::step(std::vector<WeightCopy> copies) {
  check_prepared("step");
  State& s = *s_;
  const std::vector<optim::ParamRef>& params = s.optimizer->params();
  std::vector<Tensor> param_copies(params.size());
  std::vector<size_t> owner(copies.size(), params.size());  // params.size(): none
  // DDP and ZeRO-1/2 with parameters the node's ranks share: the copies are shared too, each
  // rank's step writing its part's (update()).
  const bool shared = !shared_weight_copies().empty();
  if (!shared && s_->options.zero_stage < 3) {
    for (size_t j = 0; j < copies.size(); ++j) {
      for (size_t i = 0; i < params.size(); ++i) {
        if (param_copies[i].defined()) continue;  // one copy per parameter is written
        Tensor view = copy_in_param_order(copies[j], params[i].param);
        if (!view.defined()) continue;
        param_copies[i] = view;
        owner[j] = i;
        break;
      }
    }
  }
  const std::vector<bool> written = update(param_copies);
  if (s_->options.zero_stage == 3) return {};
  if (step_was_skipped_) return copies;  // no parameter changed
  // Shared copies: every trainable weight's equals its cast now (this rank's chunks written by
  // its step, the others' by theirs); a copy of a frozen weight is kept as below.
  std::vector<bool> now_shared(copies.size(), false);
  for (size_t j = 0; shared && j < copies.size(); ++j) {
    Tensor view = s.dp->shared_copy_of(copies[j].source, copies[j].copy);
    if (!view.defined()) continue;
    copies[j].copy = view;
    now_shared[j] = true;
  }
  // What the step may have written: the updated parameters, and (ZeRO) the gathered ones.
  std::vector<std::pair<uintptr_t, uintptr_t>> written_spans;
  for (const optim::ParamRef& p : params) written_spans.push_back(byte_span(p.param));
  for (const Tensor& p : s.model->parameters()) {
    if (p.requires_grad()) written_spans.push_back(byte_span(p));
  }
  std::vector<WeightCopy> kept;
  for (size_t j = 0; j < copies.size(); ++j) {
    bool valid = now_shared[j] || (owner[j] < params.size() && written[owner[j]]);
    if (!valid) {
      const std::pair<uintptr_t, uintptr_t> mine = byte_span(copies[j].source);
      valid = std::none_of(written_spans.begin(), written_spans.end(), [&](const auto& w) {
        return mine.first < w.second && w.first < mine.second;
      });
    }
    if (valid) kept.push_back(std::move(copies[j]));
  }
  return kept;
}

void Accelerator::skip_step() {
  check_prepared("skip_step");
  zero_grad();
  gather_for_forward();
}

void Accelerator::zero_grad() {
  check_prepared("zero_grad");
  State& s = *s_;
  if (s.dp) {
    s.dp->zero_grad(*s.model);
  } else {
    s.model->zero_grad_lazily();  // the next backward writes over them (nn::Module)
  }
  micro_step_ = 0;
  awaiting_step_ = false;
  clip_in_step_ = 1.0;
  unscaled_ = found_inf_ = false;
}

}  // namespace hfrun::train
