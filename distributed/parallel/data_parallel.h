// Data-parallel training across processes started by mpirun/srun (hfrun -np N): the job's
// Topology, the parameter broadcast at start, and the gradient synchronisation of every
// optimizer step, either replicated (DDP, zero_stage 0) or sharded (ZeRO stages 1, 2 and 3).
// Each stage is a Strategy of its own (strategy.h: Ddp, Zero12, Zero3) behind this facade.
//
// The flat buffers (nn::FlatParameters) are cut into communication units: contiguous element
// ranges of about distributed.bucket_mb.
//  - Stage 0 (DDP): units end on parameter boundaries; each unit's gradients are averaged with
//    an all-reduce as soon as they are final (grad-ready hooks), overlapping with the rest of
//    backward. Every rank then runs the same optimizer step on all parameters. An embedding
//    table is a unit of its own; its lookups' gradient rows are all-gathered apart after
//    backward (ddp.cpp), so a tied head's dense gradient need not wait for the lookup.
//  - ZeRO (stage 1 and 2): a unit has a multiple of N elements (the last is padded) and is
//    split into N equal chunks; rank r owns chunk r of every unit, as FSDP shards each flat
//    parameter. Gradients are reduce-scattered per unit, so rank r receives the averaged
//    gradient of its chunks only; the optimizer (and its state) covers only those chunks; after
//    the step each unit's parameters are all-gathered in place.
//    Stage 3 also shards the parameters: each of the model's blocks() (transformer layers) is
//    a unit with its own buffer, gathered just before the block's forward and again before its
//    backward and freed after each; the other parameters (embeddings, final norm) form a root
//    unit gathered for the whole forward and backward. Each rank keeps only its chunks.
//    Stage 1 keeps the full gradient buffer (accumulation is local; one reduce-scatter per
//    step). Stage 2 keeps no full gradient buffer: each parameter's gradient is copied into its
//    unit's staging buffer and dropped, and the unit is reduce-scattered and accumulated into
//    the rank's compact gradient shard on every micro-step (as DeepSpeed's stage 2).
// With distributed.tensor_parallel = T the job's ranks form groups of T that split each layer
// (the model's plan, applied by distributed/parallel/tensor_parallel.h); all of the above runs
// over the data-parallel group of each tensor-parallel rank, on that rank's part of the
// parameters.
// Per-rank bytes of parameters + gradients + optimizer state then follow the ZeRO paper:
// stage 0 16P, stage 1 8P + 8P/N, stage 2 4P + 12P/N, stage 3 16P/N (f32 AdamW, P
// parameters), plus the units in flight and, for stage 3, the gathered working layer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "distributed/parallel/topology.h"
#include "nn/module.h"
#include "optim/optimizer.h"
#include "tensor/tensor.h"

namespace hfrun::dist {

// Where an optimizer parameter's elements sit in a model parameter: the whole parameter
// (offset 0, numel = the parameter's), or a ZeRO piece [offset, offset + numel) of its
// flattened elements. Checkpoints address optimizer state by it.
struct ParamSlice {
  std::string name;  // the model parameter's name
  int64_t offset = 0;
  Shape full_shape;
};

struct DataParallelOptions {
  int zero_stage = 0;     // 0 (DDP) | 1 | 2 | 3
  double bucket_mb = 25;  // communication unit size
  // Gradients on the wire: f32, or bf16 (distributed.reduce_dtype; see StrategyContext).
  DType reduce_dtype = DType::kF32;
};

// Bytes this rank holds for training state (live tensors, not the allocator's cache).
struct TrainingMemory {
  int64_t params = 0, grads = 0, optimizer = 0;
  // The parameters live in memory every data-parallel rank of the node maps (DDP and ZeRO-1/2
  // on one node): `params` bytes once for the node, not per rank.
  bool params_shared = false;
  // So does the optimizer state, DDP's whole state that the node's ranks update in parts.
  bool optimizer_shared = false;
  int64_t total() const { return params + grads + optimizer; }
};

class DataParallel {
 public:
  // Over the job's groups (null topology: null, one process trains plainly). The training
  // tensors move over the topology's device groups, host values over MPI.
  static std::unique_ptr<DataParallel> create(std::unique_ptr<Topology> topology,
                                              const DataParallelOptions& options);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // This rank's place in its data-parallel group (ranks holding the same tensor-parallel part
  // and training on different data): rank() in [0, world()).
  int rank() const;
  int world() const;
  // The whole job: global_world() = world() * tensor_parallel_size(); ranks g*T .. g*T+T-1
  // form a tensor-parallel group, ranks with equal g % T a data-parallel group.
  int global_rank() const;
  int global_world() const;
  int tensor_parallel_rank() const;
  int tensor_parallel_size() const;
  // The tensor-parallel group (null when distributed.tensor_parallel is 1).
  nn::TensorParallelGroup* tensor_parallel();
  // Every tensor-parallel rank's `local` (any shape; sizes may differ), in tensor-parallel rank
  // order, as 1-D tensors.
  std::vector<Tensor> gather_tensor_parallel(const Tensor& local);
  int zero_stage() const;
  // How the training tensors travel between data-parallel ranks (Topology::transport()).
  const std::string& gradient_transport() const;
  // Every rank's `flat` becomes rank 0's.
  void broadcast(Tensor& flat);

  // Prepares gradient synchronisation over `model`'s flat buffers (flatten_parameters() done;
  // for stage 2 the module's gradient buffer is released here) and registers the grad-ready
  // hooks. Call once.
  void attach(nn::Module& model);
  // The parameters this rank's optimizer updates, from the model's (`full`, one per model
  // parameter, in named_parameters() order): `full` itself for stage 0; for ZeRO, 1-D pieces
  // (views of the flat parameter buffer whose .grad() is this rank's gradient shard), named
  // "<name>@<offset>" and keeping the parameter's decay flag. `slices` (optional) receives
  // where each returned parameter sits in its model parameter.
  std::vector<optim::ParamRef> optimizer_params(const std::vector<optim::ParamRef>& full,
                                                std::vector<ParamSlice>* slices) const;
  // Before each micro-step's backward: the last micro-step's backward (every micro-step's for
  // stage 2) synchronises gradients as they become final.
  void before_backward(bool last_micro_step);
  // After each micro-step's backward: issues what is left and waits for every unit. After the
  // last micro-step each rank holds the global batch's mean gradient for the parameters it
  // updates. A no-op when the micro-step synchronised nothing.
  void finish_gradient_sync();
  // Global L2 norm of the synchronised gradients (over all shards) and clipping to max_norm as
  // torch.nn.utils.clip_grad_norm_ (max_norm = inf: measure only). Returns the total norm.
  // Loss scaling: inv_scale != 1 unscales this rank's gradients in the norm's pass; the norm is
  // then finite exactly when the gradients it covers (over the groups it sums) are.
  double clip_grad_norm(double max_norm, float inv_scale = 1.0f);
  // The optimizer prepare() made, once, before its first step. DDP with parameters in memory
  // the node's ranks share (memory().params_shared) splits its step between them: when it
  // updates exactly the parameters optimizer_params() gave, each rank updates a contiguous part
  // of the flat buffer and its state moves into node shared memory too
  // (optim::Optimizer::share_step: the state stays whole, as DDP's, held once for the node).
  // Otherwise (another parameter set, or no room for the state) rank 0 alone steps
  // (steps_optimizer()). Collective.
  void adopt_optimizer(optim::Optimizer& optimizer);
  // Whether this rank runs the optimizer step (false only on DDP ranks other than 0 whose
  // parameters are shared but whose optimizer could not share its step).
  bool steps_optimizer() const;
  // ZeRO: all-gathers every unit's updated parameters; with parameters in memory the node's
  // ranks share (DDP, ZeRO-1/2), waits until every rank wrote its part. Nothing otherwise.
  void after_optimizer_step();
  // Mixed precision's 16-bit weight copies in memory the node's ranks share (DDP whose step
  // the node's ranks share, ZeRO-1/2 with shared parameters; a model with a 16-bit compute
  // dtype; empty otherwise): per optimizer
  // parameter (optimizer_params() order), the view of the shared copy buffer its update writes
  // (optim::Optimizer::step's `copies`). Each rank writes its chunks' copies; after the step every
  // rank reads all of them, and none casts the weights again.
  std::vector<Tensor> shared_weight_copies() const;
  // After an optimizer step that wrote those copies where `written` says (per optimizer
  // parameter): casts the others from their parameters (not updated, say, for want of a
  // gradient), so that every shared copy equals its parameter's cast. Before
  // after_optimizer_step().
  void complete_shared_copies(const std::vector<bool>& written);
  // The shared copy of `source` (a view of the parameters), laid out as `copy` (source's cast by
  // ops::to_dtype); undefined where there is none (no shared copies, or a source outside them).
  Tensor shared_copy_of(const Tensor& source, const Tensor& copy) const;
  // ZeRO-3: materialises every parameter (for an export) / frees them again; no-ops otherwise.
  void gather_parameters();
  void release_parameters();
  // ZeRO-3: this rank's pieces of the parameters, for its checkpoint file; empty otherwise.
  std::vector<std::pair<ParamSlice, Tensor>> parameter_pieces() const;
  // Zeros what accumulates gradients: the flat gradient buffer (stages 0 and 1); stage 2's
  // shard is overwritten by the first micro-step instead.
  void zero_grad(nn::Module& model);

  // The sum of `v` over the data-parallel group, in double, added in rank order (the same on
  // every rank).
  double sum(double v);
  // The largest `v` over every rank of the job (tensor-parallel ranks included), e.g. a stop
  // signal that reached one rank.
  int max_over_job(int v);
  // Every rank's `s` (the whole job), in global rank order.
  std::vector<std::string> allgather_strings(const std::string& s);
  void barrier();
  TrainingMemory memory(const optim::Optimizer& optimizer) const;

  struct Impl;

 private:
  explicit DataParallel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hfrun::dist
