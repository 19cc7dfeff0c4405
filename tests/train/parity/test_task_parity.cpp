// Fine-tuning tasks through the whole Trainer against PyTorch, with ids from HF's tokenizers
// (tests/train/reference/): BERT sequence classification on sentence pairs (per-step loss and
// grad norm, validation loss, accuracy and F1, final weights in final/model.safetensors) and
// Llama SFT with prompt masking (the step loss over the global batch's counted targets, a
// record whose prompt fills the whole window, validation loss, final weights).
// HFRUN_TASK_REFERENCE names the fixture's directory.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/checkpoint.h"
#include "train/trainer.h"

namespace hfrun::train {
namespace {

namespace fs = std::filesystem;

double rel_err(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

std::string reference_dir() {
  const char* dir = std::getenv("HFRUN_TASK_REFERENCE");
  return dir == nullptr ? "" : dir;
}

fs::path work_dir(const std::string& name) {
  const fs::path w =
      fs::temp_directory_path() / ("hfrun_task_parity_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(w);
  fs::create_directories(w);
  return w;
}

// The per-step loss and grad norm against the reference's train_steps.
void expect_steps(const std::vector<StepMetrics>& steps, const nlohmann::json& want) {
  ASSERT_EQ(steps.size(), want.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    const double l = want[i]["loss"].get<double>(), g = want[i]["grad_norm"].get<double>();
    EXPECT_NEAR(steps[i].loss, l, 1e-4 * l) << "step " << i + 1;
    EXPECT_NEAR(steps[i].grad_norm, g, 1e-4 * g) << "step " << i + 1;
  }
}

// final/model.safetensors against the reference's final_params (but for the key projection's
// bias, whose gradient softmax cancels: Adam moves it by rounding noise).
void expect_final_weights(const fs::path& final_dir, const nlohmann::json& want) {
  io::SafetensorsCheckpoint ckpt = io::SafetensorsCheckpoint::open(final_dir.string());
  for (const auto& [name, values] : want.items()) {
    ASSERT_TRUE(ckpt.contains(name)) << name;
    if (name.find("attention.self.key.bias") != std::string::npos) continue;
    EXPECT_LT(rel_err(ckpt.tensor(name).to_vector(), values.get<std::vector<double>>()), 1e-3)
        << name;
  }
}

TEST(TaskParity, BertSentencePairClassificationMatchesPyTorch) {
  const std::string ref_dir = reference_dir() + "/bert_cls";
  std::ifstream in(ref_dir + "/expected.json");
  ASSERT_TRUE(in.good()) << "HFRUN_TASK_REFERENCE: no " << ref_dir << "/expected.json";
  const nlohmann::json ref = nlohmann::json::parse(in);
  const fs::path work = work_dir("bert_cls");
  std::ostringstream y;
  y << "output_dir: " << (work / "run").string() << "\n"
    << "task: sequence_classification\n"
    << "model: {from_pretrained: " << ref_dir << "/model}\n"
    << "tokenizer: " << ref_dir << "/tokenizer.json\n"
    << "data: {train: [" << ref_dir << "/train.jsonl], val: [" << ref_dir << "/val.jsonl], "
    << "seq_len: " << ref["seq_len"] << ", shuffle: false, text_field: sentence1, "
    << "text_pair_field: sentence2, label_field: label}\n"
    << "train: {micro_batch_size: " << ref["micro_batch"] << ", grad_accum_steps: " << ref["accum"]
    << ", max_steps: " << ref["steps"] << ", grad_clip: " << ref["clip"]
    << ", log_every: 1, eval_every: " << ref["steps"] << "}\n"
    << "optimizer: {type: adamw, lr: " << ref["lr"] << ", betas: [0.9, 0.999], eps: 1.0e-8, "
    << "weight_decay: " << ref["weight_decay"] << "}\n"
    << "checkpoint: {resume: never}\n";
  Trainer trainer(TrainConfig::parse(y.str(), "bert_cls.yaml"));
  std::vector<StepMetrics> steps, evals;
  trainer.run([&](const StepMetrics& m) { (m.val_loss < 0 ? steps : evals).push_back(m); });

  expect_steps(steps, ref["train_steps"]);
  ASSERT_EQ(evals.size(), 1u);
  const nlohmann::json& e = ref["eval"];
  EXPECT_NEAR(evals[0].val_loss, e["val_loss"].get<double>(), 1e-4 * e["val_loss"].get<double>());
  EXPECT_DOUBLE_EQ(evals[0].val_accuracy, e["val_accuracy"].get<double>());
  EXPECT_DOUBLE_EQ(evals[0].val_f1, e["val_f1"].get<double>());

  // final/ is a BertForSequenceClassification directory with the trained weights.
  const fs::path final_dir = work / "run" / "final";
  std::ifstream cfg(final_dir / "config.json");
  const nlohmann::json config = nlohmann::json::parse(cfg);
  EXPECT_EQ(config["architectures"][0], "BertForSequenceClassification");
  EXPECT_EQ(config["id2label"]["1"], "equivalent");
  expect_final_weights(final_dir, ref["final_params"]);
  fs::remove_all(work);
}

TEST(TaskParity, LlamaSftWithPromptMaskingMatchesPyTorch) {
  const std::string ref_dir = reference_dir() + "/sft";
  std::ifstream in(ref_dir + "/expected.json");
  ASSERT_TRUE(in.good()) << "HFRUN_TASK_REFERENCE: no " << ref_dir << "/expected.json";
  const nlohmann::json ref = nlohmann::json::parse(in);
  const fs::path work = work_dir("sft");
  std::ostringstream y;
  y << "output_dir: " << (work / "run").string() << "\n"
    << "task: sft\n"
    << "model: {from_pretrained: " << ref_dir << "/model}\n"
    << "tokenizer: " << ref_dir << "/tokenizer.json\n"
    << "data: {train: [" << ref_dir << "/train.jsonl], val: [" << ref_dir << "/val.jsonl], "
    << "seq_len: " << ref["seq_len"] << ", shuffle: false}\n"
    << "train: {micro_batch_size: " << ref["micro_batch"] << ", grad_accum_steps: " << ref["accum"]
    << ", max_steps: " << ref["steps"] << ", grad_clip: " << ref["clip"]
    << ", log_every: 1, eval_every: " << ref["steps"] << "}\n"
    << "optimizer: {type: adamw, lr: " << ref["lr"] << ", betas: [0.9, 0.95], eps: 1.0e-8, "
    << "weight_decay: " << ref["weight_decay"] << "}\n"
    << "checkpoint: {resume: never}\n";
  Trainer trainer(TrainConfig::parse(y.str(), "sft.yaml"));
  std::vector<StepMetrics> steps, evals;
  trainer.run([&](const StepMetrics& m) { (m.val_loss < 0 ? steps : evals).push_back(m); });
  expect_steps(steps, ref["train_steps"]);
  ASSERT_EQ(evals.size(), 1u);
  const double v = ref["eval"]["val_loss"].get<double>();
  EXPECT_NEAR(evals[0].val_loss, v, 1e-4 * v);
  EXPECT_LT(evals[0].val_accuracy, 0) << "no accuracy for a token task";
  expect_final_weights(work / "run" / "final", ref["final_params"]);
  fs::remove_all(work);
}

}  // namespace
}  // namespace hfrun::train
