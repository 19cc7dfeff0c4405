// A transformer block: the repeated unit of a model (Module::blocks()). ZeRO-3 gathers a
// block's parameters around its forward and backward through the hook distributed/ installs,
// and activation checkpointing recomputes its activations in the backward; a family calls its
// blocks as block(x, args) and sees neither.
#pragma once

#include <cstdint>

#include "nn/module.h"
#include "tensor/random.h"

namespace hfrun::nn {

// What a block reads besides its input x [B, T, C].
struct BlockArgs {
  Generator* dropout = nullptr;  // the dropout stream (null: no dropout)
  // Rotary embeddings of x's positions: cos, sin [T, head_dim] (families with RoPE).
  Tensor rope_cos, rope_sin;
  // Right padding: i64 [B] tokens before each row's padding, on x's device (undefined: none);
  // attention masks the padded keys.
  Tensor key_lengths;
  // Incremental decoding (no graph): this block's keys and values [B, H_kv, capacity, D], x
  // holding positions [cache_start, cache_start + T); null when training.
  Tensor* cache_k = nullptr;
  Tensor* cache_v = nullptr;
  int64_t cache_start = 0;
};

class Block : public Module {
 public:
  // forward(x, args) inside the installed hook; with checkpointing (and a graph being
  // recorded), the forward keeps none of its activations and one node recomputes them in the
  // backward (the same dropout masks: the stream is replayed from where the forward drew).
  Tensor operator()(const Tensor& x, const BlockArgs& args);
  // train.activation_checkpointing.
  void set_checkpointing(bool on) { checkpointing_ = on; }
  bool checkpointing() const { return checkpointing_; }

 protected:
  virtual Tensor forward(const Tensor& x, const BlockArgs& args) = 0;

 private:
  Tensor checkpointed(const Tensor& x, const BlockArgs& args);
  bool checkpointing_ = false;
};

}  // namespace hfrun::nn
