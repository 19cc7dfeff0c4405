// Internal to distributed/parallel/: the state behind DataParallel, shared by its parts:
//   data_parallel.cpp       creation over a Topology, and the host collectives it forwards;
//   data_parallel_step.cpp  the per-step API (attach, gradient sync, clipping, ZeRO gathers,
//                           memory accounting, checkpoint pieces);
//   gradient_units.cpp      the communication units: DDP buckets, ZeRO chunks (reduce-scatter,
//                           staging, accumulation) and ZeRO-3's per-layer gathering.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "distributed/comm/process_group.h"
#include "distributed/parallel/data_parallel.h"
#include "distributed/parallel/topology.h"
#include "nn/module.h"
#include "nn/tensor_parallel.h"
#include "tensor/tensor.h"

namespace hfrun::dist {

// A 1-D view of `flat` (1-D, contiguous) over [begin, begin + n).
inline Tensor flat_range(const Tensor& flat, int64_t begin, int64_t n) {
  return make_view(flat, {n}, {1}, flat.offset() + begin);
}

// ZeRO stages 2 and 3 keep at most this many units in flight during backward; older ones are
// retired (waited for, accumulated, their staging freed) first, bounding the staging memory.
constexpr size_t kMaxUnitsInFlight = 3;

struct DataParallel::Impl : nn::ForwardHook {
  // The job's groups (distributed/parallel/topology.h); the pointers below are into it.
  std::unique_ptr<Topology> topo;
  ProcessGroup* world = nullptr;         // the data-parallel group (MPI, host values)
  ProcessGroup* tp = nullptr;            // the tensor-parallel group (MPI) or null
  ProcessGroup* tensor_world = nullptr;  // the data-parallel group for device tensors
  Device device = Device::cpu();
  std::vector<bool> tp_split;  // per parameter: split across the tensor-parallel group
  CollectiveOptions opts;
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
    std::shared_ptr<Work> work;
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
  Tensor shard_grads;   // stages 2 and 3: this rank's gradient chunks, back to back
  Tensor shard_params;  // stage 3: this rank's parameter chunks, the same layout
  int root_unit = -1;   // stage 3: the parameters outside the model's blocks()
  const nn::Module* root_module = nullptr;                   // stage 3: the model
  std::unordered_map<const nn::Module*, size_t> block_unit;  // stage 3: block -> unit
  std::vector<int64_t> shard_offset;  // ZeRO: unit -> offset of its chunk in the shards
  bool armed = false;
  bool accumulate = false;  // stages 2 and 3: later micro-steps add into the shard

  Tensor reduced_view(size_t u);
  void issue(size_t u);
  // ZeRO-3: materialises unit u's parameters from every rank's chunk.
  void gather(size_t u);
  void release(size_t u);
  void release_all();
  // nn::ForwardHook (ZeRO-3), installed on the model and its blocks: the root unit is gathered
  // for the whole forward and backward, a block's unit around its forward and again for its
  // backward.
  void before_forward(nn::Module& module) override;
  Tensor after_forward(nn::Module& module, const Tensor& out) override;
  // Waits for unit u and moves its result where the optimizer reads it.
  void retire(size_t u);
  void retire_oldest();
  // Stage 2: copies leaf `p`'s gradient into the staging buffers of its units, then drops it.
  void stage_gradient(size_t p, Tensor& leaf);
  void grad_ready(size_t p, Tensor& leaf);
  void make_units();
  // ZeRO-3: one unit per block of the model plus a root unit for the other parameters, each
  // with its own padded buffer; parameters become views of those buffers.
  void make_layer_units(nn::Module& model, const std::vector<Tensor>& values);
  void make_pieces();
};

}  // namespace hfrun::dist
