// The trainer end to end on a tiny GPT-2: metrics.jsonl, falling loss, determinism, the HF
// export, and training on prepared shards seeing exactly the losses of training on the text.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "data/data_test_util.h"
#include "data/prepare.h"
#include "io/checkpoint.h"
#include "models/gpt2/gpt2.h"
#include "train/trainer.h"

namespace hfrun::train {
namespace {

using testing::TempDir;

std::string corpus() {
  std::string text;
  for (int i = 0; i < 60; ++i) {
    text += "the boat " + std::to_string(i % 7) + " carries apples to the market. ";
  }
  return text;
}

TrainConfig tiny_config(const TempDir& d, const std::string& run,
                        const std::vector<std::string>& train) {
  const std::string tok = d.write("tokenizer.json", testing::byte_tokenizer_json());
  std::ostringstream y;
  y << "output_dir: " << d.file(run) << "\nseed: 3\ntokenizer: " << tok << "\n"
    << "model: {config: {n_layer: 1, n_head: 2, n_embd: 32, n_positions: 32}}\n"
    << "data: {train: [";
  for (size_t i = 0; i < train.size(); ++i) y << (i ? ", " : "") << train[i];
  y << "], seq_len: 16, shuffle: false}\n"
    << "train: {micro_batch_size: 4, grad_accum_steps: 2, max_steps: 12, log_every: 1}\n"
    << "optimizer: {type: adamw, lr: 3.0e-3}\nscheduler: {type: linear, warmup_steps: 2}\n";
  return TrainConfig::parse(y.str(), d.file(run + ".yaml"));
}

std::vector<double> losses(const std::string& metrics_path) {
  std::ifstream in(metrics_path);
  std::vector<double> out;
  std::string line;
  while (std::getline(in, line)) {
    auto at = line.find("\"loss\": ");
    if (at != std::string::npos) out.push_back(std::stod(line.substr(at + 8)));
  }
  return out;
}

TEST(Trainer, TrainsLogsAndExportsHfLayout) {
  TempDir d;
  const std::string text = d.write("corpus.txt", corpus());
  TrainConfig cfg = tiny_config(d, "run", {text});
  Trainer trainer(cfg);
  RunSummary s = trainer.run();
  EXPECT_EQ(s.steps, 12);
  EXPECT_LT(s.last_loss, s.first_loss - 0.5);
  const auto l = losses(d.file("run/metrics.jsonl"));
  ASSERT_EQ(l.size(), 12u);  // log_every 1: one line per step, "step" from 1
  std::ifstream m(d.file("run/metrics.jsonl"));
  std::string first;
  std::getline(m, first);
  for (const char* key :
       {"\"step\": 1,", "\"lr\"", "\"grad_norm\"", "\"tokens_per_s\"", "\"elapsed_s\""}) {
    EXPECT_NE(first.find(key), std::string::npos) << first;
  }
  EXPECT_TRUE(std::filesystem::exists(d.file("run/config.resolved.yaml")));
  // final/: an HF directory our loader (and transformers) reads.
  const std::string final_dir = d.file("run/final");
  nn::Gpt2Config back = nn::Gpt2Config::from_file(final_dir + "/config.json");
  EXPECT_EQ(back.n_embd, 32);
  EXPECT_EQ(back.vocab_size, 257);  // the tokenizer's vocabulary
  io::SafetensorsCheckpoint ck = io::SafetensorsCheckpoint::open(final_dir);
  EXPECT_TRUE(ck.contains("transformer.wte.weight"));
  EXPECT_TRUE(ck.contains("transformer.h.0.attn.c_attn.weight"));
  EXPECT_FALSE(ck.contains("lm_head.weight"));  // tied
  EXPECT_TRUE(std::filesystem::exists(final_dir + "/tokenizer.json"));
}

TEST(Trainer, SameConfigSameLossesAndShardsEqualText) {
  TempDir d;
  const std::string text = d.write("corpus.txt", corpus());
  Trainer(tiny_config(d, "a", {text})).run();
  Trainer(tiny_config(d, "b", {text})).run();
  EXPECT_EQ(losses(d.file("a/metrics.jsonl")), losses(d.file("b/metrics.jsonl")));
  // Prepared shards are the same token stream, so the run is the same run.
  data::PrepareOptions po;
  po.output_dir = d.file("shards");
  po.shard_tokens = 300;
  auto tok = data::Tokenizer::from_file(d.file("tokenizer.json"));
  data::prepare_shards({text}, tok, po);
  Trainer(tiny_config(d, "c", {d.file("shards")})).run();
  EXPECT_EQ(losses(d.file("a/metrics.jsonl")), losses(d.file("c/metrics.jsonl")));
}

TEST(Trainer, FineTunesFromItsOwnExport) {
  TempDir d;
  const std::string text = d.write("corpus.txt", corpus());
  Trainer(tiny_config(d, "base", {text})).run();
  TrainConfig ft = tiny_config(d, "ft", {text});
  ft.model.from_pretrained = d.file("base/final");
  ft.model.config_json = "{}";
  Trainer trainer(ft);
  RunSummary s = trainer.run();
  const auto base = losses(d.file("base/metrics.jsonl"));
  EXPECT_LT(s.first_loss, base.front() - 0.5);  // starts where the base run got to
}

TEST(Trainer, Bf16MixedPrecisionFollowsTheF32LossCurve) {
  TempDir d;
  const std::string text = d.write("corpus.txt", corpus());
  Trainer(tiny_config(d, "f32", {text})).run();
  TrainConfig bf = tiny_config(d, "bf16", {text});
  bf.train.mixed_precision = "bf16";
  Trainer(bf).run();
  const auto a = losses(d.file("f32/metrics.jsonl")), b = losses(d.file("bf16/metrics.jsonl"));
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 0.02 * a[i]) << "step " << i + 1;
  EXPECT_NE(a, b);  // the GEMMs really ran in bf16
  // Master weights and the export stay f32.
  io::SafetensorsCheckpoint ck = io::SafetensorsCheckpoint::open(d.file("bf16/final"));
  EXPECT_EQ(ck.tensor("transformer.wte.weight").dtype(), DType::kF32);
}

// Without a CUDA device (this build may have the backend, the machine no GPU), train.device
// cuda is an input error naming the key and why; auto falls back to the CPU.
TEST(Trainer, CudaDeviceWithoutAGpuIsAnInputError) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present: " << cuda_status();
  TempDir d;
  const std::string text = d.write("corpus.txt", corpus());
  TrainConfig cfg = tiny_config(d, "dev", {text});
  cfg.train.device = "cuda";
  try {
    Trainer t(cfg);
    FAIL() << "train.device cuda accepted without a device";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << e.message();
    EXPECT_NE(e.message().find("train.device cuda"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("no CUDA device"), std::string::npos) << e.message();
  }
  cfg.train.device = "auto";
  EXPECT_TRUE(Trainer(cfg).device().is_cpu());
}

TEST(Trainer, BadInputsAreClearErrors) {
  TempDir d;
  const std::string text = d.write("corpus.txt", corpus());
  TrainConfig cfg = tiny_config(d, "x", {text});
  cfg.data.seq_len = 64;  // > n_positions 32
  EXPECT_THROW({ Trainer t(cfg); }, Error);
  cfg = tiny_config(d, "y", {d.file("missing.txt")});
  try {
    Trainer t(cfg);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(e.message().find("missing.txt"), std::string::npos) << e.message();
  }
  cfg = tiny_config(d, "z", {text});
  cfg.model.from_pretrained = d.file("nope");
  EXPECT_THROW({ Trainer t(cfg); }, Error);
}

}  // namespace
}  // namespace hfrun::train
