// ZeRO stage 3: parameters are sharded too. Each of the model's blocks() is a unit with its own
// padded buffer, gathered by the forward hook before the block runs, freed after it, and
// gathered again by a node in the graph before its backward; the parameters outside the blocks
// (embeddings, final norm) form a root unit gathered for the whole forward and backward. A unit
// is released as soon as its gradients are reduce-scattered; each rank keeps its chunks only.
#include <algorithm>

#include "autograd/node.h"
#include "common/error.h"
#include "distributed/parallel/zero.h"
#include "tensor/ops.h"

namespace hfrun::dist {

void Zero3::lay_out(nn::Module& model) {
  // Which block each parameter belongs to (-1: the root unit).
  const std::vector<nn::Module*> blocks = model.blocks();
  std::vector<int> block_of(params_.size(), -1);
  for (size_t b = 0; b < blocks.size(); ++b) {
    for (const auto& [name, t] : blocks[b]->named_parameters()) {
      for (size_t p = 0; p < leaves_.size(); ++p) {
        if (leaves_[p].raw_data() == t.raw_data() && leaves_[p].sizes() == t.sizes()) {
          block_of[p] = static_cast<int>(b);
        }
      }
    }
  }
  std::vector<std::vector<size_t>> members(blocks.size() + 1);  // [0]: root
  for (size_t p = 0; p < params_.size(); ++p) members[block_of[p] + 1].push_back(p);
  root_module_ = &model;
  constexpr int64_t kAlign = 16;
  int64_t begin = 0;
  for (size_t m = 0; m < members.size(); ++m) {
    if (members[m].empty()) continue;
    int64_t len = 0;
    for (size_t p : members[m]) {
      params_[p].offset = begin + len;
      params_[p].units = {units_.size()};
      len += (params_[p].numel + kAlign - 1) / kAlign * kAlign;
    }
    UnitLayout unit;
    unit.begin = begin;
    unit.chunk = std::max<int64_t>(1, (len + ctx_.size - 1) / ctx_.size);
    unit.end = begin + unit.chunk * ctx_.size;  // the padding is part of the unit
    if (m == 0) {
      root_unit_ = static_cast<int>(units_.size());
    } else {
      block_unit_[blocks[m - 1]] = units_.size();
    }
    // Its storage exists only while gathered (never all of the model at once, not even here);
    // made below, once the shards are.
    buffers_.emplace_back();
    gathered_.push_back(false);
    begin = unit.end;
    units_.push_back(unit);
  }
  total_ = begin;
  lay_out_shards();
  shard_params_ = ops::zeros({std::max<int64_t>(shard_total_, 1)}, DType::kF32, ctx_.device);
  // One unit at a time: its parameters are copied from the flat buffer (every rank holds it
  // after the broadcast) into the unit's buffer, this rank's chunk is kept, and the buffer is
  // released again. The parameters become views into the unit buffers, and the flat buffers
  // go: nothing may keep them alive.
  std::vector<std::vector<size_t>> of_unit(units_.size());
  for (size_t i = 0; i < leaves_.size(); ++i) of_unit[params_[i].units[0]].push_back(i);
  std::vector<std::pair<std::string, Tensor>> replaced(leaves_.size());
  for (size_t u = 0; u < units_.size(); ++u) {
    buffers_[u] = ops::zeros({units_[u].chunk * ctx_.size}, DType::kF32, ctx_.device);
    for (size_t i : of_unit[u]) {
      const Param& p = params_[i];
      Tensor v = make_view(buffers_[u], p.shape, contiguous_strides(p.shape),
                           buffers_[u].offset() + (p.offset - units_[u].begin));
      ops::copy_(v, leaves_[i]);
      leaves_[i] = v;
      replaced[i] = {p.name, v};
    }
    const int64_t chunk = units_[u].chunk;
    Tensor dst = flat_range(shard_params_, shard_offset_[u], chunk);
    ops::copy_(dst, flat_range(buffers_[u], ctx_.rank * chunk, chunk));
    buffers_[u].storage()->release();
  }
  for (size_t b = 0; b < blocks.size(); ++b) block_index_[blocks[b]] = static_cast<int>(b);
  lay_out_frozen(model, blocks, replaced);
  // Every parameter, trainable or frozen, now lives in a unit's buffer.
  std::vector<Tensor> values;
  for (const auto& named : model.named_parameters()) {
    const std::string& name = named.first;
    const auto it = std::find_if(replaced.begin(), replaced.end(),
                                 [&](const auto& r) { return r.first == name; });
    HF_CHECK(it != replaced.end(), "ZeRO-3: parameter ", name, " has no unit");
    values.push_back(it->second);
  }
  model.replace_parameters(values);
  flat_params_ = flat_grads_ = Tensor();
  make_pieces(
      [this](size_t u) { return flat_range(shard_params_, shard_offset_[u], units_[u].chunk); });
  model.set_forward_hook(this);
  for (nn::Module* block : blocks) block->set_forward_hook(this);
}

void Zero3::lay_out_frozen(nn::Module& model, const std::vector<nn::Module*>& blocks,
                           std::vector<std::pair<std::string, Tensor>>& replaced) {
  std::vector<std::pair<std::string, Tensor>> frozen;
  for (const auto& [name, t] : model.named_parameters()) {
    if (!model.is_trainable(name)) frozen.emplace_back(name, t);
  }
  if (frozen.empty()) return;
  std::vector<std::vector<size_t>> members(blocks.size() + 1);  // [0]: root
  for (size_t i = 0; i < frozen.size(); ++i) {
    int block = -1;
    for (size_t b = 0; b < blocks.size() && block < 0; ++b) {
      for (const auto& [name, t] : blocks[b]->named_parameters()) {
        if (t.raw_data() == frozen[i].second.raw_data()) block = static_cast<int>(b);
      }
    }
    members[block + 1].push_back(i);
  }
  constexpr int64_t kAlign = 16;
  for (size_t m = 0; m < members.size(); ++m) {
    if (members[m].empty()) continue;
    std::vector<int64_t> offsets;
    int64_t len = 0;
    for (size_t i : members[m]) {
      offsets.push_back(len);
      len += (frozen[i].second.numel() + kAlign - 1) / kAlign * kAlign;
    }
    FrozenUnit f;
    f.block = static_cast<int>(m) - 1;
    f.chunk = std::max<int64_t>(1, (len + ctx_.size - 1) / ctx_.size);
    f.buffer = ops::zeros({f.chunk * ctx_.size}, DType::kF32, ctx_.device);
    for (size_t k = 0; k < members[m].size(); ++k) {
      const auto& [name, value] = frozen[members[m][k]];
      Tensor v = make_view(f.buffer, value.sizes(), contiguous_strides(value.sizes()),
                           f.buffer.offset() + offsets[k]);
      ops::copy_(v, value);
      replaced.emplace_back(name, v);
    }
    f.shard = ops::clone(flat_range(f.buffer, ctx_.rank * f.chunk, f.chunk));
    f.buffer.storage()->release();  // gathered when its block runs
    f.gathered = false;
    if (m == 0) {
      root_frozen_ = static_cast<int>(frozen_.size());
    } else {
      block_frozen_[blocks[m - 1]] = frozen_.size();
    }
    frozen_.push_back(std::move(f));
  }
}

void Zero3::gather_frozen(size_t f) {
  FrozenUnit& unit = frozen_[f];
  if (unit.gathered) return;
  unit.buffer.storage()->materialize();
  ctx_.data_device->allgather(unit.buffer, unit.shard, ctx_.opts)->wait();
  unit.gathered = true;
}

void Zero3::release_frozen(size_t f) {
  FrozenUnit& unit = frozen_[f];
  if (!unit.gathered) return;
  unit.buffer.storage()->release();
  unit.gathered = false;
}

void Zero3::gather_module(const nn::Module* module) {
  if (module == root_module_) {
    if (root_unit_ >= 0) gather(static_cast<size_t>(root_unit_));
    if (root_frozen_ >= 0) gather_frozen(static_cast<size_t>(root_frozen_));
    return;
  }
  if (auto it = block_unit_.find(module); it != block_unit_.end()) gather(it->second);
  if (auto it = block_frozen_.find(module); it != block_frozen_.end()) gather_frozen(it->second);
}

void Zero3::gather(size_t u) {
  if (gathered_[u]) return;
  buffers_[u].storage()->materialize();
  const Tensor mine = flat_range(shard_params_, shard_offset_[u], units_[u].chunk);
  ctx_.data_device->allgather(buffers_[u], mine, ctx_.opts)->wait();
  gathered_[u] = true;
}

void Zero3::release(size_t u) {
  if (!gathered_[u]) return;
  buffers_[u].storage()->release();
  gathered_[u] = false;
}

void Zero3::release_all() {
  for (size_t u = 0; u < units_.size(); ++u) release(u);
  for (size_t f = 0; f < frozen_.size(); ++f) release_frozen(f);
}

void Zero3::gather_parameters() {
  for (size_t u = 0; u < units_.size(); ++u) gather(u);
  for (size_t f = 0; f < frozen_.size(); ++f) gather_frozen(f);
}

void Zero3::before_forward(nn::Module& module) {
  gather_module(&module);
}

Tensor Zero3::after_forward(nn::Module& module, const Tensor& out) {
  // The root unit stays gathered until its gradients are reduced (or, after forwards without
  // a backward, until release_parameters(): a backward may still follow a no-grad forward, and
  // evaluation gathers it once, not per batch).
  if (&module == root_module_) return out;
  auto it = block_unit_.find(&module);
  auto ft = block_frozen_.find(&module);
  if (it == block_unit_.end() && ft == block_frozen_.end()) return out;  // no parameters
  if (it != block_unit_.end()) release(it->second);
  if (ft != block_frozen_.end()) release_frozen(ft->second);
  const int block = block_index_.at(&module);
  const nn::Module* m = &module;
  return autograd::record("Zero3Gather", {out}, out,
                          [this, m, block](const Tensor& g) -> std::vector<Tensor> {
                            // The gradient reached this block's output: every later block's
                            // backward is over, so their frozen parameters can go.
                            for (size_t f = 0; f < frozen_.size(); ++f) {
                              if (frozen_[f].block > block && frozen_[f].block >= 0) {
                                release_frozen(f);
                              }
                            }
                            gather_module(m);
                            return {g};
                          });
}

std::vector<std::pair<ParamSlice, Tensor>> Zero3::parameter_pieces() const {
  std::vector<std::pair<ParamSlice, Tensor>> out;
  for (const Piece& piece : pieces_) {
    const Param& p = params_[piece.param];
    out.emplace_back(ParamSlice{p.name, piece.lo - p.offset, p.shape}, piece.value);
  }
  return out;
}

TrainingMemory Zero3::memory(const optim::Optimizer& optimizer) const {
  TrainingMemory m;
  m.params = static_cast<int64_t>(shard_params_.nbytes());
  for (size_t u = 0; u < units_.size(); ++u) {
    if (gathered_[u]) m.params += static_cast<int64_t>(buffers_[u].nbytes());
  }
  for (const FrozenUnit& f : frozen_) {
    m.params += static_cast<int64_t>(f.shard.nbytes());
    if (f.gathered) m.params += static_cast<int64_t>(f.buffer.nbytes());
  }
  m.grads = static_cast<int64_t>(shard_grads_.nbytes());
  m.optimizer = optimizer.state_bytes();
  return m;
}

}  // namespace hfrun::dist
