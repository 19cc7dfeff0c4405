// GPT-2 with Hugging Face GPT2LMHeadModel semantics and parameter names: learned position
// embeddings, pre-LayerNorm blocks, fused qkv (c_attn), Conv1D weights laid out [in, out],
// gelu_new, final LayerNorm, lm_head tied to the token embedding (wte).
//
//   x = wte[ids] + wpe[0..T)                                    [B, T, C]
//   per block:  x = x + c_proj(attn(ln_1(x)))    x = x + mlp(ln_2(x))
//   logits = ln_f(x) @ wte^T                                    [B, T, V]
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "models/gpt2_config.h"
#include "models/module.h"
#include "tensor/random.h"

namespace hfrun::nn {

class Gpt2Block;

// Keys and values of every layer for incremental decoding (Gpt2::forward_cached), preallocated
// for n_positions: k[l], v[l] are [B, H, capacity, D] and positions [0, length) are filled.
struct KvCache {
  int64_t batch = 0;
  int64_t length = 0;
  int64_t capacity = 0;
  std::vector<Tensor> k, v;

  void reset() { length = 0; }
};

class Gpt2 : public Module {
 public:
  // Parameters are created with HF's initialisation (normal(0, initializer_range); residual
  // projections c_proj scaled by 1/sqrt(2 n_layer); LayerNorm 1/0; biases 0) from `seed`.
  explicit Gpt2(const Gpt2Config& config, uint64_t seed = 0);
  ~Gpt2() override;

  const Gpt2Config& config() const { return config_; }
  // Tensor parallelism over `group` (size T, rank t): replaces every split parameter by rank
  // t's part (Megatron: qkv, attention heads and MLP columns; output projections by rows; the
  // vocabulary of wte), so forward() returns this rank's vocabulary slice of the logits and
  // loss() the full model's loss. Call after loading weights and before flatten_parameters().
  // n_head and the MLP width must be divisible by T (an input error otherwise).
  void enable_tensor_parallel(TensorParallelGroup* group);
  TensorParallelSplit tensor_parallel_split(const std::string& name) const override;
  // The first vocabulary id of this rank's slice of wte (0 without tensor parallelism).
  int64_t vocab_begin() const;
  // The transformer blocks (forward calls the LayerHooks around each).
  std::vector<const Module*> layers() const override;
  // ids [B, T] (i32/i64, T <= n_positions) -> logits [B, T, V] (f32).
  Tensor forward(const Tensor& ids);
  // Mean cross-entropy of the next-token logits against targets [B, T] (already shifted:
  // CONTRACT.md's windows), ignoring targets equal to -100.
  Tensor loss(const Tensor& ids, const Tensor& targets);

  // An empty cache for `batch` sequences of up to n_positions tokens.
  KvCache make_kv_cache(int64_t batch = 1) const;
  // Inference (no graph, no dropout): ids [B, T_new] continue the sequences held in `cache`
  // (positions cache.length ..), their keys and values are appended to it, and the new queries
  // attend causally over every cached key. Returns the logits of the new positions
  // [B, T_new, V], equal to forward()'s logits at those positions for the whole sequence.
  // cache.length + T_new must not exceed n_positions.
  Tensor forward_cached(const Tensor& ids, KvCache& cache);

  // Dropout's random stream (saved and restored with checkpoints).
  Generator& dropout_generator() { return dropout_gen_; }

  // Mixed precision: with bf16, forward() runs every GEMM (qkv, attention output, MLP, lm_head)
  // on bf16 copies of activations and weights with f32 accumulation, while parameters (the
  // master weights), layer norms, attention softmax, GELU, residual adds and the loss stay f32.
  // nullopt (the default) = everything f32.
  void set_compute_dtype(std::optional<DType> dtype) { compute_dtype_ = dtype; }
  std::optional<DType> compute_dtype() const { return compute_dtype_; }

 private:
  Gpt2Config config_;
  size_t wte_, wpe_, ln_f_w_, ln_f_b_;
  std::vector<Gpt2Block*> blocks_;
  Generator dropout_gen_;
  std::optional<DType> compute_dtype_;
  TensorParallelGroup* tp_ = nullptr;
};

}  // namespace hfrun::nn
