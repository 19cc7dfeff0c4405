// Megatron-style tensor parallelism: how a parameter is split across the T ranks of a
// tensor-parallel group, and the autograd functions a model's forward uses across them.
//
// A column-parallel linear splits its output features (each rank computes a slice of the
// output from the whole input); a row-parallel linear splits its input features (each rank
// computes a partial sum of the whole output, summed across the group). Chaining the two
// (attention qkv -> heads -> output projection; MLP fc -> GELU -> proj) needs one all-reduce
// forward and one backward per pair: copy_to_tensor_parallel (identity forward, all-reduce of
// the gradient backward) before the column-parallel linear, reduce_from_tensor_parallel
// (all-reduce forward, identity backward) after the row-parallel one. The token embedding and
// the tied output projection split the vocabulary; the cross-entropy over vocabulary-split
// logits exchanges only per-token maxima, sums and target logits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace hfrun::nn {

// The communication a tensor-parallel model needs (train/ implements it over MPI).
class TensorParallelGroup {
 public:
  virtual ~TensorParallelGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place over the group; t is a contiguous f32 CPU tensor.
  virtual void allreduce_sum(Tensor& t) = 0;
  virtual void allreduce_max(Tensor& t) = 0;
};

// How a parameter is split: not at all (dim < 0: every rank holds all of it), or along `dim`
// of `full_shape` in `groups` equal blocks (GPT-2's fused qkv is 3 blocks: q, k, v), each block
// cut into `size` contiguous parts, rank t taking part t of every block. Parts of a block of n
// elements along dim are [t * n / size, (t + 1) * n / size): uneven sizes are allowed (a
// vocabulary of 50257 over 2 ranks).
struct TensorParallelSplit {
  int dim = -1;
  int groups = 1;
  Shape full_shape;
  bool split() const { return dim >= 0; }
};

// How a planned module is parallelised (HF's base_model_tp_plan styles):
//  - kColwise: a Linear's output features are split (each rank computes a slice of the output
//    from the whole input; the input's gradient is summed over the group);
//  - kRowwise: a Linear's input features are split (each rank computes a partial sum of the
//    whole output, summed over the group before the replicated bias is added);
//  - kVocab: an Embedding's rows (ids outside a rank's range contribute zeros, summed over the
//    group), or an output Linear's rows (the logits stay split along the vocabulary; the loss
//    is vocab_parallel_cross_entropy);
//  - kReplicatedSumGrad: a norm applied to a rank's own heads only (Qwen3's q_norm, k_norm):
//    every rank holds the whole weight, and its gradient is summed over the group.
enum class ParallelStyle { kColwise, kRowwise, kVocab, kReplicatedSumGrad };

// One rule of a plan: modules whose dotted path (relative to the model) matches `pattern`,
// where "*" matches one path component ("model.layers.*.self_attn.q_proj"). `groups` > 1 splits
// a fused output into that many equal blocks first (GPT-2's c_attn: q, k, v).
struct TensorParallelRule {
  std::string pattern;
  ParallelStyle style = ParallelStyle::kColwise;
  int groups = 1;
};
using TensorParallelPlan = std::vector<TensorParallelRule>;

// Whether a module path matches a plan pattern ("*" = one whole component).
bool matches_plan_pattern(const std::string& pattern, const std::string& path);

// [begin, end) of rank t's part of n elements split over `size` ranks.
std::pair<int64_t, int64_t> tensor_parallel_range(int64_t n, int t, int size);
// The shape of rank t's part.
Shape tensor_parallel_local_shape(const TensorParallelSplit& s, int t, int size);
// Rank t's part of `full` (a contiguous copy); `full` unchanged when the split is none.
Tensor tensor_parallel_slice(const Tensor& full, const TensorParallelSplit& s, int t, int size);
// The whole tensor from every rank's part (parts[t] of rank t).
Tensor tensor_parallel_assemble(const std::vector<Tensor>& parts, const TensorParallelSplit& s);

// Identity forward; the gradient is summed over the group backward.
Tensor copy_to_tensor_parallel(const Tensor& x, TensorParallelGroup& group);
// Sum over the group forward; identity backward.
Tensor reduce_from_tensor_parallel(const Tensor& x, TensorParallelGroup& group);
// Embedding rows [vocab_begin, vocab_begin + weight.size(0)) of a vocabulary split across the
// group; ids outside this rank's range contribute zeros, and the parts are summed.
Tensor vocab_parallel_embedding(const Tensor& weight, const Tensor& ids, int64_t vocab_begin,
                                TensorParallelGroup& group);
// Mean cross-entropy over logits split along the vocabulary: logits [..., V_local] hold the
// columns [vocab_begin, vocab_begin + V_local) of each token's logits; targets [...] are global
// ids (ignore_index skipped). Equal to cross_entropy() of the whole logits.
Tensor vocab_parallel_cross_entropy(const Tensor& logits, const Tensor& targets,
                                    int64_t vocab_begin, TensorParallelGroup& group,
                                    int64_t ignore_index = -100);

}  // namespace hfrun::nn
