#include "models/bert/config.h"

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/config_reader.h"

namespace hfrun::nn {

using nlohmann::json;

const std::vector<std::string>& BertConfig::keys() {
  static const std::vector<std::string> k = [] {
    std::vector<std::string> v = {"model_type",
                                  "vocab_size",
                                  "hidden_size",
                                  "num_hidden_layers",
                                  "num_attention_heads",
                                  "intermediate_size",
                                  "hidden_act",
                                  "hidden_dropout_prob",
                                  "attention_probs_dropout_prob",
                                  "max_position_embeddings",
                                  "type_vocab_size",
                                  "initializer_range",
                                  "layer_norm_eps",
                                  "pad_token_id",
                                  "position_embedding_type",
                                  "classifier_dropout",
                                  "use_cache",
                                  "is_decoder",
                                  "add_cross_attention",
                                  "chunk_size_feed_forward"};
    for (const std::string& l : LabelConfig::keys()) v.push_back(l);
    return v;
  }();
  return k;
}

void BertConfig::validate(const std::string& source) const {
  auto positive = [&](int64_t v, const char* key) {
    HF_CHECK_INPUT(v > 0, source, ": ", key, " must be positive, got ", v);
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(intermediate_size, "intermediate_size");
  positive(max_position_embeddings, "max_position_embeddings");
  positive(type_vocab_size, "type_vocab_size");
  HF_CHECK_INPUT(hidden_size % num_attention_heads == 0, source, ": hidden_size (", hidden_size,
                 ") must be divisible by num_attention_heads (", num_attention_heads, ")");
  HF_CHECK_INPUT(layer_norm_eps > 0, source, ": layer_norm_eps must be positive");
  for (const auto& [key, p] :
       {std::pair<const char*, double>{"hidden_dropout_prob", hidden_dropout_prob},
        {"attention_probs_dropout_prob", attention_probs_dropout_prob},
        {"classifier_dropout", classifier_dropout_prob()}}) {
    HF_CHECK_INPUT(p >= 0 && p < 1, source, ": ", key, " must be in [0, 1), got ", p);
  }
  HF_CHECK_INPUT(hidden_act == "gelu" || hidden_act == "gelu_new" ||
                     hidden_act == "gelu_pytorch_tanh" || hidden_act == "relu" ||
                     hidden_act == "silu" || hidden_act == "swish",
                 source, ": hidden_act '", hidden_act,
                 "' is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu, silu)");
  HF_CHECK_INPUT(pad_token_id >= 0 && pad_token_id < vocab_size, source, ": pad_token_id ",
                 pad_token_id, " must be in [0, vocab_size ", vocab_size, ")");
}

BertConfig BertConfig::from_json(const std::string& text, const std::string& source) {
  const json j = parse_config_object(text, source);
  const ConfigReader r{j, source};
  std::string type = "bert";
  r.get("model_type", type);
  HF_CHECK_INPUT(type == "bert", source, ": model_type '", type, "' is not bert");
  BertConfig c;
  r.get("vocab_size", c.vocab_size);
  r.get("hidden_size", c.hidden_size);
  r.get("num_hidden_layers", c.num_hidden_layers);
  r.get("num_attention_heads", c.num_attention_heads);
  r.get("intermediate_size", c.intermediate_size);
  r.get("hidden_act", c.hidden_act);
  r.get("hidden_dropout_prob", c.hidden_dropout_prob);
  r.get("attention_probs_dropout_prob", c.attention_probs_dropout_prob);
  r.get("max_position_embeddings", c.max_position_embeddings);
  r.get("type_vocab_size", c.type_vocab_size);
  r.get("initializer_range", c.initializer_range);
  r.get("layer_norm_eps", c.layer_norm_eps);
  r.get("pad_token_id", c.pad_token_id);
  if (r.has("classifier_dropout")) {
    double p = 0;
    r.get("classifier_dropout", p);
    c.classifier_dropout = p;
  }
  std::string positions = "absolute";
  r.get("position_embedding_type", positions);
  HF_CHECK_INPUT(positions == "absolute", source, ": position_embedding_type '", positions,
                 "' is not supported (absolute only)");
  for (const char* key : {"is_decoder", "add_cross_attention"}) {
    bool on = false;
    r.get(key, on);
    HF_CHECK_INPUT(!on, source, ": ", key, " = true is not supported (BERT as an encoder only)");
  }
  int64_t chunk = 0;
  r.get("chunk_size_feed_forward", chunk);  // the same result in chunks: nothing to do
  c.labels = LabelConfig::from_json(j, source);
  c.validate(source);
  return c;
}

std::string BertConfig::to_json(const std::string& architecture) const {
  json j = {{"model_type", "bert"},
            {"architectures", {architecture}},
            {"vocab_size", vocab_size},
            {"hidden_size", hidden_size},
            {"num_hidden_layers", num_hidden_layers},
            {"num_attention_heads", num_attention_heads},
            {"intermediate_size", intermediate_size},
            {"hidden_act", hidden_act},
            {"hidden_dropout_prob", hidden_dropout_prob},
            {"attention_probs_dropout_prob", attention_probs_dropout_prob},
            {"max_position_embeddings", max_position_embeddings},
            {"type_vocab_size", type_vocab_size},
            {"initializer_range", initializer_range},
            {"layer_norm_eps", layer_norm_eps},
            {"pad_token_id", pad_token_id},
            {"position_embedding_type", "absolute"},
            {"use_cache", true},
            {"torch_dtype", "float32"}};
  j["classifier_dropout"] = classifier_dropout ? json(*classifier_dropout) : json(nullptr);
  labels.to_json(j);
  return j.dump(2) + "\n";
}

}  // namespace hfrun::nn
