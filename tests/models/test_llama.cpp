// The Llama family's module tree (HF names, order and shapes), config.json in and out with the
// keys that are refused by name, rope scaling frequencies, loading by HF name (a missing tensor
// named), the hub cache lookup, and the nn pieces every family stands on: parameter handles
// that follow flattening, plan patterns and the split a plan implies.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numbers>

#include "autograd/node.h"
#include "common/error.h"
#include "io/checkpoint.h"
#include "io/io_test_util.h"
#include "models/llama/llama.h"
#include "models/registry.h"
#include "nn/tensor_parallel.h"
#include "tensor/ops.h"

namespace hfrun::nn {
namespace {

namespace fs = std::filesystem;

LlamaConfig tiny(const std::string& type = "llama") {
  LlamaConfig c;
  c.model_type = type;
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  return c;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

TEST(Llama, ParameterNamesOrderAndShapesFollowHuggingFace) {
  Llama m(tiny(), 1);
  const auto named = m.named_parameters();
  EXPECT_EQ(named.front().first, "model.embed_tokens.weight");
  EXPECT_EQ(named[1].first, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(named[2].first, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(named[5].first, "model.layers.0.mlp.gate_proj.weight");
  EXPECT_EQ(named[8].first, "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(named[9].first, "model.layers.0.post_attention_layernorm.weight");
  EXPECT_EQ(named.back().first, "lm_head.weight");
  EXPECT_EQ(m.parameter("model.layers.1.self_attn.k_proj.weight").sizes(), (Shape{8, 16}));
  EXPECT_EQ(m.parameter("model.layers.1.self_attn.o_proj.weight").sizes(), (Shape{16, 16}));
  EXPECT_EQ(m.parameter("model.layers.1.mlp.down_proj.weight").sizes(), (Shape{16, 24}));
  EXPECT_EQ(m.blocks().size(), 2u);

  LlamaConfig tied = tiny();
  tied.tie_word_embeddings = true;
  Llama t(tied, 1);
  EXPECT_THROW(t.parameter("lm_head.weight"), Error);
  EXPECT_EQ(t.num_parameters() + 40 * 16, m.num_parameters());

  Llama q2(tiny("qwen2"), 1);  // q, k, v biases; none on o
  EXPECT_EQ(q2.parameter("model.layers.0.self_attn.v_proj.bias").sizes(), (Shape{8}));
  EXPECT_THROW(q2.parameter("model.layers.0.self_attn.o_proj.bias"), Error);

  LlamaConfig c3 = tiny("qwen3");
  c3.head_dim = 6;
  Llama q3(c3, 1);  // per-head norms, head_dim 6 != 16 / 4
  EXPECT_EQ(q3.parameter("model.layers.0.self_attn.q_norm.weight").sizes(), (Shape{6}));
  EXPECT_EQ(q3.parameter("model.layers.0.self_attn.q_proj.weight").sizes(), (Shape{24, 16}));
  EXPECT_EQ(q3.forward(ops::from_ints({1, 2, 3}, {1, 3})).sizes(), (Shape{1, 3, 40}));
}

TEST(Llama, ConfigJsonRoundTripsAndRefusesWhatIsNotImplemented) {
  LlamaConfig c = tiny();
  c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 16};
  c.has_rope_scaling = true;
  const LlamaConfig back = LlamaConfig::from_json(c.to_json(), "config.json");
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_EQ(back.rope_scaling.type, "llama3");
  EXPECT_EQ(model_type_of(c.to_json(), "config.json"), "llama");
  // Real files carry many keys at their no-op values.
  const std::string qwen = R"({"model_type": "qwen2", "hidden_size": 16, "num_attention_heads": 4,
      "num_hidden_layers": 1, "intermediate_size": 8, "vocab_size": 30, "sliding_window": 4096,
      "use_sliding_window": false, "max_window_layers": 21, "rope_scaling": null,
      "torch_dtype": "bfloat16", "transformers_version": "4.40.0", "bos_token_id": 1})";
  EXPECT_EQ(create_causal_lm(qwen, "q.json")->model_type(), "qwen2");

  auto refused = [](const std::string& extra, const std::string& key) {
    const std::string json =
        R"({"model_type": "llama", "hidden_size": 16, "num_attention_heads": 4, )" + extra + "}";
    const std::string msg = message_of([&] { LlamaConfig::from_json(json, "bad.json"); });
    EXPECT_NE(msg.find("bad.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(key), std::string::npos) << msg;
  };
  refused(R"("rope_scaling": {"rope_type": "dynamic", "factor": 4.0})", "dynamic");
  refused(R"("rope_scaling": {"rope_type": "longrope", "factor": 4.0})", "longrope");
  // YaRN's parameters survive config.json: the same frequencies and cos/sin tables after.
  for (const char* rs : {R"({"rope_type": "yarn", "factor": 4.0,
                             "original_max_position_embeddings": 8})",
                         R"({"type": "yarn", "factor": 8.0, "beta_fast": 16, "beta_slow": 2,
                             "mscale": 0.707, "mscale_all_dim": 0.707, "truncate": false})"}) {
    const LlamaConfig c = LlamaConfig::from_json(
        R"({"model_type": "qwen3", "hidden_size": 32, "num_attention_heads": 4, "head_dim": 8,
            "max_position_embeddings": 64, "rope_scaling": )" +
            std::string(rs) + "}",
        "yarn.json");
    const LlamaConfig back = LlamaConfig::from_json(c.to_json(), "back.json");
    EXPECT_EQ(rope_inverse_frequencies(back), rope_inverse_frequencies(c)) << rs;
    EXPECT_EQ(rope_tables(back, 0, 9, Device::cpu()).cos.to_vector(),
              rope_tables(c, 0, 9, Device::cpu()).cos.to_vector())
        << rs;
  }
  refused(R"("hidden_act": "gelu")", "hidden_act");
  refused(R"("attention_dropout": 1.0)", "attention_dropout");
  refused(R"("attention_dropout": -0.1)", "attention_dropout");
  refused(R"("num_key_value_heads": 3)", "num_key_value_heads");
  refused(R"("num_local_experts": 8)", "num_local_experts");
  refused(R"("head_dim": 7)", "head_dim");
  const std::string msg = message_of([] {
    LlamaConfig::from_json(R"({"model_type": "qwen3", "num_hidden_layers": 2,
        "layer_types": ["full_attention"]})",
                           "q3.json");
  });
  EXPECT_NE(msg.find("layer_types"), std::string::npos) << msg;
  EXPECT_NE(msg.find("q3.json"), std::string::npos) << msg;
  EXPECT_NE(
      message_of([] { create_causal_lm(R"({"model_type": "mamba"})", "m.json"); }).find("mamba"),
      std::string::npos);
}

// Sliding windows per layer as transformers reads them: Mistral everywhere (4096 when absent,
// none when null); Qwen2/Qwen3 only with use_sliding_window, from max_window_layers on unless
// layer_types says which; config.json round-trips them. Any sequence length runs.
TEST(Llama, SlidingWindowsPerLayerAsTransformersReadsThem) {
  auto windows = [](const std::string& json) {
    const LlamaConfig c = LlamaConfig::from_json(json, "c.json");
    std::vector<int64_t> w;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) w.push_back(c.window_of_layer(l));
    const LlamaConfig back = LlamaConfig::from_json(c.to_json(), "back.json");
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      EXPECT_EQ(back.window_of_layer(l), w[static_cast<size_t>(l)]) << json;
    }
    return w;
  };
  using V = std::vector<int64_t>;
  EXPECT_EQ(windows(R"({"model_type": "mistral", "num_hidden_layers": 2})"), (V{4096, 4096}));
  EXPECT_EQ(windows(R"({"model_type": "mistral", "num_hidden_layers": 2, "sliding_window": null})"),
            (V{0, 0}));
  EXPECT_EQ(windows(R"({"model_type": "mistral", "num_hidden_layers": 2, "sliding_window": 5})"),
            (V{5, 5}));
  EXPECT_EQ(windows(R"({"model_type": "qwen2", "num_hidden_layers": 3, "sliding_window": 5})"),
            (V{0, 0, 0}));
  EXPECT_EQ(windows(R"({"model_type": "qwen2", "num_hidden_layers": 3, "sliding_window": 5,
      "use_sliding_window": true, "max_window_layers": 1})"),
            (V{0, 5, 5}));
  EXPECT_EQ(windows(R"({"model_type": "qwen3", "num_hidden_layers": 3, "use_sliding_window": true,
      "max_window_layers": 0, "sliding_window": 6,
      "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]})"),
            (V{6, 0, 6}));
  EXPECT_EQ(
      windows(R"({"model_type": "qwen2", "num_hidden_layers": 2, "use_sliding_window": true})"),
      (V{0, 0}));  // max_window_layers defaults to 28
  EXPECT_EQ(windows(R"({"model_type": "llama", "num_hidden_layers": 2, "sliding_window": 5,
      "layer_types": ["sliding_attention"]})"),
            (V{0, 0}));  // LlamaConfig has no window: the keys are ignored, as transformers does
  // A sliding layer without a window: transformers cannot build its mask, hfrun refuses it.
  for (const char* json : {R"({"model_type": "qwen2", "num_hidden_layers": 1,
                               "layer_types": ["sliding_attention"]})",
                           R"({"model_type": "qwen3", "num_hidden_layers": 1,
                               "use_sliding_window": true, "sliding_window": null,
                               "layer_types": ["sliding_attention"]})"}) {
    const std::string msg = message_of([&] { LlamaConfig::from_json(json, "sw.json"); });
    EXPECT_NE(msg.find("sw.json: layer_types marks a sliding_attention layer"), std::string::npos)
        << msg;
  }
  auto mistral = create_causal_lm(R"({"model_type": "mistral", "hidden_size": 16,
      "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 1,
      "intermediate_size": 8, "vocab_size": 30, "sliding_window": 8})",
                                  "mistral.json");
  mistral->check_sequence_length(64, "x");
  EXPECT_NE(message_of([] {
              LlamaConfig::from_json(R"({"model_type": "mistral", "sliding_window": 0})", "m.json");
            }).find("sliding_window"),
            std::string::npos);
}

TEST(Llama, Llama3RopeScalingKeepsShortWavelengthsAndSlowsLongOnes) {
  LlamaConfig c = tiny();
  c.hidden_size = 32;
  c.num_attention_heads = 4;  // head_dim 8: inv_freq 1, 0.1, 0.01, 0.001
  c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 16};
  c.has_rope_scaling = true;
  const std::vector<double> f = rope_inverse_frequencies(c);
  ASSERT_EQ(f.size(), 4u);
  // original 16, factors 1 and 4: wavelengths above 16 are slowed 8x (62.8, 628, 6283), those
  // between 4 and 16 (2 pi) interpolated.
  const double smooth = (16 / (2 * std::numbers::pi) - 1.0) / 3.0;
  EXPECT_NEAR(f[0], (1 - smooth) / 8 + smooth, 1e-12);
  EXPECT_NEAR(f[1], 0.1 / 8, 1e-15);
  EXPECT_NEAR(f[3], 0.001 / 8, 1e-18);
  c.rope_scaling.original_max_position_embeddings = 64;  // 2 pi is now below 64 / 4: kept
  EXPECT_DOUBLE_EQ(rope_inverse_frequencies(c)[0], 1.0);
  const RopeTables r = rope_tables(c, 3, 2, Device::cpu());
  EXPECT_EQ(r.cos.sizes(), (Shape{2, 8}));
  EXPECT_NEAR(r.sin.to_vector()[4 + 8], std::sin(4 * rope_inverse_frequencies(c)[0]), 1e-6);
}

TEST(Llama, WeightsLoadByHfNameAndAMissingTensorIsNamed) {
  testing::IoTempDir dir;
  Llama m(tiny(), 3);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, t] : m.named_parameters()) {
    if (name != "lm_head.weight") tensors.emplace_back(name, ops::to_dtype(t, DType::kBF16));
  }
  io::save_sharded_safetensors(dir.str(), tensors, 1 << 12);  // sharded, bf16 on disk
  std::ofstream(dir.str() + "/config.json") << m.config_json();
  const std::string msg = message_of([&] { load_pretrained(dir.str()); });
  EXPECT_NE(msg.find("lm_head.weight"), std::string::npos) << msg;

  tensors.emplace_back("lm_head.weight", m.parameter("lm_head.weight"));
  fs::remove_all(dir.str());
  fs::create_directories(dir.str());
  io::save_sharded_safetensors(dir.str(), tensors, 1 << 12);
  std::ofstream(dir.str() + "/config.json") << m.config_json();
  auto loaded = load_pretrained(dir.str());
  const Tensor q = m.parameter("model.layers.1.self_attn.q_proj.weight");
  EXPECT_EQ(loaded->parameter("model.layers.1.self_attn.q_proj.weight").to_vector(),
            ops::to_dtype(ops::to_dtype(q, DType::kBF16), DType::kF32).to_vector());
}

// Every family: export (config.json + model.safetensors by HF names) -> load_pretrained gives
// the same logits; a tensor of the wrong shape is named with the file.
TEST(Registry, EveryFamilyRoundTripsThroughItsHfFiles) {
  for (const std::string type : {"gpt2", "llama", "mistral", "qwen2", "qwen3"}) {
    testing::IoTempDir dir;
    const std::string cfg =
        type == "gpt2"
            ? R"({"model_type": "gpt2", "vocab_size": 40, "n_positions": 16, "n_embd": 16,
                           "n_layer": 2, "n_head": 2})"
            : R"({"model_type": ")" + type + R"(", "vocab_size": 40, "hidden_size": 16,
                           "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
                           "num_key_value_heads": 2, "max_position_embeddings": 16,
                           "tie_word_embeddings": )" +
                  (type == "qwen3" ? "true" : "false") + "}";
    auto m = create_causal_lm(cfg, type, 9);
    m->eval();
    std::ofstream(dir.str() + "/config.json") << m->config_json();
    io::save_sharded_safetensors(dir.str(), m->named_parameters(), 1 << 30);
    auto back = load_pretrained(dir.str());
    EXPECT_EQ(back->model_type(), type);
    const Tensor ids = ops::from_ints({1, 5, 7, 2, 39}, {1, 5});
    autograd::NoGradGuard no_grad;
    EXPECT_EQ(back->forward(ids).to_vector(), m->forward(ids).to_vector()) << type;

    // The same files under a config.json with a different shape: the tensor is named.
    std::string wider = m->config_json();
    const std::string key = type == "gpt2" ? "\"n_embd\": 16" : "\"intermediate_size\": 24";
    const size_t at = wider.find(key);
    ASSERT_NE(at, std::string::npos) << wider;
    wider.replace(at, key.size(), type == "gpt2" ? "\"n_embd\": 32" : "\"intermediate_size\": 32");
    std::ofstream(dir.str() + "/config.json") << wider;
    const std::string msg = message_of([&] { load_pretrained(dir.str()); });
    EXPECT_NE(msg.find(type == "gpt2" ? "transformer.wte.weight" : "mlp.gate_proj.weight"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("model"), std::string::npos) << msg;
  }
}

// load_model draws no initial values for what the checkpoint provides: every parameter equals
// create_model + load_weights', the heads the base checkpoint lacks (their initialisation from
// the same seed) included, in every family and task.
TEST(Registry, LoadModelInitialisesOnlyWhatTheCheckpointLacks) {
  const std::string llama = R"({"model_type": "qwen2", "vocab_size": 40, "hidden_size": 16,
      "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
      "num_key_value_heads": 2, "max_position_embeddings": 16, "num_labels": 3})";
  const std::string gpt2 = R"({"model_type": "gpt2", "vocab_size": 40, "n_positions": 16,
      "n_embd": 16, "n_layer": 2, "n_head": 2})";
  const std::string bert = R"({"model_type": "bert", "vocab_size": 40, "hidden_size": 16,
      "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 24,
      "max_position_embeddings": 16, "pad_token_id": 0, "num_labels": 2})";
  struct Case {
    std::string cfg;
    Task base, task;
  };
  for (const Case& k :
       {Case{gpt2, Task::kCausalLM, Task::kCausalLM}, Case{llama, Task::kCausalLM, Task::kCausalLM},
        Case{llama, Task::kCausalLM, Task::kSequenceClassification},
        Case{bert, Task::kMaskedLM, Task::kMaskedLM},
        Case{bert, Task::kMaskedLM, Task::kSequenceClassification}}) {
    testing::IoTempDir dir;
    auto base = create_model(k.cfg, "c.json", 5, "gpt2", k.base);
    io::save_sharded_safetensors(dir.str(), base->named_parameters(), 1 << 30);
    auto eager = create_model(k.cfg, "c.json", 11, "gpt2", k.task);
    const std::vector<std::string> fresh_eager = load_weights(*eager, dir.str());
    std::vector<std::string> fresh;
    auto late = load_model(k.cfg, "c.json", 11, "gpt2", k.task, dir.str(), &fresh);
    EXPECT_EQ(fresh, fresh_eager) << late->architecture();
    EXPECT_EQ(fresh.empty(), k.task == k.base) << late->architecture();
    const auto want = eager->named_parameters();
    const auto got = late->named_parameters();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i].first, want[i].first);
      EXPECT_EQ(got[i].second.to_vector(), want[i].second.to_vector())
          << late->architecture() << " " << want[i].first;
    }
  }
}

TEST(Registry, HubIdsResolveInTheLocalCacheOnly) {
  testing::IoTempDir dir;
  const fs::path repo = fs::path(dir.str()) / "models--acme--tiny-llama";
  fs::create_directories(repo / "refs");
  fs::create_directories(repo / "snapshots" / "abc123");
  std::ofstream(repo / "refs" / "main") << "abc123\n";
  setenv("HF_HUB_CACHE", dir.str().c_str(), 1);
  EXPECT_EQ(resolve_pretrained("acme/tiny-llama"), (repo / "snapshots" / "abc123").string());
  EXPECT_EQ(resolve_pretrained("acme/tiny-llama", "abc123"),
            (repo / "snapshots" / "abc123").string());
  const std::string msg = message_of([] { resolve_pretrained("acme/other"); });
  EXPECT_NE(msg.find("models--acme--other"), std::string::npos) << msg;
  EXPECT_NE(message_of([] { resolve_pretrained("acme/tiny-llama", "v2"); }).find("v2"),
            std::string::npos);
  unsetenv("HF_HUB_CACHE");
  EXPECT_EQ(resolve_pretrained(dir.str()), dir.str());  // a directory is taken as it is
}

TEST(Module, ParameterHandlesFollowFlatteningAndPlansNameTheirSplits) {
  Llama m(tiny(), 5);
  const Parameter h = m.parameter_handle("model.layers.0.mlp.up_proj.weight");
  const Tensor before = h.get();
  const auto& flat = m.flatten_parameters();
  // The handle now reads the flat buffer's view, not the storage it was created with.
  EXPECT_NE(h.get().raw_data(), before.raw_data());
  EXPECT_EQ(h.get().to_vector(), before.to_vector());
  const FlatSlot& slot = flat.slots[6];
  EXPECT_EQ(slot.name, "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(static_cast<const float*>(h.get().raw_data()),
            static_cast<const float*>(flat.params.raw_data()) + slot.offset);

  EXPECT_TRUE(matches_plan_pattern("model.layers.*.mlp.up_proj", "model.layers.12.mlp.up_proj"));
  EXPECT_FALSE(matches_plan_pattern("model.layers.*.mlp.up_proj", "model.layers.mlp.up_proj"));
  EXPECT_FALSE(matches_plan_pattern("model.layers.*", "model.layers.1.mlp"));
  // Before any tensor parallelism, the split the plan implies (checkpoints reshard by it).
  const TensorParallelSplit up = m.tensor_parallel_split("model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(up.dim, 0);
  EXPECT_EQ(up.full_shape, (Shape{24, 16}));
  EXPECT_EQ(m.tensor_parallel_split("model.layers.0.self_attn.o_proj.weight").dim, 1);
  EXPECT_EQ(m.tensor_parallel_split("model.embed_tokens.weight").dim, 0);
  EXPECT_FALSE(m.tensor_parallel_split("model.norm.weight").split());
  EXPECT_NE(message_of([&] { m.check_tensor_parallel(4); }).find("num_key_value_heads"),
            std::string::npos);
}

}  // namespace
}  // namespace hfrun::nn
