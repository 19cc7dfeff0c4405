// DataParallel's per-step API: attaching to a model's flat buffers, gradient synchronisation
// around backward, clipping over shards, ZeRO parameter gathers, memory accounting and the
// pieces a rank checkpoints.
#include <algorithm>
#include <cmath>

#include "autograd/node.h"
#include "common/error.h"
#include "distributed/parallel/data_parallel_impl.h"
#include "optim/clip.h"
#include "tensor/ops.h"

namespace hfrun::dist {

void DataParallel::attach(nn::Module& model) {
  Impl& im = *impl_;
  HF_CHECK(im.units.empty(), "DataParallel::attach: already attached");
  const nn::FlatParameters* flat = model.flat();
  HF_CHECK(flat != nullptr && flat->grads.defined(),
           "DataParallel::attach: flatten the model's parameters first");
  im.flat_params = flat->params;
  im.flat_grads = flat->grads;
  im.total = flat->params.numel();
  const auto named = model.named_parameters();
  HF_CHECK(named.size() == flat->slots.size(), "DataParallel::attach: ", named.size(),
           " parameters but ", flat->slots.size(), " flat slots");
  for (size_t i = 0; i < named.size(); ++i) {
    const nn::FlatSlot& slot = flat->slots[i];
    HF_CHECK(slot.name == named[i].first, "DataParallel::attach: flat slot ", slot.name,
             " is not parameter ", named[i].first);
    im.params.push_back(
        Impl::Param{slot.name, slot.offset, slot.numel, named[i].second.sizes(), {}});
    im.leaves.push_back(named[i].second);
    im.tp_split.push_back(im.tp != nullptr && model.tensor_parallel_split(slot.name).split());
  }
  HF_CHECK(std::is_sorted(im.params.begin(), im.params.end(),
                          [](const auto& a, const auto& b) { return a.offset < b.offset; }),
           "DataParallel::attach: flat slots are not in buffer order");
  std::vector<Tensor> values;
  for (const auto& [name, t] : named) values.push_back(t);
  if (im.stage == 3) {
    // Parameters move into per-layer buffers (filled from the flat buffer, which every rank
    // holds after the broadcast) and the flat buffers go.
    im.make_layer_units(model, values);
    for (size_t i = 0; i < values.size(); ++i) {
      const Impl::Param& p = im.params[i];
      const Impl::Unit& unit = im.units[p.units[0]];
      Tensor v = make_view(unit.buffer, p.shape, contiguous_strides(p.shape),
                           unit.buffer.offset() + (p.offset - unit.begin));
      ops::copy_(v, values[i]);
      values[i] = v;
    }
    model.replace_parameters(values);
    // Nothing may keep the old flat buffers (4P of parameters, 4P of gradients) alive.
    im.flat_params = im.flat_grads = Tensor();
    im.leaves = values;
  } else {
    im.make_units();
  }
  if (im.stage > 0) im.make_pieces();
  if (im.stage == 2) {
    model.release_gradient_buffer();
    im.flat_grads = Tensor();
  }
  if (im.stage == 3) {
    im.release_all();
    model.set_forward_hook(&im);
    for (nn::Module* block : model.blocks()) block->set_forward_hook(&im);
  }
  Impl* impl = impl_.get();
  const auto live = model.named_parameters();
  for (size_t i = 0; i < live.size(); ++i) {
    Tensor p = live[i].second;
    autograd::register_grad_ready_hook(p, [impl, i](Tensor& leaf) { impl->grad_ready(i, leaf); });
  }
}

std::vector<optim::ParamRef> DataParallel::optimizer_params(
    const std::vector<optim::ParamRef>& full, std::vector<ParamSlice>* slices) const {
  const Impl& im = *impl_;
  HF_CHECK(full.size() == im.params.size(), "optimizer_params: ", full.size(),
           " parameters given, the model has ", im.params.size());
  std::vector<optim::ParamRef> out;
  if (slices) slices->clear();
  if (im.stage == 0) {
    for (const auto& r : full) {
      if (slices) slices->push_back(ParamSlice{r.name, 0, r.param.sizes()});
    }
    return full;
  }
  for (const Impl::Piece& piece : im.pieces) {
    const Impl::Param& p = im.params[piece.param];
    const int64_t offset = piece.lo - p.offset;
    out.push_back(optim::ParamRef{p.name + "@" + std::to_string(offset), piece.value,
                                  full[piece.param].decay});
    if (slices) slices->push_back(ParamSlice{p.name, offset, p.shape});
  }
  return out;
}

void DataParallel::before_backward(bool last_micro_step) {
  Impl& im = *impl_;
  if (im.stage < 2 && !last_micro_step) return;
  for (auto& u : im.units) {
    u.pending = u.params;
    u.issued = u.retired = false;
  }
  im.in_flight.clear();
  im.armed = true;
}

void DataParallel::finish_gradient_sync() {
  Impl& im = *impl_;
  if (!im.armed) return;  // stage 0/1 before the last micro-step: accumulation stays local
  im.armed = false;
  for (size_t u = 0; u < im.units.size(); ++u) {
    if (!im.units[u].issued) {
      if (im.stage >= 2 && !im.units[u].staging.defined()) {
        im.units[u].staging = ops::zeros({im.units[u].chunk * im.size}, DType::kF32, im.device);
      }
      im.issue(u);
    }
  }
  while (!im.in_flight.empty()) im.retire_oldest();
  if (im.stage >= 2) im.accumulate = true;
}

void DataParallel::zero_grad(nn::Module& model) {
  model.zero_grad();
  impl_->accumulate = false;
}

double DataParallel::clip_grad_norm(double max_norm) {
  Impl& im = *impl_;
  // Without tensor parallelism, stage 0 holds the same whole gradients on every rank.
  if (im.stage == 0 && !im.tp) return optim::clip_grad_norm(im.leaves, max_norm);
  // Squares of the parts split across the tensor-parallel group and of the replicated ones;
  // ZeRO shards are disjoint across the data-parallel group, stage 0 copies are not.
  std::vector<Tensor> split, replicated, all;
  if (im.stage == 0) {
    for (size_t i = 0; i < im.leaves.size(); ++i) {
      (im.tp_split[i] ? split : replicated).push_back(im.leaves[i]);
    }
  } else {
    for (const auto& piece : im.pieces) {
      (im.tp_split[piece.param] ? split : replicated).push_back(piece.value);
    }
  }
  double sq_split = optim::grad_norm_squared(split);
  double sq_replicated = optim::grad_norm_squared(replicated);
  if (im.stage > 0) {
    sq_split = sum_over(*im.world, sq_split, im.opts);
    sq_replicated = sum_over(*im.world, sq_replicated, im.opts);
  }
  if (im.tp) sq_split = sum_over(*im.tp, sq_split, im.opts);
  const double total = std::sqrt(sq_split + sq_replicated);
  const double coef = optim::clip_coefficient(total, max_norm);
  if (std::isfinite(total) && coef < 1.0) {
    optim::scale_grads(split, coef);
    optim::scale_grads(replicated, coef);
  }
  return total;
}

void DataParallel::after_optimizer_step() {
  Impl& im = *impl_;
  if (im.stage == 0) return;
  if (im.stage == 3) {  // gathered lazily by the next forward
    im.release_all();
    return;
  }
  // Every unit's gather as one grouped op (one NCCL launch on GPUs).
  std::vector<Tensor> outs, ins;
  std::vector<std::pair<size_t, Tensor>> staged;
  for (size_t u = 0; u < im.units.size(); ++u) {
    const Impl::Unit& unit = im.units[u];
    const int64_t padded = unit.chunk * im.size;
    Tensor out;
    if (unit.begin + padded <= im.total) {
      out = flat_range(im.flat_params, unit.begin, padded);
    } else {
      out = ops::zeros({padded}, DType::kF32, im.device);
      const int64_t n = unit.hi(im.rank) - unit.lo(im.rank);
      if (n > 0) {
        Tensor mine = flat_range(out, im.rank * unit.chunk, n);
        ops::copy_(mine, flat_range(im.flat_params, unit.lo(im.rank), n));
      }
      staged.emplace_back(u, out);
    }
    ins.push_back(flat_range(out, im.rank * unit.chunk, unit.chunk));
    outs.push_back(out);
  }
  if (!outs.empty()) im.tensor_world->allgather_coalesced(outs, ins, im.opts)->wait();
  for (auto& [u, out] : staged) {
    const Impl::Unit& unit = im.units[u];
    Tensor dst = flat_range(im.flat_params, unit.begin, unit.end - unit.begin);
    ops::copy_(dst, flat_range(out, 0, unit.end - unit.begin));
  }
}

TrainingMemory DataParallel::memory(const optim::Optimizer& optimizer) const {
  const Impl& im = *impl_;
  TrainingMemory m;
  if (im.stage == 3) {
    m.params = static_cast<int64_t>(im.shard_params.nbytes());
    for (const auto& u : im.units) {
      if (u.gathered) m.params += static_cast<int64_t>(u.buffer.nbytes());
    }
  } else {
    m.params = static_cast<int64_t>(im.flat_params.nbytes());
  }
  m.grads = im.stage >= 2 ? static_cast<int64_t>(im.shard_grads.nbytes())
                          : static_cast<int64_t>(im.flat_grads.nbytes());
  for (const auto& [name, t] : optimizer.state_tensors()) {
    if (name == "step" || name.starts_with("step.")) continue;
    m.optimizer += static_cast<int64_t>(t.nbytes());
  }
  return m;
}

void DataParallel::gather_parameters() {
  Impl& im = *impl_;
  if (im.stage != 3) return;
  for (size_t u = 0; u < im.units.size(); ++u) im.gather(u);
}

void DataParallel::release_parameters() {
  if (impl_->stage == 3) impl_->release_all();
}

std::vector<std::pair<ParamSlice, Tensor>> DataParallel::parameter_pieces() const {
  const Impl& im = *impl_;
  std::vector<std::pair<ParamSlice, Tensor>> out;
  if (im.stage != 3) return out;
  for (const Impl::Piece& piece : im.pieces) {
    const Impl::Param& p = im.params[piece.param];
    out.emplace_back(ParamSlice{p.name, piece.lo - p.offset, p.shape}, piece.value);
  }
  return out;
}

}  // namespace hfrun::dist
