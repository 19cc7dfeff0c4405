// GPT-2 training on one GPU against the same run on the CPU: a tiny model (2 layers, n_embd 32)
// trained from the same seed logs the same losses (f32: the GEMMs run in f32 without TF32, so
// only summation order differs), evaluates on the device, writes checkpoints and an HF export
// from device tensors, and a checkpoint written on the GPU resumes on the CPU with the loss the
// uninterrupted run logs. Skips with "no CUDA device: ..." on a machine without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "data/data_test_util.h"
#include "io/checkpoint.h"
#include "tensor/cuda/cuda_test_util.h"
#include "train/trainer.h"

namespace hfrun::train {
namespace {

using hfrun::testing::TempDir;

std::string corpus() {
  std::string text;
  for (int i = 0; i < 80; ++i) {
    text += "the boat " + std::to_string(i % 7) + " carries apples to the market. ";
  }
  return text;
}

TrainConfig tiny_config(const TempDir& d, const std::string& run, const std::string& device,
                        const std::string& optimizer = "adamw") {
  const std::string tok = d.write("tokenizer.json", testing::byte_tokenizer_json());
  const std::string text = d.write("corpus.txt", corpus());
  std::ostringstream y;
  y << "output_dir: " << d.file(run) << "\nseed: 5\ntokenizer: " << tok << "\n"
    << "model: {config: {n_layer: 2, n_head: 2, n_embd: 32, n_positions: 32}}\n"
    << "data: {train: [" << text << "], val: [" << text << "], seq_len: 16, shuffle: false}\n"
    << "train: {micro_batch_size: 4, grad_accum_steps: 2, max_steps: 5, log_every: 1, "
    << "eval_every: 5, grad_clip: 1.0, device: " << device << "}\n"
    << "optimizer: {type: " << optimizer << ", lr: 3.0e-3, momentum: 0.9}\n"
    << "scheduler: {type: linear, warmup_steps: 2}\n"
    << "checkpoint: {every: 3, resume: never}\n";
  return TrainConfig::parse(y.str(), d.file(run + ".yaml"));
}

struct Logged {
  std::vector<double> loss, grad_norm, val_loss;
};

Logged run_and_log(const TrainConfig& cfg) {
  Trainer trainer(cfg);
  Logged out;
  trainer.run([&](const StepMetrics& m) {
    if (m.val_loss >= 0) {
      out.val_loss.push_back(m.val_loss);
    } else {
      out.loss.push_back(m.loss);
      out.grad_norm.push_back(m.grad_norm);
    }
  });
  return out;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double rel,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    std::printf("%s[%zu]: cpu %.8f cuda %.8f rel %.2e\n", what.c_str(), i, want[i], got[i],
                std::fabs(got[i] - want[i]) / std::max(std::fabs(want[i]), 1e-12));
    EXPECT_NEAR(got[i], want[i], rel * std::fabs(want[i])) << what << " at step " << i + 1;
  }
}

TEST(CudaTrainer, SameLossesAsCpuInF32) {
  HF_REQUIRE_CUDA();
  TempDir d;
  const Logged cpu = run_and_log(tiny_config(d, "cpu", "cpu"));
  {
    Trainer t(tiny_config(d, "probe", "cuda"));
    EXPECT_TRUE(t.device().is_cuda()) << t.device().str();
  }
  const Logged gpu = run_and_log(tiny_config(d, "cuda", "cuda"));
  expect_close(gpu.loss, cpu.loss, 1e-4, "loss");
  expect_close(gpu.grad_norm, cpu.grad_norm, 1e-3, "grad_norm");
  expect_close(gpu.val_loss, cpu.val_loss, 1e-4, "val_loss");
  EXPECT_LT(cpu.loss.back(), cpu.loss.front()) << "the tiny model should learn";
  // The export from device tensors: an HF directory with f32 host data.
  io::SafetensorsCheckpoint ck = io::SafetensorsCheckpoint::open(d.file("cuda/final"));
  EXPECT_EQ(ck.tensor("transformer.wte.weight").dtype(), DType::kF32);
  EXPECT_TRUE(std::filesystem::exists(d.file("cuda/checkpoints/step-00000003")));
}

TEST(CudaTrainer, SgdSameLossesAsCpu) {
  HF_REQUIRE_CUDA();
  TempDir d;
  const Logged cpu = run_and_log(tiny_config(d, "cpu", "cpu", "sgd"));
  const Logged gpu = run_and_log(tiny_config(d, "cuda", "cuda", "sgd"));
  expect_close(gpu.loss, cpu.loss, 1e-4, "sgd loss");
}

// A checkpoint the GPU run wrote at step 3 resumes on the CPU: steps 4 and 5 log the losses of
// the uninterrupted CPU run; and a CPU checkpoint resumes on the GPU.
TEST(CudaTrainer, CheckpointsMoveBetweenDevices) {
  HF_REQUIRE_CUDA();
  TempDir d;
  const Logged cpu = run_and_log(tiny_config(d, "cpu", "cpu"));
  run_and_log(tiny_config(d, "cuda", "cuda"));
  TrainConfig on_cpu = tiny_config(d, "resumed_cpu", "cpu");
  on_cpu.checkpoint.resume = d.file("cuda/checkpoints/step-00000003");
  const Logged a = run_and_log(on_cpu);
  expect_close(a.loss, {cpu.loss[3], cpu.loss[4]}, 1e-4, "cuda checkpoint resumed on cpu");
  TrainConfig on_gpu = tiny_config(d, "resumed_cuda", "cuda");
  on_gpu.checkpoint.resume = d.file("cpu/checkpoints/step-00000003");
  const Logged b = run_and_log(on_gpu);
  expect_close(b.loss, {cpu.loss[3], cpu.loss[4]}, 1e-4, "cpu checkpoint resumed on cuda");
}

TEST(CudaTrainer, Bf16MixedPrecisionFollowsTheCpuRun) {
  HF_REQUIRE_CUDA();
  TempDir d;
  TrainConfig c = tiny_config(d, "cpu", "cpu"), g = tiny_config(d, "cuda", "cuda");
  c.train.mixed_precision = g.train.mixed_precision = "bf16";
  const Logged cpu = run_and_log(c), gpu = run_and_log(g);
  // bf16 GEMM outputs round differently when the accumulation order differs: 2%.
  expect_close(gpu.loss, cpu.loss, 0.02, "bf16 loss");
  io::SafetensorsCheckpoint ck = io::SafetensorsCheckpoint::open(d.file("cuda/final"));
  EXPECT_EQ(ck.tensor("transformer.wte.weight").dtype(), DType::kF32);  // f32 master weights
}

// SFT on a tiny Llama: the prompts' and the padding's positions never reach the head (a row
// gather of the final hidden states and its scatter-add backward, on the device), so the head
// and its loss see only the completions; the losses and the validation loss follow the CPU run.
TrainConfig sft_config(const TempDir& d, const std::string& run, const std::string& device) {
  const std::string tok = d.write("tokenizer.json", testing::byte_tokenizer_json());
  std::string records;
  for (int i = 0; i < 24; ++i) {
    records += R"({"prompt": "Q: where does boat )" + std::to_string(i % 7) +
               R"( go?", "completion": " to the market)" + std::string(i % 4, '!') + "\"}\n";
  }
  const std::string data = d.write("records.jsonl", records);
  std::ostringstream y;
  y << "output_dir: " << d.file(run) << "\nseed: 5\ntask: sft\ntokenizer: " << tok << "\n"
    << "model: {arch: llama, config: {vocab_size: 257, hidden_size: 32, intermediate_size: 48, "
    << "num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, "
    << "max_position_embeddings: 64}}\n"
    << "data: {train: [" << data << "], val: [" << data << "], seq_len: 48, shuffle: false, "
    << "prompt_field: prompt, completion_field: completion}\n"
    << "train: {micro_batch_size: 4, max_steps: 4, log_every: 1, eval_every: 4, grad_clip: 1.0, "
    << "device: " << device << "}\n"
    << "optimizer: {type: adamw, lr: 3.0e-3}\ncheckpoint: {every: 0, resume: never}\n";
  return TrainConfig::parse(y.str(), d.file(run + ".yaml"));
}

TEST(CudaTrainer, SftFollowsTheCpuRun) {
  HF_REQUIRE_CUDA();
  TempDir d;
  const Logged cpu = run_and_log(sft_config(d, "cpu", "cpu"));
  const Logged gpu = run_and_log(sft_config(d, "cuda", "cuda"));
  expect_close(gpu.loss, cpu.loss, 1e-4, "sft loss");
  expect_close(gpu.grad_norm, cpu.grad_norm, 1e-3, "sft grad_norm");
  expect_close(gpu.val_loss, cpu.val_loss, 1e-4, "sft val_loss");
}

// train.device auto trains on the GPU when there is one. (Several ranks on GPUs run under
// mpirun: scripts/gpu-check.sh's multi-rank runs.)
TEST(CudaTrainer, AutoPicksTheGpu) {
  HF_REQUIRE_CUDA();
  TempDir d;
  EXPECT_TRUE(Trainer(tiny_config(d, "auto", "auto")).device().is_cuda());
}

}  // namespace
}  // namespace hfrun::train
