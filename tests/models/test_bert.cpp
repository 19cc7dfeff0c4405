// BERT's module tree (HF names per task), config.json in and out (labels, refused keys),
// loading from the checkpoints people have (BertModel names without "bert.", LayerNorm
// gamma/beta, a base model under a task head whose classifier is newly initialised), padding
// that does not change the unpadded rows, dropout only in training, and the label rules.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "common/error.h"
#include "io/checkpoint.h"
#include "io/io_test_util.h"
#include "models/bert/bert.h"
#include "models/registry.h"
#include "tensor/ops.h"

namespace hfrun::nn {
namespace {

namespace fs = std::filesystem;

BertConfig tiny() {
  BertConfig c;
  c.vocab_size = 30;
  c.hidden_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 24;
  c.max_position_embeddings = 20;
  return c;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.message();
  }
  return "no error";
}

TEST(Bert, NamesAreHfsPerTask) {
  Bert mlm(tiny(), Task::kMaskedLM, 1);
  std::vector<std::string> names;
  for (const auto& [n, t] : mlm.named_parameters()) names.push_back(n);
  EXPECT_EQ(names.front(), "bert.embeddings.word_embeddings.weight");
  EXPECT_EQ(names[1], "bert.embeddings.position_embeddings.weight");
  EXPECT_EQ(names[2], "bert.embeddings.token_type_embeddings.weight");
  EXPECT_EQ(names[3], "bert.embeddings.LayerNorm.weight");
  EXPECT_EQ(names[5], "bert.encoder.layer.0.attention.self.query.weight");
  EXPECT_EQ(names.back(), "cls.predictions.transform.LayerNorm.bias");
  EXPECT_NE(std::find(names.begin(), names.end(), "cls.predictions.bias"), names.end());
  EXPECT_EQ(std::find(names.begin(), names.end(), "bert.pooler.dense.weight"), names.end())
      << "BertForMaskedLM has no pooler";
  EXPECT_EQ(mlm.architecture(), "BertForMaskedLM");
  EXPECT_EQ(mlm.parameter("cls.predictions.bias").sizes(), (Shape{30}));
  // pad_token_id's row starts at 0 (nn.Embedding's padding_idx).
  const std::vector<float> row0 =
      ops::narrow(mlm.parameter("bert.embeddings.word_embeddings.weight"), 0, 0, 1).to_vector();
  EXPECT_EQ(row0, std::vector<float>(16, 0.0f));

  BertConfig c = tiny();
  c.labels = LabelConfig::from_json(nlohmann::json{{"num_labels", 3}}, "t");
  Bert cls(c, Task::kSequenceClassification, 1);
  EXPECT_EQ(cls.architecture(), "BertForSequenceClassification");
  EXPECT_EQ(cls.parameter("classifier.weight").sizes(), (Shape{3, 16}));
  EXPECT_EQ(cls.parameter("bert.pooler.dense.weight").sizes(), (Shape{16, 16}));
  EXPECT_EQ(cls.labels()->num_labels(), 3);
  EXPECT_EQ(cls.blocks().size(), 2u);
}

TEST(Bert, ConfigJsonRoundTripsAndRefusesWhatIsNotImplemented) {
  const std::string text = R"({"model_type": "bert", "vocab_size": 30, "hidden_size": 16,
      "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 24,
      "hidden_act": "gelu_new", "id2label": {"0": "neg", "1": "pos", "2": "neutral"},
      "classifier_dropout": 0.2, "architectures": ["BertForSequenceClassification"],
      "transformers_version": "4.40.0", "gradient_checkpointing": false})";
  const BertConfig c = BertConfig::from_json(text, "c.json");
  EXPECT_EQ(c.hidden_act, "gelu_new");
  EXPECT_EQ(c.labels.num_labels(), 3);
  EXPECT_EQ(c.labels.id2label[2], "neutral");
  EXPECT_DOUBLE_EQ(c.classifier_dropout_prob(), 0.2);
  const nlohmann::json out = nlohmann::json::parse(c.to_json("BertForSequenceClassification"));
  EXPECT_EQ(out["architectures"][0], "BertForSequenceClassification");
  EXPECT_EQ(out["id2label"]["1"], "pos");
  EXPECT_EQ(out["label2id"]["neutral"], 2);
  EXPECT_EQ(BertConfig::from_json(out.dump(), "again").labels.id2label, c.labels.id2label);

  for (const auto& [bad, key] : std::vector<std::pair<std::string, std::string>>{
           {R"({"position_embedding_type": "relative_key"})", "position_embedding_type"},
           {R"({"is_decoder": true})", "is_decoder"},
           {R"({"hidden_act": "mish"})", "hidden_act"},
           {R"({"hidden_size": 10, "num_attention_heads": 4})", "hidden_size"},
           {R"({"problem_type": "multi_label_classification"})", "problem_type"},
           {R"({"id2label": {"0": "a", "5": "b"}})", "id2label"},
           {R"({"num_labels": 0})", "num_labels"}}) {
    const std::string& json = bad;  // clang 14 cannot capture a structured binding
    const std::string msg = message_of([&] { BertConfig::from_json(json, "b.json"); });
    EXPECT_NE(msg.find("b.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(key), std::string::npos) << bad << " -> " << msg;
  }
}

TEST(Bert, LabelsFollowTransformersRules) {
  // num_labels that disagrees with id2label wins and renames the labels.
  LabelConfig l = LabelConfig::from_json(
      nlohmann::json::parse(R"({"id2label": {"0": "a", "1": "b"}, "num_labels": 3})"), "x");
  EXPECT_EQ(l.id2label, (std::vector<std::string>{"LABEL_0", "LABEL_1", "LABEL_2"}));
  EXPECT_FALSE(l.regression());
  LabelConfig r = LabelConfig::from_json(nlohmann::json::parse(R"({"num_labels": 1})"), "x");
  EXPECT_TRUE(r.regression());
  LabelConfig d = LabelConfig::from_json(nlohmann::json::object(), "x");
  EXPECT_EQ(d.num_labels(), 2);
  EXPECT_EQ(d.label2id[1], (std::pair<std::string, int64_t>{"LABEL_1", 1}));
}

// The rows a batch pads do not change the others: a row alone equals the same row padded next to
// a longer one (the attention mask hides the padding), in eval mode.
TEST(Bert, PaddingDoesNotChangeTheUnpaddedRows) {
  for (Task task : {Task::kMaskedLM, Task::kSequenceClassification}) {
    Bert m(tiny(), task, 5);
    m.eval();
    autograd::NoGradGuard no_grad;
    const Tensor alone = m.forward(
        ModelInputs(ops::from_ints({2, 7, 9, 4}, {1, 4}), ops::from_ints({0, 0, 1, 1}, {1, 4})));
    const Tensor batch = m.forward(ModelInputs(
        ops::from_ints({2, 7, 9, 4, 0, 0, 3, 5, 6, 8, 11, 12}, {2, 6}),
        ops::from_ints({0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1}, {2, 6}), ops::from_ints({4, 6}, {2})));
    const int64_t per_row = task == Task::kMaskedLM ? 4 * 30 : 2;
    const std::vector<float> a = alone.to_vector(), b = batch.to_vector();
    for (int64_t i = 0; i < per_row; ++i) {
      EXPECT_NEAR(a[static_cast<size_t>(i)], b[static_cast<size_t>(i)], 1e-5) << i;
    }
  }
}

TEST(Bert, LoadsBaseModelNamesAndOldLayerNormNamesUnderATaskHead) {
  testing::IoTempDir dir;
  Bert mlm(tiny(), Task::kMaskedLM, 3);
  // A BertModel checkpoint of older days: no "bert." prefix, LayerNorm.gamma / beta, and the
  // MLM bias as cls.predictions.decoder.bias; extra tensors are ignored.
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, t] : mlm.named_parameters()) {
    std::string n = name;
    if (n.rfind("bert.", 0) == 0) n = n.substr(5);
    if (n.size() > 16 && n.compare(n.size() - 16, 16, "LayerNorm.weight") == 0) {
      n = n.substr(0, n.size() - 6) + "gamma";
    }
    if (n.size() > 14 && n.compare(n.size() - 14, 14, "LayerNorm.bias") == 0) {
      n = n.substr(0, n.size() - 4) + "beta";
    }
    if (n == "cls.predictions.bias") n = "cls.predictions.decoder.bias";
    tensors.emplace_back(n, t);
  }
  tensors.emplace_back("embeddings.position_ids", ops::zeros({1, 20}));
  io::save_sharded_safetensors(dir.str(), tensors, 1 << 30);

  Bert again(tiny(), Task::kMaskedLM, 99);
  EXPECT_TRUE(load_weights(again, dir.str()).empty());
  for (const auto& [name, t] : mlm.named_parameters()) {
    EXPECT_EQ(again.parameter(name).to_vector(), t.to_vector()) << name;
  }
  // Under a classification head: the pooler and classifier are not in the file and keep their
  // initialisation; the encoder is loaded.
  Bert cls(tiny(), Task::kSequenceClassification, 7);
  const Tensor init = cls.parameter("classifier.weight");
  const std::vector<std::string> fresh = load_weights(cls, dir.str());
  EXPECT_EQ(fresh, (std::vector<std::string>{"bert.pooler.dense.weight", "bert.pooler.dense.bias",
                                             "classifier.weight", "classifier.bias"}));
  EXPECT_EQ(cls.parameter("classifier.weight").to_vector(), init.to_vector());
  EXPECT_EQ(cls.parameter("bert.encoder.layer.1.output.dense.weight").to_vector(),
            mlm.parameter("bert.encoder.layer.1.output.dense.weight").to_vector());
  // A missing encoder tensor is an error naming it.
  tensors.erase(tensors.begin() + 6);
  fs::remove_all(dir.str());
  fs::create_directories(dir.str());
  io::save_sharded_safetensors(dir.str(), tensors, 1 << 30);
  const std::string msg = message_of([&] { load_weights(cls, dir.str()); });
  EXPECT_NE(msg.find("bert.encoder.layer.0.attention.self.query.bias"), std::string::npos) << msg;
}

TEST(Bert, RegistryBuildsTheTaskAndRefusesOthers) {
  const std::string cfg = tiny().to_json("BertForMaskedLM");
  EXPECT_EQ(default_task("bert"), Task::kMaskedLM);
  EXPECT_EQ(default_task("llama"), Task::kCausalLM);
  auto m = create_model(cfg, "c.json", 1, "gpt2", Task::kSequenceClassification);
  EXPECT_EQ(m->architecture(), "BertForSequenceClassification");
  std::string msg = message_of([&] { create_model(cfg, "c.json", 1, "gpt2", Task::kCausalLM); });
  EXPECT_NE(msg.find("causal_lm"), std::string::npos) << msg;
  msg = message_of([&] { create_causal_lm(cfg, "c.json"); });
  EXPECT_NE(msg.find("not a causal language model"), std::string::npos) << msg;
  msg = message_of([&] {
    create_model(R"({"model_type": "gpt2", "n_layer": 1})", "g.json", 1, "gpt2", Task::kMaskedLM);
  });
  EXPECT_NE(msg.find("masked_lm"), std::string::npos) << msg;
}

// Classification loss: cross-entropy over class ids, mean squared error with one label; the
// wrong label dtype is refused.
TEST(Bert, ClassificationLossIsCrossEntropyOrMse) {
  Bert cls(tiny(), Task::kSequenceClassification, 2);
  cls.eval();
  const ModelInputs in(ops::from_ints({2, 7, 9, 4}, {2, 2}));
  Tensor logits = cls.forward(in);
  const std::vector<float> l = logits.to_vector();
  auto lse = [](float a, float b) {
    return std::max(a, b) + std::log1p(std::exp(-std::fabs(a - b)));
  };
  const double want = ((lse(l[0], l[1]) - l[1]) + (lse(l[2], l[3]) - l[2])) / 2;
  EXPECT_NEAR(cls.loss(in, ops::from_ints({1, 0}, {2})).item(), want, 1e-5);
  EXPECT_THROW(cls.loss(in, ops::from_vector({1.0f, 0.0f}, {2})), Error);

  BertConfig rc = tiny();
  rc.labels = LabelConfig::from_json(nlohmann::json{{"num_labels", 1}}, "r");
  Bert reg(rc, Task::kSequenceClassification, 2);
  reg.eval();
  const std::vector<float> y = reg.forward(in).to_vector();
  const double mse = ((y[0] - 0.5) * (y[0] - 0.5) + (y[1] + 1.0) * (y[1] + 1.0)) / 2;
  EXPECT_NEAR(reg.loss(in, ops::from_vector({0.5f, -1.0f}, {2})).item(), mse, 1e-5);
}

}  // namespace
}  // namespace hfrun::nn
