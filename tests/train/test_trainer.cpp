// The trainer end to end on a tiny GPT-2: metrics.jsonl, falling loss, determinism, the HF
// export, and training on prepared shards seeing exactly the losses of training on the text.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "data/data_test_util.h"
#include "data/prepare.h"
#include "io/checkpoint.h"
#include "models/gpt2/gpt2.h"
#include "tensor/profiler.h"
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

// fp16 on the CPU (f16 operands, f32 accumulation, as on a GPU): loss scaling is on by default.
// From a scale far too large for f16 (2^24: the first backward's f16 activations' gradients
// overflow), the scale backs off once per overflowing step, as torch's GradScaler does, and
// training then follows the f32 curve. The skipped steps count (the data moves on) and the
// learning-rate schedule waits for them.
TEST(Trainer, Fp16BacksTheLossScaleOffUntilTheGradientsFitThenFollowsF32) {
  TempDir d;
  const std::string text = d.write("corpus.txt", corpus());
  TrainConfig fp = tiny_config(d, "fp16", {text});
  fp.train.mixed_precision = "fp16";
  fp.train.grad_scaler.init_scale = 16777216.0;  // 2^24
  fp.train.max_steps = 16;
  std::vector<StepMetrics> steps;
  RunSummary s = Trainer(fp).run([&](const StepMetrics& m) {
    if (m.val_loss < 0) steps.push_back(m);
  });
  ASSERT_EQ(steps.size(), 16u);
  // Overflow first (2^24 cannot fit f16), back off by half per overflowing step, never grow
  // (growth_interval 2000); the schedule's warmup starts only with the first update.
  ASSERT_TRUE(steps[0].update_skipped) << "2^24 must overflow f16";
  int64_t overflows = 0, updates = 0;
  double scale = 16777216.0;
  for (size_t i = 0; i < steps.size(); ++i) {
    EXPECT_FALSE(steps[i].skipped) << "step " << i + 1;  // loss scaling's, not the guard's
    EXPECT_EQ(steps[i].loss_scale, scale) << "step " << i + 1;
    EXPECT_EQ(steps[i].lr == 0.0, updates == 0) << "step " << i + 1;
    if (steps[i].update_skipped) {
      EXPECT_FALSE(std::isfinite(steps[i].grad_norm)) << "step " << i + 1;
      scale /= 2;
      ++overflows;
    } else {
      ++updates;
    }
  }
  EXPECT_LE(overflows, 10);
  EXPECT_GE(updates, 6);
  EXPECT_EQ(s.overflow_steps, overflows);
  EXPECT_EQ(s.steps, 16);
  EXPECT_LT(s.last_loss, s.first_loss - 0.5);
  // The metrics say it: the scale on every row, and which steps made no update.
  std::ifstream m(d.file("fp16/metrics.jsonl"));
  std::string first;
  std::getline(m, first);
  EXPECT_NE(first.find("\"loss_scale\": 16777216"), std::string::npos) << first;
  EXPECT_NE(first.find("\"update_skipped\": true"), std::string::npos) << first;
  // Against f32 over the same data: the same first loss to f16 rounding.
  TrainConfig f32 = tiny_config(d, "f32", {text});
  f32.train.max_steps = 16;
  Trainer(f32).run();
  const auto a = losses(d.file("f32/metrics.jsonl"));
  EXPECT_NEAR(steps[0].loss, a[0], 0.01 * a[0]);
  EXPECT_NE(steps[0].loss, a[0]);  // the GEMMs really ran in f16
  io::SafetensorsCheckpoint ck = io::SafetensorsCheckpoint::open(d.file("fp16/final"));
  EXPECT_EQ(ck.tensor("transformer.wte.weight").dtype(), DType::kF32);
}

// The bytes of every safetensors file in dir, by file name.
std::map<std::string, std::string> safetensors_bytes(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::ostringstream b;
    b << in.rdbuf();
    out[e.path().filename().string()] = b.str();
  }
  return out;
}

// Mixed precision's weight copies carried from step to step (the optimizer writing the updated
// weights' copies in its pass, frozen weights' kept) change no bit of training: the same
// losses, gradient norms and final weights as casting every weight at every step
// (HFRUN_WEIGHT_COPIES=0). Through updates, both kinds of skipped step (the non-finite guard's
// and the loss scaler's), gradient accumulation or none, GPT-2's tied head (a transposed view
// of the embedding), a Llama (transposed [out, in] weights) and LoRA (a frozen base). With the
// copies carried, no weight is cast after the first step.
TEST(Trainer, CarriedWeightCopiesChangeNoBit) {
  TempDir d;
  const std::string text = d.write("corpus.txt", corpus());
  d.write("tokenizer.json", testing::byte_tokenizer_json());
  struct Case {
    std::string name, mixed_precision, model, peft, fault;
    int64_t accum;
    int64_t weights;  // the weights linear casts in one forward
  };
  const std::string llama =
      "model: {arch: llama, config: {hidden_size: 32, intermediate_size: 48, "
      "num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, "
      "max_position_embeddings: 32}}\n";
  const std::vector<Case> cases = {
      // 2 x 4 linear weights and the tied head.
      {"gpt2_bf16", "bf16", "", "", "0:3:1", 1, 9},
      {"gpt2_bf16_accum", "bf16", "", "", "", 2, 9},
      {"gpt2_fp16", "fp16", "", "", "0:3:1:grad", 1, 9},  // the scaler skips step 3
      // 2 x 7 and the head; with LoRA, 2 x 3 x 2 adapter factors more.
      {"llama_bf16", "bf16", llama, "", "", 1, 15},
      {"llama_lora", "bf16", llama,
       "peft: {type: lora, r: 4, alpha: 8, target_modules: [q_proj, v_proj, down_proj]}\n", "", 2,
       27},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto run = [&](const std::string& dir, bool carry, int64_t* casts) {
      const std::string y =
          "output_dir: " + d.file(dir) + "\nseed: 3\ntokenizer: " + d.file("tokenizer.json") +
          "\n" +
          (c.model.empty()
               ? "model: {config: {n_layer: 2, n_head: 2, n_embd: 32, n_positions: 32}}\n"
               : c.model) +
          "data: {train: [" + text + "], seq_len: 16, shuffle: false}\n" +
          "train: {micro_batch_size: 4, grad_accum_steps: " + std::to_string(c.accum) +
          ", max_steps: 6, log_every: 1, grad_clip: 1.0, mixed_precision: " + c.mixed_precision +
          ", grad_scaler: {init_scale: 131072}}\n" + "optimizer: {type: adamw, lr: 3.0e-3}\n" +
          c.peft;
      TrainConfig cfg = TrainConfig::parse(y, d.file(dir + ".yaml"));
      if (carry) {
        ::unsetenv("HFRUN_WEIGHT_COPIES");
      } else {
        ::setenv("HFRUN_WEIGHT_COPIES", "0", 1);
      }
      if (!c.fault.empty()) ::setenv("HFRUN_FAULT_NONFINITE", c.fault.c_str(), 1);
      std::vector<StepMetrics> steps;
      Trainer trainer(cfg);
      profiler::reset();
      profiler::set_enabled(true);
      trainer.run([&](const StepMetrics& m) {
        if (m.val_loss < 0) steps.push_back(m);
      });
      profiler::set_enabled(false);
      *casts = profiler::snapshot()["op:copy cast"].calls;
      ::unsetenv("HFRUN_WEIGHT_COPIES");
      ::unsetenv("HFRUN_FAULT_NONFINITE");
      return steps;
    };
    int64_t carried_casts = 0, plain_casts = 0;
    const auto carried = run(c.name + "_carried", true, &carried_casts);
    const auto plain = run(c.name + "_plain", false, &plain_casts);
    ASSERT_EQ(carried.size(), 6u);
    ASSERT_EQ(plain.size(), 6u);
    int64_t updates = 0;
    for (size_t i = 0; i < plain.size(); ++i) {
      EXPECT_EQ(carried[i].loss, plain[i].loss) << "step " << i + 1;
      EXPECT_EQ(carried[i].skipped, plain[i].skipped) << "step " << i + 1;
      EXPECT_EQ(carried[i].update_skipped, plain[i].update_skipped) << "step " << i + 1;
      if (std::isfinite(plain[i].grad_norm)) {
        EXPECT_EQ(carried[i].grad_norm, plain[i].grad_norm) << "step " << i + 1;
      }
      updates += plain[i].skipped || plain[i].update_skipped ? 0 : 1;
    }
    EXPECT_GE(updates, 2) << "too few updates to see a stale copy";
    if (c.mixed_precision == "fp16") {
      EXPECT_TRUE(plain[2].update_skipped);
    }
    EXPECT_EQ(safetensors_bytes(d.file(c.name + "_carried/final")),
              safetensors_bytes(d.file(c.name + "_plain/final")));
    // Each window's forward (a step the guard skipped included) casts every weight in the plain
    // run; in the carried one only the first does.
    const int64_t windows = 6 + (c.fault.empty() || c.mixed_precision == "fp16" ? 0 : 1);
    EXPECT_EQ(plain_casts - carried_casts, c.weights * (windows - 1));
  }
}

// The scale and its clean-step count are part of a checkpoint: a run killed and resumed
// between overflows makes exactly the steps of the uninterrupted run.
TEST(Trainer, LossScaleResumesExactlyFromACheckpoint) {
  TempDir d;
  const std::string text = d.write("corpus.txt", corpus());
  auto config = [&](const std::string& run) {
    TrainConfig c = tiny_config(d, run, {text});
    c.train.mixed_precision = "fp16";
    c.train.grad_scaler.init_scale = 1024;
    c.train.grad_scaler.growth_interval = 3;
    c.checkpoint.every = 4;
    c.scheduler.type = "constant";  // with warmup; independent of max_steps
    return c;
  };
  // Overflows at attempts 2 and 7 (and, for the resumed run, counted from its restart).
  ::setenv("HFRUN_FAULT_NONFINITE", "0:2:1:grad,0:7:1:grad", 1);
  std::vector<StepMetrics> whole;
  Trainer(config("whole")).run([&](const StepMetrics& m) {
    if (m.val_loss < 0) whole.push_back(m);
  });
  TrainConfig part = config("part");
  part.train.max_steps = 4;
  Trainer(part).run();
  ::setenv("HFRUN_FAULT_NONFINITE", "0:3:1:grad", 1);  // attempt 7 of the whole run
  std::vector<StepMetrics> resumed;
  Trainer(config("part")).run([&](const StepMetrics& m) {
    if (m.val_loss < 0) resumed.push_back(m);
  });
  ::unsetenv("HFRUN_FAULT_NONFINITE");
  ASSERT_EQ(whole.size(), 12u);
  ASSERT_EQ(resumed.size(), 8u);
  EXPECT_TRUE(whole[1].update_skipped);
  EXPECT_TRUE(whole[6].update_skipped);
  for (size_t i = 0; i < resumed.size(); ++i) {
    const StepMetrics& w = whole[i + 4];
    EXPECT_EQ(resumed[i].loss, w.loss) << "step " << w.step;
    EXPECT_EQ(resumed[i].loss_scale, w.loss_scale) << "step " << w.step;
    EXPECT_EQ(resumed[i].update_skipped, w.update_skipped) << "step " << w.step;
    EXPECT_EQ(resumed[i].lr, w.lr) << "step " << w.step;
  }
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
