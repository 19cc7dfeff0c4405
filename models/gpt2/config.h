// GPT-2's hyper-parameters with Hugging Face config.json names (GPT2Config).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hfrun::nn {

struct Gpt2Config {
  int64_t vocab_size = 50257;
  int64_t n_positions = 1024;
  int64_t n_embd = 768;
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_inner = 0;  // MLP width; 0 = 4 * n_embd
  double layer_norm_epsilon = 1e-5;
  double initializer_range = 0.02;
  double embd_pdrop = 0.0;
  double resid_pdrop = 0.0;
  double attn_pdrop = 0.0;
  std::string activation_function = "gelu_new";

  int64_t mlp_width() const { return n_inner > 0 ? n_inner : 4 * n_embd; }
  // Throws an invalid-input error naming `source` and the offending key.
  void validate(const std::string& source = "config") const;
  // Reads HF config.json; keys that change the architecture in ways we do not implement
  // (scale_attn_by_inverse_layer_idx, reorder_and_upcast_attn, ...) are rejected by name.
  static Gpt2Config from_json(const std::string& json_text, const std::string& source);
  static Gpt2Config from_file(const std::string& path);
  // The config.json keys from_json reads (train.yaml's model.config may set them).
  static const std::vector<std::string>& keys();
  // HF config.json text (model_type gpt2, architectures GPT2LMHeadModel).
  std::string to_json() const;
};

}  // namespace hfrun::nn
