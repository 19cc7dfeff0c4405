// train.yaml parsing: defaults, types, unknown keys with their line, --set overrides.
#include <gtest/gtest.h>

#include "common/error.h"
#include "train/config.h"

namespace hfrun::train {
namespace {

const char* kMinimal = R"(output_dir: runs/x
tokenizer: tok.json
data:
  train: a.txt
)";

void expect_error(const std::string& yaml, const std::vector<std::string>& parts,
                  const std::vector<std::string>& overrides = {}) {
  try {
    TrainConfig::parse(yaml, "cfg.yaml", overrides);
    ADD_FAILURE() << "accepted:\n" << yaml;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << e.message();
    for (const auto& p : parts) EXPECT_NE(e.message().find(p), std::string::npos) << e.message();
  }
}

// Found by fuzz/fuzz_train_yaml: yaml-cpp exceptions escaped as exit 1 without the file.
TEST(TrainConfig, FuzzFindingsAreInvalidInput) {
  expect_error("output_dirpatternsteps=3\n", {"cfg.yaml:1", "expected a mapping of keys"},
               {"peft.type=lora"});
  expect_error("- a\n- b\n", {"cfg.yaml:1", "a list"});
  expect_error("? [a, b]\n: 1\n", {"cfg.yaml:1", "expected a plain key name"});
  expect_error(std::string(kMinimal) + "train:\n  {x: 1}: 2\n", {"expected a plain key name"});
}

TEST(TrainConfig, DefaultsFollowTheContract) {
  TrainConfig c = TrainConfig::parse(kMinimal, "cfg.yaml");
  EXPECT_EQ(c.output_dir, "runs/x");
  EXPECT_EQ(c.data.train, std::vector<std::string>{"a.txt"});
  EXPECT_EQ(c.data.seq_len, 128);
  EXPECT_TRUE(c.data.shuffle);
  EXPECT_EQ(c.train.micro_batch_size, 4);
  EXPECT_EQ(c.train.mixed_precision, "no");
  EXPECT_DOUBLE_EQ(c.train.grad_clip, 1.0);
  EXPECT_EQ(c.optimizer.type, "adamw");
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 6e-4);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.95);
  EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 0.1);
  EXPECT_EQ(c.scheduler.type, "constant");
  EXPECT_EQ(c.distributed.num_processes, 1);
  EXPECT_EQ(c.checkpoint.resume, "auto");
  EXPECT_EQ(c.model.config_json, "{}");
  EXPECT_EQ(c.train.device, "cpu");
}

TEST(TrainConfig, DeviceIsAutoCpuOrCuda) {
  for (const char* d : {"auto", "cpu", "cuda"}) {
    TrainConfig c = TrainConfig::parse(kMinimal, "cfg.yaml", {std::string("train.device=") + d});
    EXPECT_EQ(c.train.device, d);
    EXPECT_NE(c.to_yaml().find(std::string("device: ") + d), std::string::npos) << c.to_yaml();
    EXPECT_EQ(TrainConfig::parse(c.to_yaml(), "resolved.yaml").train.device, d);
  }
  expect_error(std::string(kMinimal) + "train:\n  device: tpu\n",
               {"cfg.yaml:6", "train.device", "tpu", "auto | cpu | cuda"});
  expect_error(kMinimal, {"train.device", "gpu"}, {"train.device=gpu"});
}

TEST(TrainConfig, BackendIsAutoMpiOrNcclAndNcclNeedsAGpu) {
  for (const char* b : {"auto", "mpi", "nccl"}) {
    TrainConfig c = TrainConfig::parse(
        kMinimal, "cfg.yaml", {std::string("distributed.backend=") + b, "train.device=cuda"});
    EXPECT_EQ(c.distributed.backend, b);
  }
  expect_error(kMinimal, {"distributed.backend", "gloo"}, {"distributed.backend=gloo"});
  // The CPU trains over MPI: nccl there is a mistake worth naming, with its line.
  expect_error(std::string(kMinimal) + "distributed:\n  backend: nccl\n",
               {"cfg.yaml:6", "distributed.backend", "nccl", "train.device: cuda"});
  TrainConfig ok = TrainConfig::parse(kMinimal, "cfg.yaml", {"distributed.backend=mpi"});
  EXPECT_EQ(ok.train.device, "cpu");
}

TEST(TrainConfig, FullFileAndModelConfigAsJson) {
  TrainConfig c = TrainConfig::parse(R"(output_dir: runs/tiny
seed: 7
model:
  arch: gpt2
  config: {n_layer: 2, n_head: 4, n_embd: 128, activation_function: gelu_new, resid_pdrop: 0.1}
tokenizer: t.json
data: {train: [a.txt, shards/], val: [v.jsonl], seq_len: 64, shuffle: false}
train: {micro_batch_size: 2, grad_accum_steps: 3, max_steps: 9, grad_clip: 0, log_every: 1}
optimizer: {type: sgd, lr: 0.1, momentum: 0.9, betas: [0.8, 0.9]}
scheduler: {type: cosine, warmup_steps: 2}
)",
                                     "cfg.yaml");
  EXPECT_EQ(c.seed, 7u);
  EXPECT_EQ(c.data.train.size(), 2u);
  EXPECT_FALSE(c.data.shuffle);
  EXPECT_EQ(c.train.grad_accum_steps, 3);
  EXPECT_EQ(c.optimizer.type, "sgd");
  EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.8);
  EXPECT_NE(c.model.config_json.find("\"n_layer\": 2"), std::string::npos) << c.model.config_json;
  EXPECT_NE(c.model.config_json.find("\"activation_function\": \"gelu_new\""), std::string::npos);
  // The resolved YAML parses back to the same values.
  TrainConfig back = TrainConfig::parse(c.to_yaml(), "resolved.yaml");
  EXPECT_EQ(back.to_yaml(), c.to_yaml());
}

TEST(TrainConfig, UnknownKeysNameTheKeyAndLine) {
  expect_error(std::string(kMinimal) + "trian:\n  max_steps: 3\n",
               {"cfg.yaml:5", "trian", "unknown key"});
  expect_error(std::string(kMinimal) + "train:\n  max_step: 3\n", {"cfg.yaml:6", "train.max_step"});
  expect_error(std::string(kMinimal) + "model:\n  config: {n_layers: 2}\n",
               {"model.config.n_layers"});
}

TEST(TrainConfig, TypesAndRangesAreChecked) {
  expect_error(std::string(kMinimal) + "train:\n  max_steps: many\n",
               {"cfg.yaml:6", "train.max_steps", "integer", "many"});
  expect_error(std::string(kMinimal) + "optimizer:\n  type: adam\n",
               {"optimizer.type", "adamw | sgd"});
  expect_error(std::string(kMinimal) + "train:\n  mixed_precision: fp8\n", {"mixed_precision"});
  expect_error(std::string(kMinimal) + "optimizer:\n  betas: [0.9]\n", {"optimizer.betas"});
  expect_error("tokenizer: t.json\ndata:\n  train: a.txt\n  seq_len: 0\n",
               {"cfg.yaml:4", "data.seq_len"});
  expect_error(std::string(kMinimal) + "data:\n  seq_len: 3\n", {"cfg.yaml:5", "duplicate key"});
  expect_error(std::string(kMinimal) + "distributed:\n  zero_stage: 4\n", {"zero_stage"});
  expect_error("output_dir: x\ntokenizer: t.json\n", {"data.train"});
  // No tokenizer is not a config error: token shards train without one (the Trainer refuses
  // text without one, naming the file; tests/cli).
  EXPECT_NO_THROW(TrainConfig::parse("output_dir: x\ndata: {train: a.bin}\n", "c.yaml"));
  expect_error("output_dir: [unclosed\n", {"cfg.yaml", "YAML"});
}

TEST(TrainConfig, GradScalerSectionIsCheckedAndResolvedAgainstThePrecision) {
  TrainConfig c = TrainConfig::parse(kMinimal, "cfg.yaml");
  EXPECT_EQ(c.train.grad_scaler.enabled, "auto");
  EXPECT_DOUBLE_EQ(c.train.grad_scaler.init_scale, 65536.0);
  EXPECT_EQ(c.train.grad_scaler.growth_interval, 2000);
  EXPECT_FALSE(c.train.loss_scaling());
  c = TrainConfig::parse(kMinimal, "cfg.yaml",
                         {"train.mixed_precision=fp16", "train.grad_scaler.init_scale=1024"});
  EXPECT_TRUE(c.train.loss_scaling());
  EXPECT_DOUBLE_EQ(c.train.grad_scaler.init_scale, 1024.0);
  // It survives the resolved config (config.resolved.yaml, the ranks' agreement check).
  const TrainConfig again = TrainConfig::parse(c.to_yaml(), "resolved.yaml");
  EXPECT_DOUBLE_EQ(again.train.grad_scaler.init_scale, 1024.0);
  EXPECT_TRUE(again.train.loss_scaling());
  EXPECT_FALSE(TrainConfig::parse(kMinimal, "cfg.yaml",
                                  {"train.mixed_precision=fp16", "train.grad_scaler.enabled=false"})
                   .train.loss_scaling());
  EXPECT_TRUE(TrainConfig::parse(kMinimal, "cfg.yaml", {"train.grad_scaler.enabled=true"})
                  .train.loss_scaling());
  const std::string train = std::string(kMinimal) + "train:\n  grad_scaler:\n";
  expect_error(train + "    init_scale: -2\n", {"cfg.yaml:7", "train.grad_scaler.init_scale"});
  expect_error(train + "    init_scale: 1.0e39\n", {"train.grad_scaler.init_scale", "f32"});
  expect_error(train + "    growth_factor: 1\n", {"train.grad_scaler.growth_factor", "> 1"});
  expect_error(train + "    backoff_factor: 1.5\n", {"train.grad_scaler.backoff_factor"});
  expect_error(train + "    growth_interval: 0\n", {"train.grad_scaler.growth_interval"});
  expect_error(train + "    enabled: maybe\n", {"train.grad_scaler.enabled", "auto | true"});
  expect_error(train + "    init_scal: 2\n", {"cfg.yaml:7", "train.grad_scaler.init_scal"});
  expect_error(std::string(kMinimal) + "train:\n  grad_scaler: 5\n",
               {"train.grad_scaler", "mapping"});
}

TEST(TrainConfig, SetOverridesApplyBeforeValidation) {
  TrainConfig c = TrainConfig::parse(kMinimal, "cfg.yaml",
                                     {"train.max_steps=5", "optimizer.lr=0.01", "data.val=[v.txt]",
                                      "model.config.n_layer=3", "seed=9"});
  EXPECT_EQ(c.train.max_steps, 5);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 0.01);
  EXPECT_EQ(c.data.val, std::vector<std::string>{"v.txt"});
  EXPECT_EQ(c.seed, 9u);
  EXPECT_NE(c.model.config_json.find("\"n_layer\": 3"), std::string::npos);
  expect_error(kMinimal, {"--set", "train.max_stepz"}, {"train.max_stepz=5"});
  expect_error(kMinimal, {"key.path=value"}, {"no_equals_sign"});
  // A bad value from --set is reported as that --set, never at a line of cfg.yaml.
  for (const auto& [spec, where] : std::vector<std::pair<std::string, std::string>>{
           {"train.max_steps=abc", "--set train.max_steps=abc: train.max_steps"},
           {"train={max_steps: abc}", "--set train={max_steps: abc}: train.max_steps"},
           {"optimizer.type=adamx", "--set optimizer.type=adamx: optimizer.type"}}) {
    try {
      TrainConfig::parse(kMinimal, "cfg.yaml", {spec});
      ADD_FAILURE() << "accepted --set " << spec;
    } catch (const Error& e) {
      EXPECT_EQ(e.message().rfind(where, 0), 0u) << e.message();
      EXPECT_EQ(e.message().find("cfg.yaml"), std::string::npos) << e.message();
    }
  }
  // The file's own keys keep their lines.
  expect_error("output_dir: runs/x\ndata:\n  train: a.txt\ntrain: {max_steps: abc}\n",
               {"cfg.yaml:4: train.max_steps"}, {"optimizer.lr=0.01"});
}

TEST(TrainConfig, TokenizerDefaultsToThePretrainedDirectory) {
  TrainConfig c =
      TrainConfig::parse("model: {from_pretrained: hf/gpt2}\ndata: {train: a.txt}\n", "c.yaml");
  EXPECT_EQ(c.tokenizer, "hf/gpt2/tokenizer.json");
}

}  // namespace
}  // namespace hfrun::train
