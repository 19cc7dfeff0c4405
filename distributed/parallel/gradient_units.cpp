// The communication units of DataParallel (see data_parallel.h for the policy): DDP
// buckets, ZeRO chunks with their staging, reduce-scatter and accumulation, and ZeRO-3's
// gathering of a block's parameters around its forward and backward.
#include <algorithm>

#include "autograd/node.h"
#include "common/error.h"
#include "distributed/parallel/data_parallel_impl.h"
#include "distributed/parallel/layout.h"
#include "tensor/ops.h"

namespace hfrun::dist {

// Where unit u's reduced chunk lives for the optimizer.
Tensor DataParallel::Impl::reduced_view(size_t u) {
  const Unit& unit = units[u];
  const int64_t n = unit.hi(rank) - unit.lo(rank);
  if (stage >= 2) return flat_range(shard_grads, shard_offset[u], n);
  return flat_range(flat_grads, unit.lo(rank), n);
}

void DataParallel::Impl::issue(size_t u) {
  Unit& unit = units[u];
  unit.issued = true;
  if (stage == 0) {
    Tensor v = flat_range(flat_grads, unit.begin, unit.end - unit.begin);
    unit.work = tensor_world->allreduce(v, ReduceOp::kAvg, opts);
  } else {
    const int64_t padded = unit.chunk * size;
    Tensor in;
    if (stage == 1) {
      if (unit.begin + padded <= total) {
        in = flat_range(flat_grads, unit.begin, padded);
      } else {
        unit.staging = ops::zeros({padded}, DType::kF32, device);
        Tensor head = flat_range(unit.staging, 0, unit.end - unit.begin);
        ops::copy_(head, flat_range(flat_grads, unit.begin, unit.end - unit.begin));
        in = unit.staging;
      }
    } else {
      in = unit.staging;  // filled by the hooks
    }
    unit.recv = ops::empty({unit.chunk}, DType::kF32, device);
    unit.work = tensor_world->reduce_scatter(unit.recv, in, ReduceOp::kAvg, opts);
    // ZeRO-3: every gradient of the unit is computed, so its parameters are not needed again.
    if (stage == 3) release(u);
  }
  in_flight.push_back(u);
}

void DataParallel::Impl::gather(size_t u) {
  Unit& unit = units[u];
  if (unit.gathered) return;
  unit.buffer.storage()->materialize();
  Tensor mine = flat_range(shard_params, shard_offset[u], unit.chunk);
  tensor_world->allgather(unit.buffer, mine, opts)->wait();
  unit.gathered = true;
}

void DataParallel::Impl::release(size_t u) {
  Unit& unit = units[u];
  if (!unit.gathered) return;
  unit.buffer.storage()->release();
  unit.gathered = false;
}

void DataParallel::Impl::release_all() {
  for (size_t u = 0; u < units.size(); ++u) release(u);
}

void DataParallel::Impl::before_forward(nn::Module& module) {
  if (&module == root_module) {
    if (root_unit >= 0) gather(static_cast<size_t>(root_unit));
    return;
  }
  if (auto it = block_unit.find(&module); it != block_unit.end()) gather(it->second);
}

Tensor DataParallel::Impl::after_forward(nn::Module& module, const Tensor& out) {
  auto it = block_unit.find(&module);
  // The root unit is released once its gradients are reduced; a block without parameters has
  // no unit.
  if (&module == root_module || it == block_unit.end()) return out;
  const size_t u = it->second;
  release(u);
  return autograd::record("Zero3Gather", {out}, out,
                          [this, u](const Tensor& g) -> std::vector<Tensor> {
                            gather(u);
                            return {g};
                          });
}

void DataParallel::Impl::retire(size_t u) {
  Unit& unit = units[u];
  if (unit.retired) return;
  unit.work->wait();
  unit.retired = true;
  unit.work.reset();
  if (stage > 0) {
    const int64_t n = unit.hi(rank) - unit.lo(rank);
    if (n > 0) {
      Tensor dst = reduced_view(u);
      Tensor src = flat_range(unit.recv, 0, n);
      if (stage >= 2 && accumulate) {
        ops::add_(dst, src);
      } else {
        ops::copy_(dst, src);
      }
    }
    unit.recv = Tensor();
    unit.staging = Tensor();
  }
}

void DataParallel::Impl::retire_oldest() {
  retire(in_flight.front());
  in_flight.pop_front();
}

void DataParallel::Impl::stage_gradient(size_t p, Tensor& leaf) {
  const Param& param = params[p];
  Tensor g = leaf.grad();
  for (size_t u : param.units) {
    Unit& unit = units[u];
    if (!unit.staging.defined())
      unit.staging = ops::zeros({unit.chunk * size}, DType::kF32, device);
    if (!g.defined()) continue;  // no gradient reached it: zeros
    const int64_t lo = std::max(unit.begin, param.offset);
    const int64_t hi = std::min(unit.end, param.offset + param.numel);
    Tensor dst = flat_range(unit.staging, lo - unit.begin, hi - lo);
    Tensor src = ops::narrow(ops::reshape(g, {param.numel}), 0, lo - param.offset, hi - lo);
    ops::copy_(dst, src);
  }
  leaf.set_grad(Tensor());
}

void DataParallel::Impl::grad_ready(size_t p, Tensor& leaf) {
  if (!armed) return;
  if (stage >= 2) stage_gradient(p, leaf);
  for (size_t u : params[p].units) {
    Unit& unit = units[u];
    if (--unit.pending == 0 && !unit.issued) {
      if (stage >= 2) {
        while (in_flight.size() >= kMaxUnitsInFlight) retire_oldest();
      }
      issue(u);
    }
  }
}

void DataParallel::Impl::make_units() {
  std::vector<ParamRange> ranges;
  for (const Param& p : params) ranges.push_back({p.offset, p.numel});
  const std::vector<UnitLayout> layout = stage == 0 ? bucket_layout(ranges, total, bucket_elements)
                                                    : chunk_layout(total, bucket_elements, size);
  for (const UnitLayout& l : layout) {
    Unit unit;
    unit.begin = l.begin;
    unit.end = l.end;
    unit.chunk = l.chunk;
    units.push_back(std::move(unit));
  }
  const auto overlaps = units_of_params(ranges, layout);
  for (size_t p = 0; p < params.size(); ++p) {
    params[p].units = overlaps[p];
    for (size_t u : overlaps[p]) ++units[u].params;
  }
}

void DataParallel::Impl::make_layer_units(nn::Module& model, const std::vector<Tensor>& values) {
  const std::vector<nn::Module*> layers = model.blocks();
  std::vector<int> layer_of(params.size(), -1);
  for (size_t l = 0; l < layers.size(); ++l) {
    for (const auto& [name, t] : layers[l]->named_parameters()) {
      for (size_t p = 0; p < values.size(); ++p) {
        if (values[p].raw_data() == t.raw_data() && values[p].sizes() == t.sizes()) {
          layer_of[p] = static_cast<int>(l);
        }
      }
    }
  }
  std::vector<std::vector<size_t>> members(layers.size() + 1);  // [0]: root
  for (size_t p = 0; p < params.size(); ++p) members[layer_of[p] + 1].push_back(p);
  root_module = &model;
  constexpr int64_t kAlign = 16;
  int64_t begin = 0;
  for (size_t m = 0; m < members.size(); ++m) {
    if (members[m].empty()) continue;
    Unit unit;
    unit.begin = begin;
    int64_t len = 0;
    for (size_t p : members[m]) {
      params[p].offset = begin + len;
      params[p].units = {units.size()};
      len += (params[p].numel + kAlign - 1) / kAlign * kAlign;
    }
    unit.chunk = std::max<int64_t>(1, (len + size - 1) / size);
    unit.end = begin + unit.chunk * size;  // the padding is part of the unit
    unit.params = static_cast<int>(members[m].size());
    unit.buffer = ops::zeros({unit.chunk * size}, DType::kF32, device);
    unit.gathered = true;
    if (m == 0) {
      root_unit = static_cast<int>(units.size());
    } else {
      block_unit[layers[m - 1]] = units.size();
    }
    begin = unit.end;
    units.push_back(std::move(unit));
  }
  total = begin;
}

void DataParallel::Impl::make_pieces() {
  int64_t shard_total = 0;
  shard_offset.assign(units.size(), 0);
  for (size_t u = 0; u < units.size(); ++u) {
    shard_offset[u] = shard_total;
    shard_total += units[u].hi(rank) - units[u].lo(rank);
  }
  if (stage >= 2)
    shard_grads = ops::zeros({std::max<int64_t>(shard_total, 1)}, DType::kF32, device);
  if (stage == 3) {
    shard_params = ops::zeros({std::max<int64_t>(shard_total, 1)}, DType::kF32, device);
    for (size_t u = 0; u < units.size(); ++u) {
      Tensor dst = flat_range(shard_params, shard_offset[u], units[u].chunk);
      ops::copy_(dst, flat_range(units[u].buffer, rank * units[u].chunk, units[u].chunk));
    }
  }
  for (size_t u = 0; u < units.size(); ++u) {
    const int64_t clo = units[u].lo(rank), chi = units[u].hi(rank);
    if (chi <= clo) continue;
    Tensor reduced = reduced_view(u);
    for (size_t p = 0; p < params.size(); ++p) {
      const int64_t lo = std::max(clo, params[p].offset);
      const int64_t hi = std::min(chi, params[p].offset + params[p].numel);
      if (hi <= lo) continue;
      Tensor value = stage == 3 ? flat_range(shard_params, shard_offset[u] + (lo - clo), hi - lo)
                                : flat_range(flat_params, lo, hi - lo);
      Piece piece{p, lo, hi, value, flat_range(reduced, lo - clo, hi - lo)};
      piece.value.set_grad(piece.grad);
      pieces.push_back(std::move(piece));
    }
  }
}

}  // namespace hfrun::dist
