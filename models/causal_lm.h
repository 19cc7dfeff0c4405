// The interface every decoder family implements (GPT-2, Llama, Mistral, Qwen2, Qwen3) and the
// only thing the trainer, export, generate and the benchmarks use: logits and loss of token
// ids, incremental decoding over a KV cache, and the family's Hugging Face identity
// (model_type, config.json). The parameter names are HF's and come from the module tree; the
// blocks and the tensor-parallel plan are Module's (nn/module.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/block.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "tensor/random.h"

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

class CausalLM : public Module {
 public:
  explicit CausalLM(uint64_t seed) : dropout_gen_(seed ^ 0x9e3779b97f4a7c15ull) {}

  // HF's model_type ("gpt2", "llama", "mistral", "qwen2", "qwen3").
  virtual std::string model_type() const = 0;
  // config.json text that transformers' AutoModelForCausalLM loads with this model's weights.
  virtual std::string config_json() const = 0;
  virtual int64_t vocab_size() const = 0;
  // The context the model was configured for (n_positions, max_position_embeddings): the KV
  // cache's capacity in generation.
  virtual int64_t max_positions() const = 0;
  // Throws an invalid-input error (naming `source` and the config key) when sequences of T
  // tokens cannot be run (GPT-2's learned positions end at n_positions).
  virtual void check_sequence_length(int64_t T, const std::string& source) const = 0;
  // Throws an invalid-input error naming the config key when the model cannot be split over T
  // tensor-parallel ranks (heads, KV heads, MLP width not divisible by T).
  virtual void check_tensor_parallel(int T) const = 0;
  // Multiply-adds per token of the forward's GEMMs with a T-token context (for MFU: 6 x this
  // per trained token is the usual estimate).
  virtual double matmul_flops_per_token(int64_t T) const = 0;
  // A model of the same configuration (zero-initialised weights are fine): where a
  // tensor-parallel run assembles the whole model for export.
  virtual std::unique_ptr<CausalLM> make_like() const = 0;
  // Other names a checkpoint may store parameter `name` under (GPT-2's without "transformer.").
  virtual std::vector<std::string> checkpoint_aliases(const std::string& name) const { return {}; }

  // ids [B, T] (i32/i64) -> logits [B, T, V] (f32; this rank's vocabulary slice under tensor
  // parallelism).
  Tensor forward(const Tensor& ids) {
    return hooked([&] { return logits(ids); });
  }
  // Mean cross-entropy of the next-token logits against targets [B, T] (already shifted:
  // CONTRACT.md's windows), ignoring targets equal to -100; the whole vocabulary's under
  // tensor parallelism.
  Tensor loss(const Tensor& ids, const Tensor& targets);

  // An empty cache for `batch` sequences of up to `capacity` tokens (0: max_positions()).
  virtual KvCache make_kv_cache(int64_t batch = 1, int64_t capacity = 0) const = 0;
  // Inference (no graph, no dropout): ids [B, T_new] continue the sequences held in `cache`
  // (positions cache.length ..), their keys and values are appended to it, and the new queries
  // attend causally over every cached key. Returns the logits of the new positions
  // [B, T_new, V], equal to forward()'s logits at those positions for the whole sequence.
  virtual Tensor forward_cached(const Tensor& ids, KvCache& cache) = 0;

  // Dropout's random stream (saved and restored with checkpoints).
  Generator& dropout_generator() { return dropout_gen_; }

 protected:
  virtual Tensor logits(const Tensor& ids) = 0;
  // The layer that produces the logits (an output Linear, or the tied input Embedding).
  virtual const ParallelLayer& output_layer() const = 0;
  // Checks shared by forward_cached implementations; returns the new positions' count.
  int64_t check_cached_input(const Tensor& ids, const KvCache& cache, size_t layers) const;
  // The layers' k and v buffers of a cache [B, heads, capacity, head_dim] each (capacity 0:
  // max_positions()).
  KvCache allocate_kv_cache(int64_t batch, int64_t capacity, size_t layers, int64_t heads,
                            int64_t head_dim) const;

 private:
  Generator dropout_gen_;
};

// Positions [start, start + T) as an i64 tensor on `device`.
Tensor positions(int64_t start, int64_t T, Device device);

}  // namespace hfrun::nn
