#include "train/distributed_setup.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "autograd/node.h"
#include "common/error.h"
#include "distributed/comm/env.h"
#include "distributed/comm/mpi_process_group.h"
#include "distributed/comm/process_group.h"
#include "optim/clip.h"
#include "tensor/ops.h"

namespace hfrun::train {

namespace {

std::once_flag g_init_once;
std::shared_ptr<dist::ProcessGroup>* g_world = nullptr;  // leaked: outlives static destructors

void at_exit() {
  finalize_distributed();
}

// A 1-D view of `flat` (1-D, contiguous) over [begin, begin + n).
Tensor range(const Tensor& flat, int64_t begin, int64_t n) {
  return make_view(flat, {n}, {1}, flat.offset() + begin);
}

// ZeRO stage 2 keeps at most this many units in flight during backward; older ones are
// retired (waited for, accumulated, their staging freed) first, bounding the staging memory.
constexpr size_t kMaxUnitsInFlight = 3;

}  // namespace

namespace {

// Sum of doubles over a group, exact and order-fixed: every rank adds the same values in rank
// order.
double sum_over(dist::ProcessGroup& group, double v, const dist::CollectiveOptions& opts) {
  Tensor mine = ops::empty({static_cast<int64_t>(sizeof(double))}, DType::kU8);
  std::memcpy(mine.raw_data(), &v, sizeof(double));
  Tensor all = ops::empty({static_cast<int64_t>(sizeof(double)) * group.size()}, DType::kU8);
  group.allgather(all, mine, opts)->wait();
  double total = 0;
  for (int r = 0; r < group.size(); ++r) {
    double x;
    std::memcpy(&x, static_cast<const char*>(all.raw_data()) + r * sizeof(double), sizeof(double));
    total += x;
  }
  return total;
}

// The tensor-parallel group's collectives for the model (models/tensor_parallel.h).
class MpiTensorParallelGroup : public nn::TensorParallelGroup {
 public:
  MpiTensorParallelGroup(std::shared_ptr<dist::ProcessGroup> g, dist::CollectiveOptions o)
      : group_(std::move(g)), opts_(o) {}
  int rank() const override { return group_->rank(); }
  int size() const override { return group_->size(); }
  void allreduce_sum(Tensor& t) override {
    group_->allreduce(t, dist::ReduceOp::kSum, opts_)->wait();
  }
  void allreduce_max(Tensor& t) override {
    group_->allreduce(t, dist::ReduceOp::kMax, opts_)->wait();
  }

 private:
  std::shared_ptr<dist::ProcessGroup> group_;
  dist::CollectiveOptions opts_;
};

// Checkpoints are written by every rank of the job.
class GlobalCheckpointGroup : public CheckpointGroup {
 public:
  explicit GlobalCheckpointGroup(DataParallel* dp) : dp_(dp) {}
  int rank() const override { return dp_->global_rank(); }
  int world() const override { return dp_->global_world(); }
  std::vector<std::string> allgather_strings(const std::string& s) override {
    return dp_->allgather_strings(s);
  }

 private:
  DataParallel* dp_;
};

}  // namespace

struct DataParallel::Impl : nn::LayerHooks {
  std::shared_ptr<dist::ProcessGroup> world;   // the data-parallel group
  std::shared_ptr<dist::ProcessGroup> global;  // every rank of the job
  std::shared_ptr<dist::ProcessGroup> tp;      // the tensor-parallel group (or null)
  std::unique_ptr<MpiTensorParallelGroup> tp_group;
  std::unique_ptr<GlobalCheckpointGroup> checkpoint_group;
  std::vector<bool> tp_split;  // per parameter: split across the tensor-parallel group
  dist::CollectiveOptions opts;
  int64_t bucket_elements = 0;
  int stage = 0;
  int rank = 0, size = 1;

  Tensor flat_params, flat_grads;  // flat_grads undefined for stage 2
  std::vector<Tensor> leaves;      // the model's parameters
  int64_t total = 0;               // elements of the flat buffers
  struct Param {
    std::string name;
    int64_t offset = 0, numel = 0;  // in the flat buffers
    Shape shape;
    std::vector<size_t> units;  // the units it overlaps
  };
  std::vector<Param> params;

  struct Unit {
    int64_t begin = 0, end = 0;  // flat range
    int64_t chunk = 0;           // ZeRO: padded length / world
    int params = 0, pending = 0;
    bool issued = false, retired = false;
    Tensor staging;  // ZeRO: the padded input of the reduce-scatter when it needs one
    Tensor recv;     // ZeRO: this rank's reduced chunk
    std::shared_ptr<dist::Work> work;
    Tensor buffer;  // ZeRO-3: the unit's gathered parameters (storage released between uses)
    bool gathered = false;  // ZeRO-3
    // This rank's chunk, clipped to the unit: [lo, hi) in flat elements.
    int64_t lo(int r) const { return std::min(end, begin + r * chunk); }
    int64_t hi(int r) const { return std::min(end, begin + (r + 1) * chunk); }
  };
  std::vector<Unit> units;
  std::deque<size_t> in_flight;  // issued, not yet retired, in issue order

  // ZeRO: this rank's pieces (one per parameter overlapping one of its chunks).
  struct Piece {
    size_t param;
    int64_t lo, hi;  // flat range
    Tensor value, grad;
  };
  std::vector<Piece> pieces;
  Tensor shard_grads;                 // stages 2 and 3: this rank's gradient chunks, back to back
  Tensor shard_params;                // stage 3: this rank's parameter chunks, the same layout
  int root_unit = -1;                 // stage 3: the parameters outside the model's layers()
  std::vector<size_t> layer_unit;     // stage 3: layer -> unit
  std::vector<int64_t> shard_offset;  // stage 2: unit -> offset of its chunk in shard_grads
  bool armed = false;
  bool accumulate = false;  // stage 2: later micro-steps add into the shard

  Tensor reduced_view(size_t u) {  // where unit u's reduced chunk lives for the optimizer
    const Unit& unit = units[u];
    const int64_t n = unit.hi(rank) - unit.lo(rank);
    if (stage >= 2) return range(shard_grads, shard_offset[u], n);
    return range(flat_grads, unit.lo(rank), n);
  }

  void issue(size_t u) {
    Unit& unit = units[u];
    unit.issued = true;
    if (stage == 0) {
      Tensor v = range(flat_grads, unit.begin, unit.end - unit.begin);
      unit.work = world->allreduce(v, dist::ReduceOp::kAvg, opts);
    } else {
      const int64_t padded = unit.chunk * size;
      Tensor in;
      if (stage == 1) {
        if (unit.begin + padded <= total) {
          in = range(flat_grads, unit.begin, padded);
        } else {
          unit.staging = ops::zeros({padded});
          Tensor head = range(unit.staging, 0, unit.end - unit.begin);
          ops::copy_(head, range(flat_grads, unit.begin, unit.end - unit.begin));
          in = unit.staging;
        }
      } else {
        in = unit.staging;  // filled by the hooks
      }
      unit.recv = ops::empty({unit.chunk});
      unit.work = world->reduce_scatter(unit.recv, in, dist::ReduceOp::kAvg, opts);
      // ZeRO-3: every gradient of the unit is computed, so its parameters are not needed again.
      if (stage == 3) release(u);
    }
    in_flight.push_back(u);
  }

  // ZeRO-3: materialises unit u's parameters from every rank's chunk.
  void gather(size_t u) {
    Unit& unit = units[u];
    if (unit.gathered) return;
    unit.buffer.storage()->materialize();
    Tensor mine = range(shard_params, shard_offset[u], unit.chunk);
    world->allgather(unit.buffer, mine, opts)->wait();
    unit.gathered = true;
  }
  void release(size_t u) {
    Unit& unit = units[u];
    if (!unit.gathered) return;
    unit.buffer.storage()->release();
    unit.gathered = false;
  }
  void release_all() {
    for (size_t u = 0; u < units.size(); ++u) release(u);
  }

  // nn::LayerHooks (ZeRO-3): the root unit is gathered for the whole forward and backward, a
  // layer's unit around its forward and again for its backward.
  void before_model() override {
    if (root_unit >= 0) gather(static_cast<size_t>(root_unit));
  }
  void before_layer(size_t i) override { gather(layer_unit.at(i)); }
  Tensor after_layer(size_t i, const Tensor& out) override {
    const size_t u = layer_unit.at(i);
    release(u);
    return autograd::record("Zero3Gather", {out}, out,
                            [this, u](const Tensor& g) -> std::vector<Tensor> {
                              gather(u);
                              return {g};
                            });
  }

  // Waits for unit u and moves its result where the optimizer reads it.
  void retire(size_t u) {
    Unit& unit = units[u];
    if (unit.retired) return;
    unit.work->wait();
    unit.retired = true;
    unit.work.reset();
    if (stage > 0) {
      const int64_t n = unit.hi(rank) - unit.lo(rank);
      if (n > 0) {
        Tensor dst = reduced_view(u);
        Tensor src = range(unit.recv, 0, n);
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

  void retire_oldest() {
    retire(in_flight.front());
    in_flight.pop_front();
  }

  // Stage 2: copies leaf `p`'s gradient into the staging buffers of its units, then drops it.
  void stage_gradient(size_t p, Tensor& leaf) {
    const Param& param = params[p];
    Tensor g = leaf.grad();
    for (size_t u : param.units) {
      Unit& unit = units[u];
      if (!unit.staging.defined()) unit.staging = ops::zeros({unit.chunk * size});
      if (!g.defined()) continue;  // no gradient reached it: zeros
      const int64_t lo = std::max(unit.begin, param.offset);
      const int64_t hi = std::min(unit.end, param.offset + param.numel);
      Tensor dst = range(unit.staging, lo - unit.begin, hi - lo);
      Tensor src = ops::narrow(ops::reshape(g, {param.numel}), 0, lo - param.offset, hi - lo);
      ops::copy_(dst, src);
    }
    leaf.set_grad(Tensor());
  }

  void grad_ready(size_t p, Tensor& leaf) {
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

  void make_units() {
    if (stage == 0) {
      // Buckets end on parameter boundaries.
      int64_t begin = 0;
      for (size_t k = 0; k < params.size(); ++k) {
        if (units.empty() || params[k].offset - begin >= bucket_elements) {
          begin = params[k].offset;
          if (!units.empty()) units.back().end = begin;
          units.push_back(Unit{});
          units.back().begin = begin;
        }
      }
      if (!units.empty()) units.back().end = total;
      if (!units.empty()) units.front().begin = 0;
    } else {
      const int64_t chunk_target = std::max<int64_t>(1, bucket_elements / size);
      for (int64_t begin = 0; begin < total; begin += chunk_target * size) {
        Unit unit;
        unit.begin = begin;
        unit.end = std::min(total, begin + chunk_target * size);
        unit.chunk = (unit.end - unit.begin + size - 1) / size;
        units.push_back(std::move(unit));
      }
    }
    for (size_t p = 0; p < params.size(); ++p) {
      Param& param = params[p];
      for (size_t u = 0; u < units.size(); ++u) {
        const Unit& unit = units[u];
        if (unit.begin < param.offset + param.numel && param.offset < unit.end) {
          param.units.push_back(u);
          ++units[u].params;
        }
      }
    }
  }

  // ZeRO-3: one unit per layer of the model plus a root unit for the other parameters, each
  // with its own padded buffer; parameters become views of those buffers.
  void make_layer_units(nn::Module& model, const std::vector<Tensor>& values) {
    const std::vector<const nn::Module*> layers = model.layers();
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
    layer_unit.assign(layers.size(), 0);
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
      unit.buffer = ops::zeros({unit.chunk * size});
      unit.gathered = true;
      if (m == 0) {
        root_unit = static_cast<int>(units.size());
      } else {
        layer_unit[m - 1] = units.size();
      }
      begin = unit.end;
      units.push_back(std::move(unit));
    }
    total = begin;
  }

  void make_pieces() {
    int64_t shard_total = 0;
    shard_offset.assign(units.size(), 0);
    for (size_t u = 0; u < units.size(); ++u) {
      shard_offset[u] = shard_total;
      shard_total += units[u].hi(rank) - units[u].lo(rank);
    }
    if (stage >= 2) shard_grads = ops::zeros({std::max<int64_t>(shard_total, 1)});
    if (stage == 3) {
      shard_params = ops::zeros({std::max<int64_t>(shard_total, 1)});
      for (size_t u = 0; u < units.size(); ++u) {
        Tensor dst = range(shard_params, shard_offset[u], units[u].chunk);
        ops::copy_(dst, range(units[u].buffer, rank * units[u].chunk, units[u].chunk));
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
        Tensor value = stage == 3 ? range(shard_params, shard_offset[u] + (lo - clo), hi - lo)
                                  : range(flat_params, lo, hi - lo);
        Piece piece{p, lo, hi, value, range(reduced, lo - clo, hi - lo)};
        piece.value.set_grad(piece.grad);
        pieces.push_back(std::move(piece));
      }
    }
  }
};

DataParallel::DataParallel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DataParallel::~DataParallel() = default;

void finalize_distributed() {
  if (g_world != nullptr) g_world->reset();
  if (dist::mpi_is_initialized()) dist::finalize_mpi();
}

std::unique_ptr<DataParallel> DataParallel::from_launch_env(const TrainConfig& cfg) {
  const dist::LaunchEnv env = dist::detect_launch_env();
  if (env.world <= 1) return nullptr;
  std::call_once(g_init_once, [&] {
    dist::export_torchrun_env(env);
    dist::init_mpi();
    g_world = new std::shared_ptr<dist::ProcessGroup>(dist::create_mpi_world());
    std::atexit(at_exit);
  });
  HF_CHECK(g_world != nullptr && *g_world != nullptr,
           "data-parallel training: the MPI world group was already finalized in this process");
  auto impl = std::make_unique<Impl>();
  impl->global = *g_world;
  HF_CHECK(impl->global->size() == env.world, "data-parallel training: MPI reports ",
           impl->global->size(), " ranks but the launch environment ", env.world);
  impl->stage = cfg.distributed.zero_stage;
  impl->opts.timeout = std::chrono::milliseconds(
      static_cast<int64_t>(std::max(cfg.distributed.timeout_s, 0.001) * 1000.0));
  const int T = static_cast<int>(cfg.distributed.tensor_parallel);
  HF_CHECK_INPUT(T >= 1 && env.world % T == 0, cfg.source, ": distributed.tensor_parallel ", T,
                 " must divide the number of ranks ", env.world);
  if (T > 1) {
    const int g = impl->global->rank();
    impl->tp = impl->global->split(g / T, g % T, impl->opts);
    impl->world = impl->global->split(g % T, g / T, impl->opts);
    impl->tp_group = std::make_unique<MpiTensorParallelGroup>(impl->tp, impl->opts);
  } else {
    impl->world = impl->global;
  }
  impl->rank = impl->world->rank();
  impl->size = impl->world->size();
  impl->bucket_elements = std::max<int64_t>(
      1, static_cast<int64_t>(cfg.distributed.bucket_mb * 1024.0 * 1024.0 / sizeof(float)));
  auto dp = std::unique_ptr<DataParallel>(new DataParallel(std::move(impl)));
  dp->impl_->checkpoint_group = std::make_unique<GlobalCheckpointGroup>(dp.get());
  return dp;
}

int DataParallel::global_rank() const {
  return impl_->global->rank();
}
int DataParallel::global_world() const {
  return impl_->global->size();
}
int DataParallel::tensor_parallel_rank() const {
  return impl_->tp ? impl_->tp->rank() : 0;
}
int DataParallel::tensor_parallel_size() const {
  return impl_->tp ? impl_->tp->size() : 1;
}
nn::TensorParallelGroup* DataParallel::tensor_parallel() {
  return impl_->tp_group.get();
}
CheckpointGroup& DataParallel::checkpoint_group() {
  return *impl_->checkpoint_group;
}

std::vector<Tensor> DataParallel::gather_tensor_parallel(const Tensor& local) {
  Impl& im = *impl_;
  if (!im.tp) return {ops::reshape(ops::contiguous(local), {local.numel()})};
  const int T = im.tp->size();
  Tensor n = ops::full({1}, static_cast<double>(local.numel()), DType::kI64);
  Tensor ns = ops::empty({T}, DType::kI64);
  im.tp->allgather(ns, n, im.opts)->wait();
  const std::vector<int64_t> sizes = ns.to_int_vector();
  const int64_t longest = *std::max_element(sizes.begin(), sizes.end());
  Tensor mine = ops::zeros({longest}, local.dtype());
  Tensor head = ops::narrow(mine, 0, 0, local.numel());
  ops::copy_(head, ops::reshape(local, {local.numel()}));
  Tensor all = ops::empty({longest * T}, local.dtype());
  im.tp->allgather(all, mine, im.opts)->wait();
  std::vector<Tensor> parts;
  for (int t = 0; t < T; ++t)
    parts.push_back(ops::clone(ops::narrow(all, 0, t * longest, sizes[t])));
  return parts;
}

int DataParallel::rank() const {
  return impl_->rank;
}
int DataParallel::world() const {
  return impl_->size;
}
int DataParallel::zero_stage() const {
  return impl_->stage;
}

void DataParallel::broadcast(Tensor& flat) {
  impl_->world->broadcast(flat, 0, impl_->opts)->wait();
}

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
    model.set_layer_hooks(&im);
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
        im.units[u].staging = ops::zeros({im.units[u].chunk * im.size});
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
  std::vector<std::shared_ptr<dist::Work>> works;
  std::vector<std::pair<size_t, Tensor>> staged;
  for (size_t u = 0; u < im.units.size(); ++u) {
    const Impl::Unit& unit = im.units[u];
    const int64_t padded = unit.chunk * im.size;
    Tensor out;
    if (unit.begin + padded <= im.total) {
      out = range(im.flat_params, unit.begin, padded);
    } else {
      out = ops::zeros({padded});
      const int64_t n = unit.hi(im.rank) - unit.lo(im.rank);
      if (n > 0) {
        Tensor mine = range(out, im.rank * unit.chunk, n);
        ops::copy_(mine, range(im.flat_params, unit.lo(im.rank), n));
      }
      staged.emplace_back(u, out);
    }
    Tensor in = range(out, im.rank * unit.chunk, unit.chunk);
    works.push_back(im.world->allgather(out, in, im.opts));
  }
  for (auto& w : works) w->wait();
  for (auto& [u, out] : staged) {
    const Impl::Unit& unit = im.units[u];
    Tensor dst = range(im.flat_params, unit.begin, unit.end - unit.begin);
    ops::copy_(dst, range(out, 0, unit.end - unit.begin));
  }
}

double DataParallel::sum(double v) {
  return sum_over(*impl_->world, v, impl_->opts);
}

std::vector<std::string> DataParallel::allgather_strings(const std::string& s) {
  Impl& im = *impl_;
  Tensor len = ops::full({1}, static_cast<double>(s.size()), DType::kI64);
  Tensor lens = ops::empty({im.global->size()}, DType::kI64);
  im.global->allgather(lens, len, im.opts)->wait();
  const std::vector<int64_t> sizes = lens.to_int_vector();
  const int64_t longest = std::max<int64_t>(1, *std::max_element(sizes.begin(), sizes.end()));
  Tensor mine = ops::zeros({longest}, DType::kU8);
  std::memcpy(mine.raw_data(), s.data(), s.size());
  Tensor all = ops::empty({longest * im.global->size()}, DType::kU8);
  im.global->allgather(all, mine, im.opts)->wait();
  std::vector<std::string> out;
  for (int r = 0; r < im.global->size(); ++r) {
    out.emplace_back(static_cast<const char*>(all.raw_data()) + r * longest,
                     static_cast<size_t>(sizes[r]));
  }
  return out;
}

void DataParallel::barrier() {
  impl_->global->barrier(impl_->opts)->wait();
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

}  // namespace hfrun::train

namespace hfrun::train {

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

}  // namespace hfrun::train
