#include "models/llama/config.h"

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/config_reader.h"

namespace hfrun::nn {

using nlohmann::json;

const std::vector<std::string>& llama_model_types() {
  static const std::vector<std::string> types = {"llama", "mistral", "qwen2", "qwen3"};
  return types;
}

const std::vector<std::string>& LlamaConfig::keys() {
  static const std::vector<std::string> k = [] {
    std::vector<std::string> v = {
        "model_type",          "vocab_size",         "hidden_size",
        "intermediate_size",   "num_hidden_layers",  "num_attention_heads",
        "num_key_value_heads", "head_dim",           "max_position_embeddings",
        "rms_norm_eps",        "rope_theta",         "rope_scaling",
        "tie_word_embeddings", "attention_bias",     "mlp_bias",
        "initializer_range",   "hidden_act",         "attention_dropout",
        "sliding_window",      "use_sliding_window", "max_window_layers",
        "layer_types",         "pretraining_tp",     "bos_token_id",
        "eos_token_id",        "pad_token_id"};
    for (const std::string& l : LabelConfig::keys()) v.push_back(l);
    return v;
  }();
  return k;
}

std::string LlamaConfig::class_prefix() const {
  if (model_type == "mistral") return "Mistral";
  if (model_type == "qwen2") return "Qwen2";
  if (model_type == "qwen3") return "Qwen3";
  return "Llama";
}

void LlamaConfig::validate(const std::string& source) const {
  auto positive = [&](int64_t v, const char* key) {
    HF_CHECK_INPUT(v > 0, source, ": ", key, " must be positive, got ", v);
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(max_position_embeddings, "max_position_embeddings");
  HF_CHECK_INPUT(num_key_value_heads >= 0 && head_dim >= 0, source,
                 ": num_key_value_heads and head_dim must be positive (or null)");
  HF_CHECK_INPUT(head_dim > 0 || hidden_size % num_attention_heads == 0, source, ": hidden_size (",
                 hidden_size, ") must be divisible by num_attention_heads (", num_attention_heads,
                 ") when head_dim is not given");
  HF_CHECK_INPUT(num_attention_heads % kv_heads() == 0, source, ": num_attention_heads (",
                 num_attention_heads, ") must be a multiple of num_key_value_heads (", kv_heads(),
                 ")");
  HF_CHECK_INPUT(dim_per_head() % 2 == 0, source, ": head_dim ", dim_per_head(),
                 " must be even (rotary embeddings rotate pairs)");
  HF_CHECK_INPUT(rms_norm_eps > 0, source, ": rms_norm_eps must be positive");
  HF_CHECK_INPUT(rope_theta > 0, source, ": rope_theta must be positive");
  HF_CHECK_INPUT(rope_scaling.factor > 0, source, ": rope_scaling.factor must be positive");
  if (rope_scaling.type == "llama3") {
    HF_CHECK_INPUT(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor, source,
                   ": rope_scaling.high_freq_factor must exceed low_freq_factor");
    positive(rope_scaling.original_max_position_embeddings,
             "rope_scaling.original_max_position_embeddings");
  }
  HF_CHECK_INPUT(sliding_window >= 0, source, ": sliding_window must be positive (or null)");
  HF_CHECK_INPUT(
      layer_types.empty() || static_cast<int64_t>(layer_types.size()) == num_hidden_layers, source,
      ": layer_types has ", layer_types.size(), " entries for ", num_hidden_layers,
      " layers (num_hidden_layers)");
}

int64_t LlamaConfig::window_of_layer(int64_t layer) const {
  if (model_type == "mistral") return sliding_window;
  if (!qwen()) return 0;
  if (!use_sliding_window || sliding_window <= 0) return 0;
  const bool sliding = layer_types.empty()
                           ? layer >= max_window_layers
                           : layer_types[static_cast<size_t>(layer)] == "sliding_attention";
  return sliding ? sliding_window : 0;
}

namespace {

void read_rope_scaling(const json& r, const std::string& key, const std::string& source,
                       LlamaConfig& c) {
  HF_CHECK_INPUT(r.is_object(), source, ": ", key, " must be an object or null, got ", r.dump());
  const std::string sub_source = source + ": " + key;
  const ConfigReader rr{r, sub_source};
  std::string type = "default";
  rr.get("type", type);  // older configs
  rr.get("rope_type", type);
  rr.get("rope_theta", c.rope_theta);
  HF_CHECK_INPUT(type == "default" || type == "linear" || type == "llama3" || type == "yarn",
                 source, ": ", key, " type '", type,
                 "' is not supported (default, linear, llama3 and yarn are; dynamic and longrope "
                 "are not)");
  c.rope_scaling.type = type;
  if (type == "yarn") c.rope_scaling.original_max_position_embeddings = 0;
  rr.get("factor", c.rope_scaling.factor);
  rr.get("low_freq_factor", c.rope_scaling.low_freq_factor);
  rr.get("high_freq_factor", c.rope_scaling.high_freq_factor);
  rr.get("original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings);
  if (type == "yarn") {
    rr.get("beta_fast", c.rope_scaling.beta_fast);
    rr.get("beta_slow", c.rope_scaling.beta_slow);
    rr.get("attention_factor", c.rope_scaling.attention_factor);
    rr.get("mscale", c.rope_scaling.mscale);
    rr.get("mscale_all_dim", c.rope_scaling.mscale_all_dim);
    rr.get("truncate", c.rope_scaling.truncate);
    HF_CHECK_INPUT(c.rope_scaling.original_max_position_embeddings >= 0, source, ": ", key,
                   ".original_max_position_embeddings must be >= 0 (0 or absent: "
                   "max_position_embeddings, as transformers reads it)");
  }
  c.has_rope_scaling = type != "default";
}

}  // namespace

LlamaConfig LlamaConfig::from_json(const std::string& text, const std::string& source,
                                   const std::string& default_type) {
  const json j = parse_config_object(text, source);
  const ConfigReader r{j, source};
  LlamaConfig c;
  c.model_type = default_type;
  r.get("model_type", c.model_type);
  bool known = false;
  for (const std::string& t : llama_model_types()) known = known || t == c.model_type;
  HF_CHECK_INPUT(known, source, ": model_type '", c.model_type, "' is not one of llama, mistral, ",
                 "qwen2, qwen3");
  // Each transformers class's defaults.
  if (c.model_type == "mistral") {
    c.intermediate_size = 14336;
    c.num_key_value_heads = 8;
    c.max_position_embeddings = 4096 * 32;
    c.sliding_window = 4096;
  } else if (c.qwen()) {
    c.vocab_size = 151936;
    c.intermediate_size = 22016;
    c.max_position_embeddings = 32768;
    if (c.model_type == "qwen3") c.head_dim = 128;
  }
  r.get("vocab_size", c.vocab_size);
  r.get("hidden_size", c.hidden_size);
  r.get("intermediate_size", c.intermediate_size);
  r.get("num_hidden_layers", c.num_hidden_layers);
  r.get("num_attention_heads", c.num_attention_heads);
  r.get_or_zero("num_key_value_heads", c.num_key_value_heads);
  r.get_or_zero("head_dim", c.head_dim);
  r.get("max_position_embeddings", c.max_position_embeddings);
  r.get("rms_norm_eps", c.rms_norm_eps);
  r.get("rope_theta", c.rope_theta);
  r.get("tie_word_embeddings", c.tie_word_embeddings);
  r.get("initializer_range", c.initializer_range);
  if (c.model_type == "llama" || c.model_type == "qwen3") r.get("attention_bias", c.attention_bias);
  if (c.model_type == "llama") r.get("mlp_bias", c.mlp_bias);
  if (r.has("rope_scaling")) read_rope_scaling(j["rope_scaling"], "rope_scaling", source, c);
  if (r.has("rope_parameters"))
    read_rope_scaling(j["rope_parameters"], "rope_parameters", source, c);

  // What changes the architecture beyond what is implemented is refused by name.
  std::string act = "silu";
  r.get("hidden_act", act);
  HF_CHECK_INPUT(act == "silu", source, ": hidden_act '", act,
                 "' is not supported (the Llama family's SwiGLU MLP uses silu)");
  r.get("attention_dropout", c.attention_dropout);
  HF_CHECK_INPUT(c.attention_dropout >= 0 && c.attention_dropout < 1, source,
                 ": attention_dropout must be in [0, 1), got ", c.attention_dropout);
  // Sliding windows as each transformers class reads them (LlamaConfig has none; Mistral ignores
  // layer_types, with a warning).
  if (c.model_type == "mistral") {
    r.get_or_zero("sliding_window", c.sliding_window);
    HF_CHECK_INPUT(!r.has("sliding_window") || c.sliding_window > 0, source,
                   ": sliding_window must be a positive integer or null");
  } else if (c.qwen()) {
    c.sliding_window = 4096;
    r.get("use_sliding_window", c.use_sliding_window);
    r.get_or_zero("sliding_window", c.sliding_window);
    HF_CHECK_INPUT(!c.use_sliding_window || !r.has("sliding_window") || c.sliding_window > 0,
                   source, ": sliding_window must be a positive integer or null");
    r.get("max_window_layers", c.max_window_layers);
    HF_CHECK_INPUT(c.max_window_layers >= 0, source, ": max_window_layers must be >= 0");
  }
  // LlamaConfig and MistralConfig take no layer_types (transformers ignores the key there).
  if (r.has("layer_types") && c.qwen()) {
    HF_CHECK_INPUT(j["layer_types"].is_array(), source, ": layer_types must be a list");
    for (const json& t : j["layer_types"]) {
      HF_CHECK_INPUT(t == "full_attention" || t == "sliding_attention", source,
                     ": layer_types entry ", t.dump(),
                     " is not supported (full_attention or sliding_attention)");
      // transformers cannot build a sliding layer's mask without a window ("Could not find a
      // `sliding_window` argument"): refused here too, not run as full attention.
      HF_CHECK_INPUT(
          t == "full_attention" || (c.use_sliding_window && c.sliding_window > 0), source,
          ": layer_types marks a sliding_attention layer, but ",
          c.use_sliding_window ? "sliding_window is null" : "use_sliding_window is false",
          " (no window for it)");
      c.layer_types.push_back(t.get<std::string>());
    }
  }
  for (const char* key : {"num_experts", "num_local_experts", "moe_intermediate_size"}) {
    HF_CHECK_INPUT(!r.has(key), source, ": ", key,
                   " (mixture of experts) is not supported for model_type ", c.model_type);
  }
  json pass = json::object();
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    if (j.contains(key)) pass[key] = j[key];
  }
  c.passthrough_json = pass.dump();
  c.labels = LabelConfig::from_json(j, source);
  c.validate(source);
  return c;
}

std::string LlamaConfig::to_json(const std::string& arch, bool with_labels) const {
  json j = {{"model_type", model_type},
            {"architectures", {arch.empty() ? architecture() : arch}},
            {"vocab_size", vocab_size},
            {"hidden_size", hidden_size},
            {"intermediate_size", intermediate_size},
            {"num_hidden_layers", num_hidden_layers},
            {"num_attention_heads", num_attention_heads},
            {"num_key_value_heads", kv_heads()},
            {"head_dim", dim_per_head()},
            {"max_position_embeddings", max_position_embeddings},
            {"rms_norm_eps", rms_norm_eps},
            {"rope_theta", rope_theta},
            {"tie_word_embeddings", tie_word_embeddings},
            {"hidden_act", "silu"},
            {"initializer_range", initializer_range},
            {"attention_dropout", attention_dropout},
            {"use_cache", true},
            {"torch_dtype", "float32"}};
  if (has_rope_scaling) {
    json rs = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      rs["low_freq_factor"] = rope_scaling.low_freq_factor;
      rs["high_freq_factor"] = rope_scaling.high_freq_factor;
      rs["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    } else if (rope_scaling.type == "yarn") {
      if (rope_scaling.original_max_position_embeddings > 0) {
        rs["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
      }
      rs["beta_fast"] = rope_scaling.beta_fast;
      rs["beta_slow"] = rope_scaling.beta_slow;
      rs["truncate"] = rope_scaling.truncate;
      if (rope_scaling.attention_factor > 0) rs["attention_factor"] = rope_scaling.attention_factor;
      if (rope_scaling.mscale > 0) rs["mscale"] = rope_scaling.mscale;
      if (rope_scaling.mscale_all_dim > 0) rs["mscale_all_dim"] = rope_scaling.mscale_all_dim;
    }
    j["rope_scaling"] = rs;
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (model_type == "llama" || model_type == "qwen3") j["attention_bias"] = attention_bias;
  if (model_type == "llama") j["mlp_bias"] = mlp_bias;
  if (model_type == "mistral") {
    j["sliding_window"] = sliding_window > 0 ? json(sliding_window) : json(nullptr);
  } else if (model_type != "llama") {
    j["use_sliding_window"] = use_sliding_window;
    // As transformers saves it: no window unless use_sliding_window.
    j["sliding_window"] =
        use_sliding_window && sliding_window > 0 ? json(sliding_window) : json(nullptr);
    j["max_window_layers"] = max_window_layers;
    if (!layer_types.empty()) j["layer_types"] = layer_types;
  }
  j.update(json::parse(passthrough_json));
  if (with_labels) labels.to_json(j);
  return j.dump(2) + "\n";
}

}  // namespace hfrun::nn
