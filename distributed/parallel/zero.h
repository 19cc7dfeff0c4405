// The ZeRO strategies (data_parallel.h has the policy): what stages 1, 2 and 3 share
// (ShardedStrategy: units of `world` equal chunks, this rank's pieces of the parameters, the
// reduce-scatter of each unit into its chunk, staging and accumulation for stages 2 and 3,
// clipping over the shards), Zero12 (stages 1 and 2 over the flat buffers, zero.cpp) and Zero3
// (per-block units gathered by forward hooks, zero3.cpp).
#pragma once

#include <functional>
#include <unordered_map>

#include "distributed/parallel/strategy.h"

namespace hfrun::dist {

class ShardedStrategy : public Strategy {
 public:
  // `staged`: gradients are not kept whole; a unit's parameters' gradients are copied into its
  // staging buffer when the last of them is final (and dropped once every unit they overlap
  // has them), and every micro-step reduce-scatters and accumulates into this rank's gradient
  // shard (stages 2 and 3). Otherwise (stage 1) the flat
  // gradient buffer accumulates locally and the window's last micro-step reduce-scatters it.
  ShardedStrategy(const StrategyContext& ctx, bool staged) : Strategy(ctx), staged_(staged) {}

  std::vector<optim::ParamRef> optimizer_params(const std::vector<optim::ParamRef>& full,
                                                std::vector<ParamSlice>* slices) const override;
  double clip_grad_norm(double max_norm, float inv_scale) override;
  void zero_grad(nn::Module& model) override;

 protected:
  // This rank's piece of parameter `param`: flat elements [lo, hi) inside one of its chunks.
  struct Piece {
    size_t param;
    int64_t lo, hi;
    Tensor value, grad;  // value.grad() is grad, a view of the reduced chunk
  };
  // After units_ is laid out: where each unit's chunk sits in this rank's shards, and (staged)
  // the gradient shard.
  void lay_out_shards();
  // Cuts this rank's chunks into pieces, one per parameter they overlap; `chunk_values(u)` is
  // unit u's chunk of parameter values (1-D, chunk_elements(u) long).
  void make_pieces(const std::function<Tensor(size_t)>& chunk_values);
  // Elements of this rank's chunk of unit u (0 past the end of an unpadded unit).
  int64_t chunk_elements(size_t u) const {
    return units_[u].hi(ctx_.rank) - units_[u].lo(ctx_.rank);
  }
  std::shared_ptr<Work> issue(size_t u) override;
  void complete(size_t u) override;
  bool syncs_every_micro_step() const override { return staged_; }
  // Stages 2 and 3 keep at most this many units in flight during backward; older ones are
  // retired (waited for, accumulated, their staging freed) first, bounding the staging memory.
  size_t max_in_flight() const override { return staged_ ? 3 : std::numeric_limits<size_t>::max(); }
  void synchronised() override { accumulate_ = staged_; }
  // Unit u's reduce-scatter was issued (ZeRO-3 releases its gathered parameters).
  virtual void reduce_issued(size_t /*u*/) {}

  bool staged_;
  std::vector<Piece> pieces_;
  std::vector<int64_t> shard_offset_;  // unit -> offset of this rank's chunk in the shards
  int64_t shard_total_ = 0;            // elements of this rank's chunks, back to back
  Tensor shard_grads_;                 // staged: this rank's gradient chunks, back to back

 private:
  // Where unit u's reduced chunk lives for the optimizer.
  Tensor reduced_view(size_t u);
  // Staged: unit u's padded reduce-scatter input from its parameters' gradients (zeros where
  // none reached), dropping the gradients no other unit still needs.
  Tensor stage(size_t u);
  std::vector<Tensor> staging_;  // per unit: the reduce-scatter's padded input when it needs one
  std::vector<Tensor> recv_;     // per unit: this rank's reduced chunk, until complete
  std::vector<Tensor> wire_in_;  // per unit: the collective's input (bf16 under reduce_dtype)
  bool accumulate_ = false;      // staged: later micro-steps add into the shard
};

// Stages 1 and 2: units cut from the flat buffers; after the optimizer step every unit's
// parameters are all-gathered in place.
//
// Ranks on one node whose group can share memory keep one copy of the parameters instead
// (Strategy::share_parameters): each rank's optimizer step writes its chunks there and nothing
// is gathered. On a 2-core node the gather's copy (475 MB for GPT-2 124M) and the comm thread's
// CPU time were the step's largest cost besides compute; the node also holds the parameters
// once instead of once per rank. Stage 1 also keeps each rank's gradient buffer in a slice of
// node shared memory (ProcessGroup::node_shared_slices), so that a reduce-scatter reads the
// other ranks' blocks where they lie; the barrier after backward comes before the embedding
// rows are added into it. Under mixed precision the weights' 16-bit copies are shared the same
// way: each rank's step writes its chunks' copies in the update's pass, and no rank casts the
// weights again.
class Zero12 final : public ShardedStrategy {
 public:
  Zero12(const StrategyContext& ctx, int stage) : ShardedStrategy(ctx, stage == 2) {}
  void after_optimizer_step() override;
  TrainingMemory memory(const optim::Optimizer& optimizer) const override;
  std::vector<Tensor> shared_weight_copies() const override;
  void complete_shared_copies(const std::vector<bool>& written) override;

 private:
  void lay_out(nn::Module& model) override;
  void synchronised() override;
};

// Stage 3: each of the model's blocks() is a unit with its own padded buffer, gathered just
// before the block's forward and again before its backward and freed after each; the other
// parameters form a root unit gathered for the whole forward and backward (released when its
// gradients are reduced, or by release_parameters()). Each rank keeps only its chunks.
class Zero3 final : public ShardedStrategy, public nn::ForwardHook {
 public:
  explicit Zero3(const StrategyContext& ctx) : ShardedStrategy(ctx, /*staged=*/true) {}
  void after_optimizer_step() override { release_all(); }  // regathered by the next forward
  void gather_parameters() override;
  void release_parameters() override { release_all(); }
  std::vector<std::pair<ParamSlice, Tensor>> parameter_pieces() const override;
  TrainingMemory memory(const optim::Optimizer& optimizer) const override;

  // nn::ForwardHook, installed on the model and its blocks.
  void before_forward(nn::Module& module) override;
  Tensor after_forward(nn::Module& module, const Tensor& out) override;

 private:
  void lay_out(nn::Module& model) override;
  void reduce_issued(size_t u) override { release(u); }
  // Materialises unit u's parameters from every rank's chunk / frees them.
  void gather(size_t u);
  void release(size_t u);
  void release_all();

  // Frozen parameters (LoRA's base) are sharded per block too, in buffers of their own that take
  // no part in the gradient synchronisation: gathered with their block before its forward and
  // backward, released after its forward, and after its backward once the gradient has reached
  // the block before it (every node of the block has run by then).
  struct FrozenUnit {
    int block = -1;  // index in blocks() (forward order), -1 for the root
    int64_t chunk = 0;
    Tensor buffer;  // the gathered values (storage freed between uses)
    Tensor shard;   // this rank's chunk
    bool gathered = true;
  };
  void lay_out_frozen(nn::Module& model, const std::vector<nn::Module*>& blocks,
                      std::vector<std::pair<std::string, Tensor>>& replaced);
  void gather_frozen(size_t f);
  void release_frozen(size_t f);
  // Gathers / releases what a block (or the root) needs for its forward and backward.
  void gather_module(const nn::Module* module);

  std::vector<Tensor> buffers_;  // per unit: its gathered parameters (storage freed between uses)
  std::vector<bool> gathered_;
  std::vector<FrozenUnit> frozen_;
  std::unordered_map<const nn::Module*, size_t> block_frozen_;
  std::unordered_map<const nn::Module*, int> block_index_;  // forward order
  int root_frozen_ = -1;
  Tensor shard_params_;  // this rank's parameter chunks, laid out as shard_grads_
  int root_unit_ = -1;   // the parameters outside the model's blocks()
  const nn::Module* root_module_ = nullptr;
  std::unordered_map<const nn::Module*, size_t> block_unit_;
};

}  // namespace hfrun::dist
