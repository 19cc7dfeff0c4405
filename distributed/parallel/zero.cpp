// What the ZeRO stages share (ShardedStrategy) and stages 1 and 2 (Zero12): a unit has a
// multiple of N elements (the last is padded) split into N equal chunks, rank r owning chunk r
// of every unit, as FSDP shards each flat parameter; gradients are reduce-scattered per unit,
// the optimizer covers this rank's chunks only, and after its step the units are all-gathered.
#include <algorithm>

#include "common/error.h"
#include "distributed/parallel/zero.h"
#include "tensor/ops.h"

namespace hfrun::dist {

void ShardedStrategy::lay_out_shards() {
  shard_total_ = 0;
  shard_offset_.assign(units_.size(), 0);
  for (size_t u = 0; u < units_.size(); ++u) {
    shard_offset_[u] = shard_total_;
    shard_total_ += chunk_elements(u);
  }
  staging_.assign(units_.size(), Tensor());
  recv_.assign(units_.size(), Tensor());
  wire_in_.assign(units_.size(), Tensor());
  if (staged_) {
    shard_grads_ = ops::zeros({std::max<int64_t>(shard_total_, 1)}, DType::kF32, ctx_.device);
  }
}

void ShardedStrategy::make_pieces(const std::function<Tensor(size_t)>& chunk_values) {
  for (size_t u = 0; u < units_.size(); ++u) {
    const int64_t clo = units_[u].lo(ctx_.rank), chi = units_[u].hi(ctx_.rank);
    if (chi <= clo) continue;
    const Tensor reduced = reduced_view(u);
    const Tensor values = chunk_values(u);
    for (size_t p = 0; p < params_.size(); ++p) {
      const int64_t lo = std::max(clo, params_[p].offset);
      const int64_t hi = std::min(chi, params_[p].offset + params_[p].numel);
      if (hi <= lo) continue;
      Piece piece{p, lo, hi, flat_range(values, lo - clo, hi - lo),
                  flat_range(reduced, lo - clo, hi - lo)};
      piece.value.set_grad(piece.grad);
      pieces_.push_back(std::move(piece));
    }
  }
}

Tensor ShardedStrategy::reduced_view(size_t u) {
  if (staged_) return flat_range(shard_grads_, shard_offset_[u], chunk_elements(u));
  return flat_range(flat_grads_, units_[u].lo(ctx_.rank), chunk_elements(u));
}

std::shared_ptr<Work> ShardedStrategy::issue(size_t u) {
  // An embedding table's unit that no rank touched (stage 1): its chunk holds zeros already,
  // and the lookup's rows come apart.
  if (skips_table_unit(u)) return nullptr;
  const UnitLayout& unit = units_[u];
  const int64_t padded = unit.chunk * ctx_.size;
  Tensor in;
  if (staged_) {
    staging_[u] = stage(u);
    in = staging_[u];
  } else if (unit.begin + padded == unit.end) {
    in = flat_range(flat_grads_, unit.begin, padded);
  } else {  // the last unit of a run, padded past its end (another unit's elements, or none)
    staging_[u] = ops::zeros({padded}, DType::kF32, ctx_.device);
    Tensor head = flat_range(staging_[u], 0, unit.end - unit.begin);
    ops::copy_(head, flat_range(flat_grads_, unit.begin, unit.end - unit.begin));
    in = staging_[u];
  }
  wire_in_[u] = wire_tensor(in, ctx_);  // kept alive until the collective completes
  if (!staged_ && ctx_.reduce_dtype == DType::kF32 && wire_in_[u].is_same(in) &&
      unit.begin + padded == unit.end) {
    // Stage 1 reduces the flat gradient buffer in place: this rank's chunk is its own block of
    // the unit, where the optimizer reads it.
    recv_[u] = flat_range(in, ctx_.rank * unit.chunk, unit.chunk);
  } else {
    recv_[u] = ops::empty({unit.chunk}, ctx_.reduce_dtype, ctx_.device);
  }
  auto work = ctx_.data_device->reduce_scatter(recv_[u], wire_in_[u], wire_op(ctx_), ctx_.opts);
  reduce_issued(u);
  return work;
}

void ShardedStrategy::complete(size_t u) {
  const int64_t n = chunk_elements(u);
  if (n > 0 && recv_[u].defined()) {  // (not a skipped table unit)
    Tensor dst = reduced_view(u);
    if (recv_[u].raw_data() != dst.raw_data()) {  // (else reduced in place)
      const Tensor src = ops::to_dtype(flat_range(recv_[u], 0, n), DType::kF32);
      if (accumulate_) {
        ops::add_(dst, src);
      } else {
        ops::copy_(dst, src);
      }
    }
  }
  recv_[u] = Tensor();
  wire_in_[u] = Tensor();
  staging_[u] = Tensor();
}

Tensor ShardedStrategy::stage(size_t u) {
  // Staged when the unit is issued, not as each gradient is final: a unit whose parameters
  // are final far apart (ZeRO-3's root unit: the final norm early in backward, a tied
  // embedding last) would otherwise hold its whole staging buffer through the backward.
  const UnitLayout& unit = units_[u];
  const int64_t padded = unit.chunk * ctx_.size;
  Tensor staging = ops::empty({padded}, DType::kF32, ctx_.device);
  int64_t written = unit.begin;  // flat elements below this are set
  const auto zero_to = [&](int64_t hi) {
    if (hi <= written) return;
    Tensor gap = flat_range(staging, written - unit.begin, hi - written);
    ops::fill_(gap, 0.0);
    written = hi;
  };
  for (size_t p : unit_params_[u]) {  // in offset order
    const Param& param = params_[p];
    Tensor& leaf = leaves_[p];
    const Tensor g = leaf.grad();
    if (g.defined()) {
      const int64_t lo = std::max(unit.begin, param.offset);
      const int64_t hi = std::min(unit.end, param.offset + param.numel);
      zero_to(lo);
      Tensor dst = flat_range(staging, lo - unit.begin, hi - lo);
      ops::copy_(dst, ops::narrow(ops::reshape(g, {param.numel}), 0, lo - param.offset, hi - lo));
      written = hi;
    }
    const auto& of = param.units;
    if (std::all_of(of.begin(), of.end(), [&](size_t v) { return issued(v); })) {
      leaf.set_grad(Tensor());  // the next micro-step starts from none
    }
  }
  zero_to(unit.begin + padded);
  return staging;
}

std::vector<optim::ParamRef> ShardedStrategy::optimizer_params(
    const std::vector<optim::ParamRef>& full, std::vector<ParamSlice>* slices) const {
  HF_CHECK(full.size() == params_.size(), "optimizer_params: ", full.size(),
           " parameters given, the model has ", params_.size());
  std::vector<optim::ParamRef> out;
  if (slices) slices->clear();
  for (const Piece& piece : pieces_) {
    const Param& p = params_[piece.param];
    const int64_t offset = piece.lo - p.offset;
    out.push_back(optim::ParamRef{p.name + "@" + std::to_string(offset), piece.value,
                                  full[piece.param].decay});
    if (slices) slices->push_back(ParamSlice{p.name, offset, p.shape});
  }
  return out;
}

double ShardedStrategy::clip_grad_norm(double max_norm, float inv_scale) {
  std::vector<Tensor> split, replicated;
  for (const Piece& piece : pieces_) {
    (tp_split_[piece.param] ? split : replicated).push_back(piece.value);
  }
  return clip_over(split, replicated, /*sharded=*/true, max_norm, inv_scale);
}

void ShardedStrategy::zero_grad(nn::Module& model) {
  model.zero_grad_lazily();
  accumulate_ = false;  // the next micro-step overwrites the shard
}

std::vector<Tensor> Zero12::shared_weight_copies() const {
  std::vector<Tensor> out;
  if (!shared_copies_.defined()) return out;
  for (const Piece& piece : pieces_) {
    out.push_back(flat_range(shared_copies_, piece.lo, piece.hi - piece.lo));
  }
  return out;
}

void Zero12::complete_shared_copies(const std::vector<bool>& written) {
  if (!shared_copies_.defined()) return;
  HF_CHECK(written.size() == pieces_.size(), "complete_shared_copies: ", written.size(),
           " flags for ", pieces_.size(), " optimizer parameters");
  for (size_t i = 0; i < pieces_.size(); ++i) {
    if (written[i]) continue;
    Tensor dst = flat_range(shared_copies_, pieces_[i].lo, pieces_[i].hi - pieces_[i].lo);
    ops::copy_(dst, pieces_[i].value);
  }
}

void Zero12::lay_out(nn::Module& model) {
  share_parameters(model);
  if (shared_ && !staged_ && flat_grads_.defined()) {
    // Stage 1's gradient buffer in a slice of node shared memory: each rank's reduce-scatter
    // reads the others' blocks where they lie instead of copying them in.
    Tensor grads = ctx_.data->node_shared_slices(flat_grads_.numel(), DType::kF32, ctx_.opts);
    if (grads.defined()) {
      model.move_flat_gradients(grads);
      flat_grads_ = grads;
    }
  }
  // Stage 1 synchronises embedding tables in two parts, as DDP (strategy.h); a table's units
  // hold nothing else. Stage 2 reduces each micro-step's gradients as they are final, the
  // tables' whole.
  const std::vector<bool> table =
      staged_ ? std::vector<bool>(params_.size(), false) : embedding_tables(model);
  std::vector<ParamRange> ranges, apart;
  for (size_t p = 0; p < params_.size(); ++p) {
    ranges.push_back({params_[p].offset, params_[p].numel});
    if (table[p]) apart.push_back(ranges.back());
  }
  units_ = chunk_layout(total_, ctx_.bucket_elements, ctx_.size, apart);
  const auto overlaps = units_of_params(ranges, units_);
  for (size_t p = 0; p < params_.size(); ++p) params_[p].units = overlaps[p];
  lay_out_shards();
  make_pieces([this](size_t u) {
    return flat_range(flat_params_, units_[u].lo(ctx_.rank), chunk_elements(u));
  });
  if (staged_) {  // stage 2 keeps no whole gradients
    model.release_gradient_buffer();
    flat_grads_ = Tensor();
  }
  take_rows(table);
}

void Zero12::synchronised() {
  ShardedStrategy::synchronised();
  // Shared parameters: no rank's step writes them while another's backward may still read
  // them; and no rank adds rows into its gradient buffer (below) while another's reduce-scatter
  // may still read that buffer's blocks (stage 1's buffer in node shared memory).
  if (shared_ && window_ends()) ctx_.data->barrier(ctx_.opts)->wait();
  // Into the whole table's gradient: only this rank's chunks of it are read.
  add_rows();
}

void Zero12::after_optimizer_step() {
  if (shared_) {  // every rank wrote its chunks in place; the next forward reads them all
    ctx_.data->barrier(ctx_.opts)->wait();
    return;
  }
  // Every unit's gather as one grouped op (one NCCL launch on GPUs).
  const int rank = ctx_.rank;
  std::vector<Tensor> outs, ins;
  std::vector<std::pair<size_t, Tensor>> staged;
  for (size_t u = 0; u < units_.size(); ++u) {
    const UnitLayout& unit = units_[u];
    const int64_t padded = unit.chunk * ctx_.size;
    Tensor out;
    if (unit.begin + padded == unit.end) {
      out = flat_range(flat_params_, unit.begin, padded);
    } else {  // the last unit of a run, padded past its end
      out = ops::zeros({padded}, DType::kF32, ctx_.device);
      const int64_t n = chunk_elements(u);
      if (n > 0) {
        Tensor mine = flat_range(out, rank * unit.chunk, n);
        ops::copy_(mine, flat_range(flat_params_, unit.lo(rank), n));
      }
      staged.emplace_back(u, out);
    }
    ins.push_back(flat_range(out, rank * unit.chunk, unit.chunk));
    outs.push_back(out);
  }
  if (!outs.empty()) ctx_.data_device->allgather_coalesced(outs, ins, ctx_.opts)->wait();
  for (auto& [u, out] : staged) {
    const UnitLayout& unit = units_[u];
    Tensor dst = flat_range(flat_params_, unit.begin, unit.end - unit.begin);
    ops::copy_(dst, flat_range(out, 0, unit.end - unit.begin));
  }
}

TrainingMemory Zero12::memory(const optim::Optimizer& optimizer) const {
  TrainingMemory m;
  m.params = static_cast<int64_t>(flat_params_.nbytes());
  m.grads = static_cast<int64_t>(staged_ ? shard_grads_.nbytes() : flat_grads_.nbytes());
  m.optimizer = optimizer.state_bytes();
  m.params_shared = shared_;
  return m;
}

}  // namespace hfrun::dist
