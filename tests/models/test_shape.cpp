// model_shape (config.json alone) against the models create_model builds: the same parameter
// count in each block and outside them, and the same Linear layers (path, in, out, bias) for
// every family and task, with the config keys that change the shape (biases, GQA, head_dim,
// qk-norm, untied heads, MLP width, label counts).
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <tuple>

#include "models/registry.h"
#include "models/shape.h"

namespace hfrun::nn {
namespace {

using LinearKey = std::tuple<std::string, int64_t, int64_t, bool>;

void expect_shape_matches(const std::string& json, Task task) {
  SCOPED_TRACE(json);
  const ModelShape s = model_shape(json, "config.json", "gpt2", task);
  auto model = create_model(json, "config.json", 3, "gpt2", task);
  EXPECT_EQ(s.parameters(), model->num_parameters());
  ASSERT_EQ(static_cast<int64_t>(model->blocks().size()), s.layers);
  for (Module* block : model->blocks()) {
    int64_t n = 0;
    for (const auto& [name, p] : block->named_parameters()) n += p.numel();
    EXPECT_EQ(n, s.block_params);
  }
  std::set<LinearKey> real, predicted;
  for (const auto& [path, module] : model->named_modules()) {
    if (const auto* l = dynamic_cast<const Linear*>(module)) {
      real.insert({path, l->in_features(), l->out_features(), l->bias().defined()});
    }
  }
  for (const LinearShape& l : s.linears) predicted.insert({l.path, l.in, l.out, l.bias});
  EXPECT_EQ(predicted, real);
  EXPECT_EQ(s.outputs, task == Task::kSequenceClassification ? model->labels()->num_labels()
                                                             : model->vocab_size());
}

TEST(ModelShape, MatchesTheBuiltModelOfEveryFamily) {
  expect_shape_matches(
      R"({"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 50,
          "n_positions": 12})",
      Task::kCausalLM);
  expect_shape_matches(
      R"({"model_type": "gpt2", "n_layer": 1, "n_head": 4, "n_embd": 16, "n_inner": 24,
          "vocab_size": 31, "n_positions": 8})",
      Task::kCausalLM);
  const std::string llama =
      R"({"model_type": "llama", "hidden_size": 32, "intermediate_size": 40,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "vocab_size": 64, "max_position_embeddings": 32)";
  expect_shape_matches(llama + "}", Task::kCausalLM);
  expect_shape_matches(llama + R"(, "tie_word_embeddings": true, "attention_bias": true,
                          "mlp_bias": true, "head_dim": 12})",
                       Task::kCausalLM);
  expect_shape_matches(llama + R"(, "num_labels": 3})", Task::kSequenceClassification);
  for (const char* type : {"mistral", "qwen2", "qwen3"}) {
    std::string j = llama;
    j.replace(j.find("llama"), 5, type);
    expect_shape_matches(j + "}", Task::kCausalLM);
    expect_shape_matches(j + R"(, "tie_word_embeddings": true})", Task::kSequenceClassification);
  }
  const std::string bert =
      R"({"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 2,
          "num_attention_heads": 2, "intermediate_size": 24, "vocab_size": 40,
          "max_position_embeddings": 20, "type_vocab_size": 3)";
  expect_shape_matches(bert + "}", Task::kMaskedLM);
  expect_shape_matches(bert + R"(, "num_labels": 5})", Task::kSequenceClassification);
}

TEST(ModelShape, RefusesWhatCreateModelRefuses) {
  EXPECT_THROW(model_shape(R"({"model_type": "t5"})", "c.json", "gpt2", Task::kCausalLM), Error);
  EXPECT_THROW(model_shape(R"({"model_type": "gpt2"})", "c.json", "gpt2", Task::kMaskedLM), Error);
  EXPECT_THROW(model_shape(R"({"model_type": "gpt2", "n_embd": 10, "n_head": 3})", "c.json", "gpt2",
                           Task::kCausalLM),
               Error);
}

}  // namespace
}  // namespace hfrun::nn
