// The interface of every decoder family's causal LM (GPT-2, Llama, Mistral, Qwen2, Qwen3): a
// Model (models/model.h) with logits and loss of plain token ids and incremental decoding over
// a KV cache, which generation uses.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"

namespace hfrun::nn {

// Keys and values of every layer for incremental decoding, preallocated for `capacity`
// positions: k[l], v[l] are [B, H_kv, capacity, D] and positions [0, length) are filled.
struct KvCache {
  int64_t batch = 0;
  int64_t length = 0;
  int64_t capacity = 0;
  std::vector<Tensor> k, v;

  void reset() { length = 0; }
};

class CausalLM : public Model {
 public:
  explicit CausalLM(uint64_t seed) : Model(seed) {}

  Task task() const override { return Task::kCausalLM; }

  using Model::forward;
  using Model::loss;
  bool has_token_loss() const override { return output_layer() != nullptr; }
  bool fuses_token_loss(int64_t rows) const override {
    return output_layer() != nullptr && output_layer()->fuses_loss(rows);
  }
  // ids [B, T] (i32/i64) -> logits [B, T, V] (f32; this rank's vocabulary slice under tensor
  // parallelism). Padding needs no mask here: it is on the right, and causal attention never
  // lets a token see a later one.
  Tensor forward(const Tensor& ids) { return forward(ModelInputs(ids)); }
  // Mean cross-entropy of the next-token logits against targets [B, T] (already shifted:
  // CONTRACT.md's windows), ignoring targets equal to -100; the whole vocabulary's under
  // tensor parallelism.
  Tensor loss(const Tensor& ids, const Tensor& targets) { return loss(ModelInputs(ids), targets); }

  // An empty cache for `batch` sequences of up to `capacity` tokens (0: max_positions()).
  virtual KvCache make_kv_cache(int64_t batch = 1, int64_t capacity = 0) const = 0;
  // Inference (no graph, no dropout): ids [B, T_new] continue the sequences held in `cache`
  // (positions cache.length ..), their keys and values are appended to it, and the new queries
  // attend causally over every cached key. Returns the logits of the new positions
  // [B, T_new, V], equal to forward()'s logits at those positions for the whole sequence.
  virtual Tensor forward_cached(const Tensor& ids, KvCache& cache) = 0;

 protected:
  Tensor outputs(const ModelInputs& in) override { return head(hidden(in.ids)); }
  // The final hidden states [B, T, C] of ids, which the output layer (output_layer()) reads.
  virtual Tensor hidden(const Tensor& ids) = 0;
  // The logits [..., V] of final hidden states [..., C] (the output layer and whatever adapter
  // it carries).
  virtual Tensor head(const Tensor& x) = 0;
  // The counted positions' hidden states through the output layer: its fused loss where it
  // takes that many rows, else their logits' cross-entropy (the vocabulary-parallel one under
  // tensor parallelism, where every rank of the group has the same targets).
  Tensor token_loss(const ModelInputs& in, const Tensor& targets) override;
  // Checks shared by forward_cached implementations; returns the new positions' count.
  int64_t check_cached_input(const Tensor& ids, const KvCache& cache, size_t layers) const;
  // The layers' k and v buffers of a cache [B, heads, capacity, head_dim] each (capacity 0:
  // max_positions()).
  KvCache allocate_kv_cache(int64_t batch, int64_t capacity, size_t layers, int64_t heads,
                            int64_t head_dim) const;
};

}  // namespace hfrun::nn
