#include "models/shape.h"

#include <algorithm>

#include "common/error.h"
#include "models/bert/config.h"
#include "models/gpt2/config.h"
#include "models/llama/config.h"
#include "models/registry.h"

namespace hfrun::nn {
namespace {

// Adds a Linear at `path` to the shape and returns its parameters.
int64_t linear(ModelShape& s, const std::string& path, int64_t in, int64_t out, bool bias,
               bool block) {
  s.linears.push_back({path, in, out, bias, block});
  return s.linears.back().params();
}

// The Linears of block i, from those of block 0 (paths differ only in the index).
void repeat_block_linears(ModelShape& s, const std::string& prefix) {
  std::vector<LinearShape> first;
  for (const LinearShape& l : s.linears) {
    if (l.block) first.push_back(l);
  }
  const std::string zero = prefix + "0.";
  for (int64_t i = 1; i < s.layers; ++i) {
    for (LinearShape l : first) {
      l.path = prefix + std::to_string(i) + "." + l.path.substr(zero.size());
      s.linears.push_back(l);
    }
  }
}

ModelShape gpt2_shape(const Gpt2Config& c) {
  ModelShape s;
  s.model_type = "gpt2";
  s.vocab_size = s.outputs = c.vocab_size;
  s.hidden = c.n_embd;
  s.layers = c.n_layer;
  s.heads = s.kv_heads = c.n_head;
  s.head_dim = c.n_embd / c.n_head;
  s.attention_dropout = c.attn_pdrop;
  s.intermediate = c.mlp_width();
  const int64_t C = c.n_embd, I = c.mlp_width();
  const std::string b = "transformer.h.0.";
  s.block_params = 4 * C;  // ln_1, ln_2
  s.block_params += linear(s, b + "attn.c_attn", C, 3 * C, true, true);
  s.block_params += linear(s, b + "attn.c_proj", C, C, true, true);
  s.block_params += linear(s, b + "mlp.c_fc", C, I, true, true);
  s.block_params += linear(s, b + "mlp.c_proj", I, C, true, true);
  repeat_block_linears(s, "transformer.h.");
  s.embedding_params = c.vocab_size * C;
  s.other_params = s.embedding_params + c.n_positions * C + 2 * C;  // wte (tied), wpe, ln_f
  s.lora_exclusions = {"lm_head"};
  return s;
}

ModelShape llama_shape(const LlamaConfig& c, Task task) {
  ModelShape s;
  s.model_type = c.model_type;
  s.vocab_size = c.vocab_size;
  s.hidden = c.hidden_size;
  s.layers = c.num_hidden_layers;
  s.heads = c.num_attention_heads;
  s.kv_heads = c.kv_heads();
  s.head_dim = c.dim_per_head();
  s.attention_dropout = c.attention_dropout;
  s.intermediate = c.intermediate_size;
  s.gated_mlp = true;
  const int64_t C = c.hidden_size, D = c.dim_per_head(), H = c.num_attention_heads;
  const int64_t Hkv = c.kv_heads(), I = c.intermediate_size;
  const std::string b = "model.layers.0.";
  s.block_params = 2 * C + (c.qk_norm() ? 2 * D : 0);  // the two RMSNorms (+ q_norm, k_norm)
  s.block_params += linear(s, b + "self_attn.q_proj", C, H * D, c.qkv_bias(), true);
  s.block_params += linear(s, b + "self_attn.k_proj", C, Hkv * D, c.qkv_bias(), true);
  s.block_params += linear(s, b + "self_attn.v_proj", C, Hkv * D, c.qkv_bias(), true);
  s.block_params += linear(s, b + "self_attn.o_proj", H * D, C, c.o_bias(), true);
  s.block_params += linear(s, b + "mlp.gate_proj", C, I, c.mlp_bias, true);
  s.block_params += linear(s, b + "mlp.up_proj", C, I, c.mlp_bias, true);
  s.block_params += linear(s, b + "mlp.down_proj", I, C, c.mlp_bias, true);
  repeat_block_linears(s, "model.layers.");
  s.embedding_params = c.vocab_size * C;
  s.other_params = s.embedding_params + C;  // embed_tokens, norm
  if (task == Task::kSequenceClassification) {
    s.token_outputs = false;
    s.outputs = c.labels.num_labels();
    s.other_params += linear(s, "score", C, s.outputs, false, false);
    s.lora_exclusions = {"classifier", "score"};
  } else {
    s.outputs = c.vocab_size;
    if (!c.tie_word_embeddings)
      s.other_params += linear(s, "lm_head", C, c.vocab_size, false, false);
    s.lora_exclusions = {"lm_head"};
  }
  return s;
}

ModelShape bert_shape(const BertConfig& c, Task task) {
  ModelShape s;
  s.model_type = "bert";
  s.task = task;
  s.vocab_size = c.vocab_size;
  s.hidden = c.hidden_size;
  s.layers = c.num_hidden_layers;
  s.heads = s.kv_heads = c.num_attention_heads;
  s.head_dim = c.head_dim();
  s.attention_dropout = c.attention_probs_dropout_prob;
  s.intermediate = c.intermediate_size;
  const int64_t C = c.hidden_size, I = c.intermediate_size;
  const std::string b = "bert.encoder.layer.0.";
  s.block_params = 4 * C;  // the two LayerNorms
  s.block_params += linear(s, b + "attention.self.query", C, C, true, true);
  s.block_params += linear(s, b + "attention.self.key", C, C, true, true);
  s.block_params += linear(s, b + "attention.self.value", C, C, true, true);
  s.block_params += linear(s, b + "attention.output.dense", C, C, true, true);
  s.block_params += linear(s, b + "intermediate.dense", C, I, true, true);
  s.block_params += linear(s, b + "output.dense", I, C, true, true);
  repeat_block_linears(s, "bert.encoder.layer.");
  s.embedding_params = c.vocab_size * C;
  s.other_params = s.embedding_params + (c.max_position_embeddings + c.type_vocab_size) * C + 2 * C;
  if (task == Task::kSequenceClassification) {
    s.token_outputs = false;
    s.outputs = c.labels.num_labels();
    s.other_params += linear(s, "bert.pooler.dense", C, C, true, false);
    s.other_params += linear(s, "classifier", C, s.outputs, true, false);
    s.lora_exclusions = {"classifier", "score"};
  } else {
    s.outputs = c.vocab_size;
    // cls.predictions: the output bias, transform (dense + LayerNorm); the decoder is tied.
    s.other_params += c.vocab_size + 2 * C;
    s.other_params += linear(s, "cls.predictions.transform.dense", C, C, true, false);
    s.lora_exclusions = {"lm_head"};
  }
  return s;
}

// Dimensions beyond any real model are refused before they are multiplied (found by
// fuzz/fuzz_model_config: signed overflow in the parameter counts).
void check_dim(int64_t v, int64_t max, const std::string& source, const char* key) {
  HF_CHECK_INPUT(v <= max, source, ": ", key, " ", v, " is larger than hfrun supports (", max, ")");
}

}  // namespace

ModelShape model_shape(const std::string& config_json, const std::string& source,
                       const std::string& default_type, Task task) {
  const std::string type = model_type_of(config_json, source, default_type);
  ModelShape s;
  const std::vector<std::string>& llamas = llama_model_types();
  if (type == "gpt2") {
    HF_CHECK_INPUT(task == Task::kCausalLM, source, ": task ", task_name(task),
                   " is not available for model_type gpt2 (causal_lm, sft)");
    Gpt2Config c = Gpt2Config::from_json(config_json, source);
    c.validate(source);
    check_dim(c.n_embd, 1 << 20, source, "n_embd");
    check_dim(c.mlp_width(), 1 << 20, source, "n_inner");
    check_dim(c.vocab_size, 1 << 26, source, "vocab_size");
    check_dim(c.n_positions, 1 << 26, source, "n_positions");
    check_dim(c.n_layer, 1 << 16, source, "n_layer");
    s = gpt2_shape(c);
  } else if (type == "bert") {
    HF_CHECK_INPUT(task == Task::kMaskedLM || task == Task::kSequenceClassification, source,
                   ": task ", task_name(task),
                   " is not available for model_type bert (masked_lm, sequence_classification)");
    const BertConfig c = BertConfig::from_json(config_json, source);
    c.validate(source);
    check_dim(c.hidden_size, 1 << 20, source, "hidden_size");
    check_dim(c.intermediate_size, 1 << 20, source, "intermediate_size");
    check_dim(c.vocab_size, 1 << 26, source, "vocab_size");
    check_dim(c.max_position_embeddings, 1 << 26, source, "max_position_embeddings");
    check_dim(c.type_vocab_size, 1 << 20, source, "type_vocab_size");
    check_dim(c.num_hidden_layers, 1 << 16, source, "num_hidden_layers");
    check_dim(c.labels.num_labels(), 1 << 20, source, "num_labels");
    s = bert_shape(c, task);
  } else if (std::find(llamas.begin(), llamas.end(), type) != llamas.end()) {
    HF_CHECK_INPUT(task == Task::kCausalLM || task == Task::kSequenceClassification, source,
                   ": task ", task_name(task), " is not available for model_type ", type,
                   " (causal_lm, sft, sequence_classification)");
    const LlamaConfig c = LlamaConfig::from_json(config_json, source, type);
    c.validate(source);
    check_dim(c.hidden_size, 1 << 20, source, "hidden_size");
    check_dim(c.intermediate_size, 1 << 20, source, "intermediate_size");
    check_dim(c.num_attention_heads, 1 << 16, source, "num_attention_heads");
    check_dim(c.dim_per_head(), 1 << 16, source, "head_dim");
    check_dim(c.vocab_size, 1 << 26, source, "vocab_size");
    check_dim(c.num_hidden_layers, 1 << 16, source, "num_hidden_layers");
    check_dim(c.labels.num_labels(), 1 << 20, source, "num_labels");
    s = llama_shape(c, task);
  } else {
    HF_CHECK_INPUT(false, source, ": model_type '", type, "' is not supported");
  }
  s.task = task;
  return s;
}

}  // namespace hfrun::nn
