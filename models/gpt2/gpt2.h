// GPT-2 with Hugging Face GPT2LMHeadModel semantics and parameter names: learned position
// embeddings, pre-LayerNorm blocks, fused qkv (c_attn), Conv1D weights laid out [in, out],
// gelu_new, final LayerNorm, lm_head tied to the token embedding (wte).
//
//   x = wte[ids] + wpe[0..T)                                    [B, T, C]
//   per block:  x = x + c_proj(attn(ln_1(x)))    x = x + mlp(ln_2(x))
//   logits = ln_f(x) @ wte^T                                    [B, T, V]
//
// The tree is HF's: transformer.{wte, wpe, h.N.{ln_1, attn.{c_attn, c_proj}, ln_2,
// mlp.{c_fc, c_proj}}, ln_f}; the tied lm_head is not a parameter of its own.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/causal_lm.h"
#include "models/gpt2/config.h"

namespace hfrun::nn {

class Gpt2Block;
class Gpt2Body;

class Gpt2 : public CausalLM {
 public:
  // Parameters are created with HF's initialisation (normal(0, initializer_range); residual
  // projections c_proj scaled by 1/sqrt(2 n_layer); LayerNorm 1/0; biases 0) from `seed`.
  explicit Gpt2(const Gpt2Config& config, uint64_t seed = 0);
  ~Gpt2() override;

  const Gpt2Config& config() const { return config_; }

  std::string model_type() const override { return "gpt2"; }
  std::string architecture() const override { return "GPT2LMHeadModel"; }
  std::string config_json() const override { return config_.to_json(); }
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t max_positions() const override { return config_.n_positions; }
  void check_sequence_length(int64_t T, const std::string& source) const override;
  void check_tensor_parallel(int T) const override;
  double matmul_flops_per_token(int64_t T) const override;
  std::vector<std::string> checkpoint_aliases(const std::string& name) const override;
  std::vector<Module*> blocks() override;
  // Megatron's split: c_attn column-parallel in three blocks (q, k, v: whole heads per rank),
  // c_proj row-parallel, the MLP's c_fc column- and c_proj row-parallel, wte (and so the tied
  // head) split along the vocabulary.
  TensorParallelPlan tensor_parallel_plan() const override;

  KvCache make_kv_cache(int64_t batch = 1, int64_t capacity = 0) const override;
  Tensor forward_cached(const Tensor& ids, KvCache& cache) override;

 protected:
  Tensor hidden(const Tensor& ids) override;
  Tensor head(const Tensor& x) override;
  const ParallelLayer* output_layer() const override;

 private:
  Gpt2Config config_;
  Gpt2Body* body_ = nullptr;  // "transformer"
};

}  // namespace hfrun::nn
