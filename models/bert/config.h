// BERT's hyper-parameters with Hugging Face config.json names and BertConfig's defaults, plus
// the sequence-classification keys (models/labels.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "models/labels.h"

namespace hfrun::nn {

struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";  // gelu (erf), gelu_new / gelu_pytorch_tanh, relu, silu
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double initializer_range = 0.02;
  double layer_norm_eps = 1e-12;
  int64_t pad_token_id = 0;
  std::optional<double> classifier_dropout;  // null: hidden_dropout_prob
  LabelConfig labels;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  double classifier_dropout_prob() const {
    return classifier_dropout.value_or(hidden_dropout_prob);
  }

  // Throws an invalid-input error naming `source` and the offending key.
  void validate(const std::string& source) const;
  // Reads config.json text; keys that change the architecture in a way not implemented
  // (relative positions, a decoder, cross-attention) are refused by name.
  static BertConfig from_json(const std::string& json_text, const std::string& source);
  // config.json for the transformers class `architecture`.
  std::string to_json(const std::string& architecture) const;
  // The config.json keys from_json reads or accepts (train.yaml's model.config may set them).
  static const std::vector<std::string>& keys();
};

}  // namespace hfrun::nn
