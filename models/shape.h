// A model's shape from its config.json alone, without building it: the parameter counts of its
// transformer blocks and of the rest (embeddings, final norm, heads), every Linear layer by module
// path (what LoRA can target), and the dimensions activations scale with. What `hfrun
// estimate-memory` reasons from; a test holds it to the parameters of real models.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/model.h"

namespace hfrun::nn {

struct LinearShape {
  std::string path;  // module path, as named_modules() gives it
  int64_t in = 0, out = 0;
  bool bias = false;
  bool block = false;  // inside one of the model's blocks()
  int64_t params() const { return in * out + (bias ? out : 0); }
};

struct ModelShape {
  std::string model_type;
  Task task = Task::kCausalLM;
  int64_t vocab_size = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t intermediate = 0;      // MLP width
  double attention_dropout = 0;  // the attention probabilities' dropout in training
  bool gated_mlp = false;        // Llama's gate * up (SiLU) rather than one GELU MLP
  // The token logits' width (vocab_size), or num_labels for sequence classification.
  int64_t outputs = 0;
  bool token_outputs = true;     // logits for every token (causal and masked LM)
  int64_t block_params = 0;      // each of the layers blocks
  int64_t other_params = 0;      // everything outside the blocks (ZeRO-3's root unit)
  int64_t embedding_params = 0;  // the token embedding table, part of other_params
  std::vector<LinearShape> linears;
  // Modules that all-linear leaves out (lora_exclusions of the model).
  std::vector<std::string> lora_exclusions;

  int64_t parameters() const { return other_params + layers * block_params; }
};

// The shape of the model create_model(config_json, source, seed, default_type, task) builds.
// Invalid configs are the same invalid-input errors create_model gives.
ModelShape model_shape(const std::string& config_json, const std::string& source,
                       const std::string& default_type, Task task);

}  // namespace hfrun::nn
