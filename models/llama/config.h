// The Llama family's hyper-parameters with Hugging Face config.json names: LlamaConfig, and the
// same decoder as MistralConfig, Qwen2Config (q/k/v biases) and Qwen3Config (per-head q/k
// RMSNorm, explicit head_dim). Defaults are each transformers class's own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/labels.h"

namespace hfrun::nn {

struct RopeScaling {
  std::string type = "default";  // default | linear | llama3 | yarn
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 8192;       // llama3, yarn (0: not given)
  // YaRN (transformers' _compute_yarn_parameters): the frequency ramp's rotation bounds, and
  // the factor cos and sin are scaled by (attention_factor; 0: from factor, or from mscale /
  // mscale_all_dim as DeepSeek gives them).
  double beta_fast = 32, beta_slow = 1;
  double attention_factor = 0, mscale = 0, mscale_all_dim = 0;
  bool truncate = true;
};

struct LlamaConfig {
  std::string model_type = "llama";  // llama | mistral | qwen2 | qwen3
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 0;  // 0 = num_attention_heads
  int64_t head_dim = 0;             // 0 = hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool has_rope_scaling = false;  // rope_scaling given (not null)
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q, k, v, o (Llama, Qwen3); Qwen2: q, k, v always, o never
  bool mlp_bias = false;
  double initializer_range = 0.02;
  double attention_dropout = 0;  // the attention probabilities' dropout in training
  // Sliding-window attention (HF's sliding_window with its layer_types): in a sliding layer
  // query i sees keys j with i - sliding_window < j <= i. Mistral: every layer (absent: 4096,
  // null: none). Qwen2/Qwen3: with use_sliding_window, the layers layer_types marks
  // "sliding_attention", by default those from max_window_layers on.
  int64_t sliding_window = 0;            // 0: none
  bool use_sliding_window = false;       // Qwen2/Qwen3 (config.json's own flag)
  int64_t max_window_layers = 28;        // Qwen2/Qwen3
  std::vector<std::string> layer_types;  // as config.json gave them (empty: not given)
  // Sequence classification's labels (read always, written for a classifier).
  LabelConfig labels;
  // Passed through to config.json untouched (token ids, torch_dtype, ...): JSON text.
  std::string passthrough_json = "{}";

  int64_t kv_heads() const {
    return num_key_value_heads > 0 ? num_key_value_heads : num_attention_heads;
  }
  int64_t dim_per_head() const {
    return head_dim > 0 ? head_dim : hidden_size / num_attention_heads;
  }
  bool qkv_bias() const { return model_type == "qwen2" || attention_bias; }
  bool o_bias() const { return model_type != "qwen2" && attention_bias; }
  bool qk_norm() const { return model_type == "qwen3"; }
  // Qwen2 and Qwen3: their defaults, use_sliding_window / max_window_layers and layer_types.
  bool qwen() const { return model_type == "qwen2" || model_type == "qwen3"; }
  // The keys a query of decoder layer `layer` sees at most (0: every earlier one).
  int64_t window_of_layer(int64_t layer) const;
  // The transformers classes' prefix ("Llama", "Mistral", "Qwen2", "Qwen3") and the causal LM's
  // class ("LlamaForCausalLM", ...).
  std::string class_prefix() const;
  std::string architecture() const { return class_prefix() + "ForCausalLM"; }

  // Throws an invalid-input error naming `source` and the offending key.
  void validate(const std::string& source) const;
  // Reads config.json text of one of the four model_types (`default_type` when it has none).
  // Keys that change the architecture in a way not implemented are rejected by name.
  static LlamaConfig from_json(const std::string& json_text, const std::string& source,
                               const std::string& default_type = "llama");
  // config.json for `architecture` (default: the causal LM's), with the labels when asked.
  std::string to_json(const std::string& architecture = "", bool with_labels = false) const;
  // The config.json keys from_json reads or accepts at their no-op values (train.yaml's
  // model.config may set them).
  static const std::vector<std::string>& keys();
};

// The model_types this family reads.
const std::vector<std::string>& llama_model_types();

}  // namespace hfrun::nn
