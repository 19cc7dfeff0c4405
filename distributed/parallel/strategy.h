// The data-parallel strategies behind DataParallel (data_parallel.h has the user-facing policy):
// one small interface (gradient synchronisation around backward, parameter gather/release, the
// optimizer's shard, clipping over it) and three implementations over the shared unit layout
// (layout.h):
//   Ddp     (ddp.cpp)    zero_stage 0: replicated parameters, bucketed all-reduce;
//   Zero12  (zero.cpp)   stages 1 and 2: optimizer state (and for 2, gradients) sharded by
//                        reduce-scatter, parameters all-gathered after each step;
//   Zero3   (zero3.cpp)  stage 3: parameters sharded too, one unit per declared block, gathered
//                        by forward hooks installed on the model.
// Tensor parallelism is not a strategy of this kind: it splits the model itself by the family's
// plan (tensor_parallel.h) before any of these attach, and they run over the data-parallel
// group of each tensor-parallel rank, counting the split parameters once per part in the norm.
//
// The base class owns what every strategy shares: the model's parameters as laid out in a flat
// buffer, the communication units with their grad-ready countdown, the queue of units in flight
// and the global-norm arithmetic. A strategy says how its units are laid out, what a unit's
// collective is and what happens when it completes.
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "distributed/comm/process_group.h"
#include "distributed/parallel/data_parallel.h"
#include "distributed/parallel/layout.h"
#include "nn/module.h"
#include "optim/optimizer.h"
#include "tensor/tensor.h"

namespace hfrun::dist {

// The groups and settings a strategy runs over (pointers into the job's Topology, which
// outlives it).
struct StrategyContext {
  ProcessGroup* data = nullptr;         // the data-parallel group (MPI: host values)
  ProcessGroup* tensor = nullptr;       // the tensor-parallel group (MPI) or null
  ProcessGroup* data_device = nullptr;  // the data-parallel group for training tensors
  Device device = Device::cpu();
  CollectiveOptions opts;
  int64_t bucket_elements = 1;  // the unit size (elements)
  int rank = 0, size = 1;       // in the data-parallel group
  // The gradients' dtype on the wire (distributed.reduce_dtype): f32, or bf16 (half the bytes;
  // each unit divided by the world size in bf16 and summed, as PyTorch DDP's
  // bf16_compress_hook, then widened back into the f32 gradients). DDP's embedding lookup rows,
  // gathered apart and few, stay f32.
  DType reduce_dtype = DType::kF32;
};

// reduce_dtype bf16: a unit's f32 gradients as they go over the wire (divided by `size` first);
// the collective then sums (wire_op). f32: `grads` itself, averaged.
Tensor wire_tensor(const Tensor& grads, const StrategyContext& ctx);
inline ReduceOp wire_op(const StrategyContext& ctx) {
  return ctx.reduce_dtype == DType::kF32 ? ReduceOp::kAvg : ReduceOp::kSum;
}

// A 1-D view of `flat` (1-D, contiguous) over [begin, begin + n).
inline Tensor flat_range(const Tensor& flat, int64_t begin, int64_t n) {
  return make_view(flat, {n}, {1}, flat.offset() + begin);
}

class Strategy {
 public:
  explicit Strategy(const StrategyContext& ctx) : ctx_(ctx) {}
  virtual ~Strategy();
  Strategy(const Strategy&) = delete;
  Strategy& operator=(const Strategy&) = delete;

  // zero_stage 0 (Ddp), 1 or 2 (Zero12), 3 (Zero3).
  static std::unique_ptr<Strategy> create(int zero_stage, const StrategyContext& ctx);

  // Reads the model's flat buffers (flatten_parameters() done), lays out the units and
  // registers the grad-ready hooks. Once.
  void attach(nn::Module& model);
  // DataParallel's per-step protocol (data_parallel.h documents each).
  void before_backward(bool last_micro_step);
  void finish_gradient_sync();
  virtual std::vector<optim::ParamRef> optimizer_params(const std::vector<optim::ParamRef>& full,
                                                        std::vector<ParamSlice>* slices) const = 0;
  virtual double clip_grad_norm(double max_norm, float inv_scale) = 0;
  virtual void after_optimizer_step() {}
  // The optimizer prepare() made (DataParallel::adopt_optimizer) / whether this rank runs its
  // step (DataParallel::steps_optimizer).
  virtual void adopt_optimizer(optim::Optimizer& /*optimizer*/) {}
  virtual bool steps_optimizer() const { return true; }
  virtual std::vector<Tensor> shared_weight_copies() const { return {}; }
  virtual void complete_shared_copies(const std::vector<bool>& /*written*/) {}
  // The view of shared_copies_ that stands for `copy` (DataParallel::shared_copy_of).
  Tensor shared_copy_of(const Tensor& source, const Tensor& copy) const;
  virtual void zero_grad(nn::Module& model) { model.zero_grad_lazily(); }
  virtual void gather_parameters() {}
  virtual void release_parameters() {}
  virtual std::vector<std::pair<ParamSlice, Tensor>> parameter_pieces() const { return {}; }
  virtual TrainingMemory memory(const optim::Optimizer& optimizer) const = 0;

 protected:
  // A model parameter and where it lies in the flat buffer (or, for ZeRO-3, in its unit's).
  struct Param {
    std::string name;
    int64_t offset = 0, numel = 0;
    Shape shape;
    std::vector<size_t> units;  // the units it overlaps, in unit order
  };

  // Lays out units_ (and params_[p].units) over params_; may move the model's parameters
  // (replace_parameters, updating leaves_) before the grad-ready hooks are set on them.
  virtual void lay_out(nn::Module& model) = 0;
  // Starts unit u's collective (every gradient in it is final); returns its handle, or null
  // when the unit needs no collective this time (every rank must decide alike).
  virtual std::shared_ptr<Work> issue(size_t u) = 0;
  // Unit u's collective has completed: move the result where the optimizer reads it.
  virtual void complete(size_t /*u*/) {}
  // Parameter p's gradient is final (before its units count it down).
  virtual void gradient_final(size_t /*p*/, Tensor& /*leaf*/) {}
  // Whether every micro-step's backward synchronises (the gradients are not kept whole across
  // micro-steps) rather than only the window's last.
  virtual bool syncs_every_micro_step() const { return false; }
  // Units kept in flight during backward before the oldest is retired (bounds staging memory).
  virtual size_t max_in_flight() const { return std::numeric_limits<size_t>::max(); }
  // After the synchronisation of a micro-step completed.
  virtual void synchronised() {}
  // Whether the backward running now synchronises (before_backward armed it).
  bool synchronising() const { return armed_; }
  // Whether the last before_backward() was for the window's last micro-step (in synchronised():
  // whether the optimizer step comes next).
  bool window_ends() const { return window_ends_; }
  // Whether unit u's collective has been issued in the current synchronisation.
  bool issued(size_t u) const { return sync_[u].issued; }

  // Embedding tables synchronised in two parts (DDP and ZeRO-1). A lookup runs first in
  // forward, so last in backward: a table whose whole gradient waited for it (a tied lm_head's
  // 154 MB for GPT-2) would be reduced after backward, with nothing left to hide it behind.
  // Instead each table has units of its own, and its lookups hand their gradient rows to the
  // strategy (autograd::set_row_gradient_handler). The table's dense gradient (the tied
  // projection's) is then final early and its units go during backward as any other; the
  // lookup's rows, a few per token, are all-gathered at the end and added, divided by the world
  // size, once the units' results are in (add_rows). Where the rows of all ranks would
  // outnumber the table's, the lookup's gradient is added to the table before its units go (or,
  // when one is already on the wire, averaged apart as a dense table). Micro-steps that do not
  // synchronise add the rows in place. An untied table that only took rows this window needs no
  // collective of its units at all (skips_table_unit).
  //
  // Per parameter: whether it is the weight of one of the model's nn::Embedding modules (none
  // with one rank).
  std::vector<bool> embedding_tables(nn::Module& model) const;
  // Once units_ are laid out, the flagged tables' units holding nothing else: their lookups hand
  // their rows to the strategy from now on. The rows are added into the table's .grad(), which
  // must be whole (not staged).
  void take_rows(const std::vector<bool>& table);
  // For issue(u): whether u is a table's unit issued at the end of backward (no dense gradient
  // reached it) whose gradient no rank touched since the last synchronisation, so that it needs
  // no collective; every rank asks alike.
  bool skips_table_unit(size_t u);
  // In synchronised(), after every unit completed: the rows in flight, added into the tables'
  // gradients.
  void add_rows();

  // Ranks on one node whose group can share memory (ProcessGroup::node_shared_tensor: MPI with
  // the shared-memory sums) keep one copy of the parameters in memory they all map (DDP and
  // ZeRO-1/2, on the CPU): this moves the model's flat parameters (the frozen ones too) there,
  // filled from rank 0's, sets shared_ and, under a 16-bit compute dtype, allocates
  // shared_copies_ (mixed precision's weight copies, laid out as flat_params_) alike. Each
  // rank's optimizer step then writes its part of both in place and nothing is gathered; the
  // strategy orders the writes with two barriers: after the window's last backward (every rank
  // has read the parameters for the last time before any rank's step writes them) and after
  // the step (every part written before any rank's next forward reads it). From lay_out,
  // before the grad-ready hooks are set (the parameters become new views).
  void share_parameters(nn::Module& model);

  // Clips as torch.nn.utils.clip_grad_norm_ over gradients that are either split across the
  // tensor-parallel group (`split`: their squares are summed over it) or replicated in it; with
  // `sharded` the tensors of the data-parallel ranks are disjoint (squares summed over the
  // data-parallel group too). The tensors are the ones whose .grad() is clipped. inv_scale != 1
  // unscales them first, in the norm's pass (optim::grad_norm_squared).
  double clip_over(const std::vector<Tensor>& split, const std::vector<Tensor>& replicated,
                   bool sharded, double max_norm, float inv_scale);

  StrategyContext ctx_;
  std::vector<Param> params_;
  std::vector<Tensor> leaves_;  // the model's parameters (after lay_out)
  std::vector<bool> tp_split_;  // per parameter: split across the tensor-parallel group
  Tensor flat_params_, flat_grads_;
  int64_t total_ = 0;  // elements of the flat buffers (ZeRO-3: of its units, padded)
  std::vector<UnitLayout> units_;
  std::vector<std::vector<size_t>> unit_params_;  // per unit: the parameters it overlaps
  bool shared_ = false;   // the parameters live in node shared memory (share_parameters)
  Tensor shared_copies_;  // their 16-bit copies there, or undefined

 private:
  struct UnitSync {
    int params = 0, pending = 0;
    bool issued = false, retired = false;
    std::shared_ptr<Work> work;
  };
  void grad_ready(size_t p, Tensor& leaf);
  void rows_ready(size_t k, const Tensor& dy, const Tensor& ids);
  void start(size_t u);
  void retire(size_t u);
  void retire_oldest();

  std::vector<UnitSync> sync_;
  std::deque<size_t> in_flight_;  // issued, not yet retired, in issue order
  bool armed_ = false;
  bool window_ends_ = false;

  // An embedding table whose lookups' gradient rows are synchronised apart.
  struct RowTable {
    size_t param = 0;
    std::vector<size_t> units;
    // Since the last synchronisation its gradient buffer took something no other rank's has (a
    // dense gradient, or rows added in place); its units then go.
    bool local = false;
    int untouched = -1;  // skips_table_unit's agreed answer this time (-1: not asked yet)
  };
  // Rows of one lookup on their way: every rank's ids and rows (padded to the longest), or the
  // lookup's dense gradient being averaged.
  struct RowsInFlight {
    size_t table = 0;
    Tensor ids, rows, dense;
    std::shared_ptr<Work> work;
  };
  std::vector<RowTable> tables_;
  std::vector<int> table_of_unit_;  // per unit: its table, or -1 (empty: no tables)
  std::vector<RowsInFlight> rows_in_flight_;
};

}  // namespace hfrun::dist
