// LoRA on a module tree (nn/lora.h, models/peft.h): adapters with dropout give the same
// gradients with and without activation checkpointing (the recompute replays the masks and the
// stream goes on as if nothing was recomputed), and a module to save that has children exports
// every parameter below it under PEFT's names.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "autograd/node.h"
#include "models/peft.h"
#include "models/registry.h"
#include "nn/lora.h"
#include "tensor/ops.h"

namespace hfrun::nn {
namespace {

constexpr const char* kConfig = R"({"model_type": "llama", "vocab_size": 40, "hidden_size": 16,
    "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 32})";

std::unique_ptr<CausalLM> lora_model(bool checkpointing, const LoraOptions& o) {
  auto model = create_causal_lm(kConfig, "t", 3, "llama");
  Generator init(4);
  apply_lora(*model, o, init, &model->dropout_generator(), "test");
  for (Module* block : model->blocks())
    dynamic_cast<Block*>(block)->set_checkpointing(checkpointing);
  model->train();
  return model;
}

TEST(Lora, DropoutReplaysUnderActivationCheckpointing) {
  LoraOptions o;
  o.dropout = 0.3;
  o.target_modules = {"q_proj", "down_proj"};
  const Tensor ids = ops::from_ints({1, 5, 7, 2, 9, 11, 3, 4}, {2, 4});
  const Tensor targets = ops::from_ints({5, 7, 2, 9, 11, 3, 4, 6}, {2, 4});
  std::vector<std::vector<float>> grads[2];
  uint64_t offsets[2];
  for (int ck = 0; ck < 2; ++ck) {
    auto model = lora_model(ck == 1, o);
    for (int step = 0; step < 2; ++step) {  // the second step sees the stream the first left
      model->zero_grad();
      autograd::backward(model->loss(ids, targets));
    }
    for (const auto& [name, t] : model->named_trainable_parameters()) {
      ASSERT_TRUE(t.grad().defined()) << name;
      grads[ck].push_back(t.grad().to_vector());
    }
    offsets[ck] = model->dropout_generator().offset();
  }
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t i = 0; i < grads[0].size(); ++i) {
    ASSERT_EQ(grads[0][i].size(), grads[1][i].size());
    for (size_t k = 0; k < grads[0][i].size(); ++k) {
      EXPECT_NEAR(grads[0][i][k], grads[1][i][k], 1e-6 + 1e-5 * std::fabs(grads[0][i][k]))
          << "parameter " << i;
    }
  }
  EXPECT_EQ(offsets[0], offsets[1]) << "the recompute moved the dropout stream";
}

TEST(Lora, ModulesToSaveExportEveryParameterBelowThem) {
  LoraOptions o;
  o.target_modules = {"q_proj"};
  o.modules_to_save = {"mlp"};  // a module with children (gate, up, down)
  auto model = lora_model(false, o);
  EXPECT_TRUE(model->is_trainable("model.layers.0.mlp.gate_proj.weight"));
  EXPECT_FALSE(model->is_trainable("model.layers.0.self_attn.q_proj.weight"));
  const auto tensors = peft_tensors(model->named_parameters(), o);
  std::vector<std::string> names;
  for (const auto& [n, t] : tensors) names.push_back(n);
  for (const char* want : {"base_model.model.model.layers.1.mlp.down_proj.weight",
                           "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  }
  // Exactly what trains.
  EXPECT_EQ(tensors.size(), model->named_trainable_parameters().size());
}

}  // namespace
}  // namespace hfrun::nn
