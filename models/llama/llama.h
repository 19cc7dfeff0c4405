// The Llama family with Hugging Face semantics and names (LlamaForCausalLM; the same decoder
// serves MistralForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM):
//
//   x = embed_tokens[ids]                                                   [B, T, C]
//   per layer:  h = x + o_proj(attn(input_layernorm(x)))
//               x = h + down_proj(silu(gate_proj(n)) * up_proj(n)),  n =
//               post_attention_layernorm(h)
//   logits = lm_head(norm(x))      (lm_head tied to embed_tokens with tie_word_embeddings)
//
// attn: q = q_proj(x), k = k_proj(x), v = v_proj(x) as [B, T, heads, head_dim]; Qwen3 applies
// an RMSNorm over head_dim to q and k (q_norm, k_norm); rotate-half RoPE with rope_theta and
// rope_scaling (linear, llama3) on q and k; causal attention with num_key_value_heads shared by
// groups of query heads (GQA); RMSNorms are x / sqrt(mean(x^2) + eps) * weight.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/causal_lm.h"
#include "models/llama/config.h"

namespace hfrun::nn {

class LlamaBody;

// cos, sin [T, head_dim] (f32, on `device`) of positions [start, start + T): HF's
// LlamaRotaryEmbedding with the config's rope_theta and rope_scaling, computed in double.
struct RopeTables {
  Tensor cos, sin;
};
RopeTables rope_tables(const LlamaConfig& c, int64_t start, int64_t T, Device device);
// The inverse frequencies [head_dim / 2] after rope_scaling (HF's rope init functions).
std::vector<double> rope_inverse_frequencies(const LlamaConfig& c);

class Llama : public CausalLM {
 public:
  // Linear and embedding weights normal(0, initializer_range), biases 0, norms 1, from `seed`.
  explicit Llama(const LlamaConfig& config, uint64_t seed = 0);
  ~Llama() override;

  const LlamaConfig& config() const { return config_; }

  std::string model_type() const override { return config_.model_type; }
  std::string architecture() const override { return config_.architecture(); }
  std::string config_json() const override { return config_.to_json(); }
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t max_positions() const override { return config_.max_position_embeddings; }
  void check_sequence_length(int64_t T, const std::string& source) const override;
  void check_tensor_parallel(int T) const override;
  double matmul_flops_per_token(int64_t T) const override;
  std::vector<Module*> blocks() override;
  // HF's base_model_tp_plan: q, k, v, gate, up column-parallel (KV heads split too), o and
  // down row-parallel, embed_tokens and an untied lm_head split along the vocabulary; Qwen3's
  // q_norm/k_norm replicated with their gradients summed over the group.
  TensorParallelPlan tensor_parallel_plan() const override;

  KvCache make_kv_cache(int64_t batch = 1, int64_t capacity = 0) const override;
  Tensor forward_cached(const Tensor& ids, KvCache& cache) override;

 protected:
  Tensor hidden(const Tensor& ids) override;
  Tensor head(const Tensor& x) override;
  const ParallelLayer* output_layer() const override;

 private:
  LlamaConfig config_;
  LlamaBody* body_ = nullptr;  // "model"
  Linear* lm_head_ = nullptr;  // null when tied to embed_tokens
};

// LlamaForSequenceClassification (and Mistral / Qwen2 / Qwen3's): the decoder ("model") and a
// bias-free "score" Linear [num_labels, C] over each row's last token before its right padding
// (ModelInputs::lengths; the last position without). Labels come from config.json's num_labels /
// id2label / label2id / problem_type.
class LlamaForSequenceClassification : public Model {
 public:
  explicit LlamaForSequenceClassification(const LlamaConfig& config, uint64_t seed = 0);
  ~LlamaForSequenceClassification() override;

  std::string model_type() const override { return config_.model_type; }
  std::string architecture() const override;
  Task task() const override { return Task::kSequenceClassification; }
  std::string config_json() const override;
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t max_positions() const override { return config_.max_position_embeddings; }
  void check_sequence_length(int64_t T, const std::string& source) const override;
  void check_tensor_parallel(int T) const override;
  double matmul_flops_per_token(int64_t T) const override;
  // The score head over a causal LM's (or base model's) weights starts new.
  bool may_be_newly_initialized(const std::string& name) const override {
    return name == "score.weight";
  }
  const LabelConfig* labels() const override { return &config_.labels; }
  std::vector<Module*> blocks() override;
  // The decoder's plan (Llama's without lm_head); score is replicated.
  TensorParallelPlan tensor_parallel_plan() const override;

 protected:
  Tensor outputs(const ModelInputs& in) override;

 private:
  LlamaConfig config_;
  LlamaBody* body_ = nullptr;  // "model"
  Linear* score_ = nullptr;
};

}  // namespace hfrun::nn
