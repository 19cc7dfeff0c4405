#include "models/gpt2/config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "models/config_reader.h"

namespace hfrun::nn {

using nlohmann::json;

void Gpt2Config::validate(const std::string& source) const {
  auto positive = [&](int64_t v, const char* key) {
    HF_CHECK_INPUT(v > 0, source, ": ", key, " must be positive, got ", v);
  };
  positive(vocab_size, "vocab_size");
  positive(n_positions, "n_positions");
  positive(n_embd, "n_embd");
  positive(n_layer, "n_layer");
  positive(n_head, "n_head");
  HF_CHECK_INPUT(n_embd % n_head == 0, source, ": n_embd (", n_embd,
                 ") must be divisible by n_head (", n_head, ")");
  HF_CHECK_INPUT(n_inner >= 0, source, ": n_inner must be >= 0 (0 = 4 * n_embd)");
  HF_CHECK_INPUT(layer_norm_epsilon > 0, source, ": layer_norm_epsilon must be positive");
  for (auto [v, key] : {std::pair{embd_pdrop, "embd_pdrop"}, std::pair{resid_pdrop, "resid_pdrop"},
                        std::pair{attn_pdrop, "attn_pdrop"}}) {
    HF_CHECK_INPUT(v >= 0 && v < 1, source, ": ", key, " must be in [0, 1), got ", v);
  }
  HF_CHECK_INPUT(activation_function == "gelu_new" || activation_function == "gelu" ||
                     activation_function == "gelu_pytorch_tanh" || activation_function == "relu" ||
                     activation_function == "silu",
                 source, ": activation_function '", activation_function,
                 "' is not supported (gelu_new, gelu_pytorch_tanh, gelu, relu, silu)");
}

Gpt2Config Gpt2Config::from_json(const std::string& text, const std::string& source) {
  const json j = parse_config_object(text, source);
  const ConfigReader r{j, source};
  Gpt2Config c;
  if (j.contains("model_type")) {
    HF_CHECK_INPUT(j["model_type"] == "gpt2", source, ": model_type is ", j["model_type"].dump(),
                   ", expected \"gpt2\"");
  }
  r.get("vocab_size", c.vocab_size);
  r.get("n_ctx", c.n_positions);  // older GPT-2 configs; n_positions wins when both exist
  r.get("n_positions", c.n_positions);
  r.get("n_embd", c.n_embd);
  r.get("n_layer", c.n_layer);
  r.get("n_head", c.n_head);
  r.get("n_inner", c.n_inner);
  r.get("layer_norm_epsilon", c.layer_norm_epsilon);
  r.get("initializer_range", c.initializer_range);
  r.get("embd_pdrop", c.embd_pdrop);
  r.get("resid_pdrop", c.resid_pdrop);
  r.get("attn_pdrop", c.attn_pdrop);
  r.get("activation_function", c.activation_function);
  for (const char* key :
       {"scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"}) {
    HF_CHECK_INPUT(!j.contains(key) || j[key] == false, source, ": ", key,
                   " = true is not supported");
  }
  HF_CHECK_INPUT(!j.contains("scale_attn_weights") || j["scale_attn_weights"] == true, source,
                 ": scale_attn_weights = false is not supported");
  c.validate(source);
  return c;
}

const std::vector<std::string>& Gpt2Config::keys() {
  static const std::vector<std::string> k = {"model_type",
                                             "vocab_size",
                                             "n_positions",
                                             "n_ctx",
                                             "n_embd",
                                             "n_layer",
                                             "n_head",
                                             "n_inner",
                                             "layer_norm_epsilon",
                                             "initializer_range",
                                             "embd_pdrop",
                                             "resid_pdrop",
                                             "attn_pdrop",
                                             "activation_function"};
  return k;
}

Gpt2Config Gpt2Config::from_file(const std::string& path) {
  std::ifstream in(path);
  HF_CHECK_INPUT(in.good(), path, ": cannot open model config");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_json(ss.str(), path);
}

std::string Gpt2Config::to_json() const {
  json j = {{"model_type", "gpt2"},
            {"architectures", {"GPT2LMHeadModel"}},
            {"vocab_size", vocab_size},
            {"n_positions", n_positions},
            {"n_ctx", n_positions},
            {"n_embd", n_embd},
            {"n_layer", n_layer},
            {"n_head", n_head},
            {"n_inner", n_inner > 0 ? json(n_inner) : json(nullptr)},
            {"layer_norm_epsilon", layer_norm_epsilon},
            {"initializer_range", initializer_range},
            {"embd_pdrop", embd_pdrop},
            {"resid_pdrop", resid_pdrop},
            {"attn_pdrop", attn_pdrop},
            {"activation_function", activation_function},
            {"scale_attn_weights", true},
            {"tie_word_embeddings", true},
            {"torch_dtype", "float32"}};
  return j.dump(2) + "\n";
}

}  // namespace hfrun::nn
