// Accelerator on one process (no MPI): gradient accumulation equals the full batch, the
// optimizer covers the model, misuse is refused with messages that say what to call, and
// save_state/load_state resume bit for bit, save_model writes the whole model, and an
// Accelerator built from a train.yaml (as hfrun's Trainer is) takes its sections' values. The
// multi-rank behaviour (DDP, ZeRO 1-3, resharded resume) is tests/embed/test_embed.sh, which runs
// examples/embed under mpirun.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "common/error.h"
#include "common/stop_signals.h"
#include "io/safetensors.h"
#include "optim/clip.h"
#include "tensor/ops.h"
#include "test_util.h"
#include "train/accelerator.h"
#include "train/config.h"

namespace hfrun::train {
namespace {

// y = relu(x W1 + b1) W2: enough to have matrices (decayed) and a bias (not decayed).
class TwoLayer : public nn::Module {
 public:
  explicit TwoLayer(uint64_t seed) {
    Generator gen(seed);
    w1_ = register_parameter("w1", ops::randn({4, 8}, gen, DType::kF32, 0, 0.5));
    b1_ = register_parameter("b1", ops::zeros({8}));
    w2_ = register_parameter("w2", ops::randn({8, 1}, gen, DType::kF32, 0, 0.5));
  }
  Tensor loss(const Tensor& x, const Tensor& y) const {
    Tensor d = sub(linear(relu(linear(x, w1_, b1_)), w2_), y);
    return mean(mul(d, d));
  }
  // A loss that leaves w2 out: no gradient reaches it.
  Tensor first_layer_loss(const Tensor& x) const {
    Tensor h = linear(x, w1_, b1_);
    return mean(mul(h, h));
  }

 private:
  nn::Parameter w1_, b1_, w2_;
};

struct Data {
  Tensor x, y;
  Data() {
    Generator gen(3);
    x = ops::randn({8, 4}, gen);
    y = ops::randn({8, 1}, gen);
  }
};

std::unique_ptr<optim::Optimizer> adamw(std::vector<optim::ParamRef> params) {
  return std::make_unique<optim::AdamW>(std::move(params), optim::AdamWOptions{.lr = 0.05});
}

// One optimizer step over `data` in `accum` equal micro batches.
void train_step(Accelerator& acc, const TwoLayer& model, const Data& data) {
  const int64_t accum = acc.options().grad_accum_steps;
  const int64_t rows = data.x.size(0) / accum;
  for (int64_t m = 0; m < accum; ++m) {
    EXPECT_FALSE(m > 0 && acc.sync_gradients());
    acc.backward(
        model.loss(ops::narrow(data.x, 0, m * rows, rows), ops::narrow(data.y, 0, m * rows, rows)));
  }
  EXPECT_TRUE(acc.sync_gradients());
  acc.clip_grad_norm(10.0);
  acc.step();
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Accelerator, OneProcessByDefault) {
  Accelerator acc;
  EXPECT_EQ(acc.rank(), 0);
  EXPECT_EQ(acc.world(), 1);
  EXPECT_TRUE(acc.is_main_process());
  EXPECT_EQ(acc.shard(12).begin, 0);
  EXPECT_EQ(acc.shard(12).end, 12);
  EXPECT_EQ(acc.mean_across_ranks(2.5), 2.5);
  data::LoaderOptions lo;
  lo.micro_batch = 3;
  const data::LoaderOptions sharded = Accelerator({.grad_accum_steps = 4}).shard(lo);
  EXPECT_EQ(sharded.rank, 0);
  EXPECT_EQ(sharded.world, 1);
  EXPECT_EQ(sharded.grad_accum, 4);
  EXPECT_EQ(sharded.micro_batch, 3);
}

TEST(Accelerator, AccumulationEqualsTheFullBatch) {
  const Data data;
  TwoLayer full_model(1), accum_model(1);
  Accelerator full({.grad_accum_steps = 1}), accum({.grad_accum_steps = 4});
  auto& opt = full.prepare(full_model, adamw);
  accum.prepare(accum_model, adamw);
  EXPECT_EQ(opt.params().size(), 3u);
  EXPECT_TRUE(opt.params()[0].decay);   // w1: a matrix
  EXPECT_FALSE(opt.params()[1].decay);  // b1
  for (int s = 0; s < 3; ++s) {
    train_step(full, full_model, data);
    train_step(accum, accum_model, data);
  }
  EXPECT_EQ(accum.step_count(), 3);
  const auto a = full_model.named_parameters(), b = accum_model.named_parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(testing::tensors_near(a[i].second, b[i].second, 1e-6, 1e-5)) << a[i].first;
  }
  TwoLayer untouched(1);
  EXPECT_FALSE(testing::tensors_near(a[0].second, untouched.parameter("w1"), 1e-4, 0));
}

// clip_grad_norm_in_step() (the trainer's) leaves the gradients for step() to scale in its
// update pass: the same norm and the same parameters, bit for bit, as clipping in place. A
// coefficient pending when the window is dropped (skip_step) does not reach the next step.
TEST(Accelerator, ClipInStepEqualsClipInPlace) {
  const Data data;
  TwoLayer in_place_model(1), in_step_model(1);
  Accelerator in_place, in_step;
  in_place.prepare(in_place_model, adamw);
  in_step.prepare(in_step_model, adamw);
  for (int s = 0; s < 3; ++s) {
    in_place.backward(in_place_model.loss(data.x, data.y));
    in_step.backward(in_step_model.loss(data.x, data.y));
    const std::vector<float> before = in_step_model.parameter("w1").grad().to_vector();
    const double n1 = in_place.clip_grad_norm(0.05);
    const double n2 = in_step.clip_grad_norm_in_step(0.05);
    EXPECT_EQ(n1, n2);
    EXPECT_GT(n1, 0.05) << "the test needs clipping";
    EXPECT_EQ(in_step_model.parameter("w1").grad().to_vector(), before);
    in_place.step();
    in_step.step();
  }
  // A pending coefficient dropped with its window.
  in_step.backward(in_step_model.loss(data.x, data.y));
  in_step.clip_grad_norm_in_step(1e-6);
  in_step.skip_step();
  in_place.backward(in_place_model.loss(data.x, data.y));
  in_place.skip_step();
  train_step(in_place, in_place_model, data);
  train_step(in_step, in_step_model, data);
  const auto a = in_place_model.named_parameters(), b = in_step_model.named_parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].second.to_vector(), b[i].second.to_vector()) << a[i].first;
  }
}

// step() zeroes the gradients lazily (the next backward writes over them): a parameter that
// the next window's backward does not reach must be clipped and updated from zeros, as after an
// eager zero_grad, not from its buffer's stale values (the previous window's gradient).
TEST(Accelerator, ParameterNoBackwardReachesStepsOnZeros) {
  const Data data;
  TwoLayer lazy_model(1), eager_model(1);
  Accelerator acc({.grad_accum_steps = 2});
  acc.prepare(lazy_model, adamw);
  eager_model.flatten_parameters(Device::cpu());
  auto opt = adamw(optim::param_refs(eager_model.named_trainable_parameters()));
  std::vector<Tensor> eager_params;
  for (const auto& [name, t] : eager_model.named_trainable_parameters()) eager_params.push_back(t);
  for (int s = 0; s < 4; ++s) {
    const bool whole = s % 2 == 0;  // odd steps leave w2 out
    eager_model.zero_grad();
    for (int m = 0; m < 2; ++m) {
      const Tensor x = ops::narrow(data.x, 0, 4 * m, 4), y = ops::narrow(data.y, 0, 4 * m, 4);
      acc.backward(whole ? lazy_model.loss(x, y) : lazy_model.first_layer_loss(x));
      autograd::backward(
          mul_scalar(whole ? eager_model.loss(x, y) : eager_model.first_layer_loss(x), 0.5));
    }
    EXPECT_EQ(acc.clip_grad_norm_in_step(10.0), optim::clip_grad_norm(eager_params, 10.0));
    if (!whole) {
      for (float g : lazy_model.parameter("w2").grad().to_vector()) ASSERT_EQ(g, 0.0f);
    }
    acc.step();
    opt->step();
  }
  const auto a = lazy_model.named_parameters(), b = eager_model.named_parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].second.to_vector(), b[i].second.to_vector()) << a[i].first;
  }
}

TEST(Accelerator, StopSignalIsReportedNotFatal) {
  StopSignals::clear();
  {
    Accelerator acc;
    EXPECT_EQ(acc.stop_requested(), 0);
    std::raise(SIGTERM);  // as Slurm at a time limit: recorded, not fatal
    EXPECT_EQ(acc.stop_requested(), SIGTERM);
  }
  StopSignals::clear();
  // handle_stop_signals = false: the program's own handler keeps the signal.
  static volatile std::sig_atomic_t seen = 0;
  struct sigaction mine {
  }, old{};
  mine.sa_handler = [](int sig) { seen = sig; };
  sigemptyset(&mine.sa_mask);
  sigaction(SIGTERM, &mine, &old);
  {
    Accelerator acc({.handle_stop_signals = false});
    std::raise(SIGTERM);
    EXPECT_EQ(seen, SIGTERM);
    EXPECT_EQ(acc.stop_requested(), 0);
  }
  sigaction(SIGTERM, &old, nullptr);
}

TEST(Accelerator, DecayRuleCanBeChanged) {
  TwoLayer model(1);
  Accelerator acc;
  auto& opt = acc.prepare(model, adamw,
                          [](const std::string& name, const Tensor&) { return name == "w2"; });
  EXPECT_FALSE(opt.params()[0].decay);
  EXPECT_TRUE(opt.params()[2].decay);
}

TEST(Accelerator, MisuseIsRefusedClearly) {
  EXPECT_NE(error_of([] { Accelerator({.zero_stage = 4}); }).find("zero_stage 4 is not one of"),
            std::string::npos);
  EXPECT_NE(error_of([] { Accelerator({.grad_accum_steps = 0}); }).find("grad_accum_steps 0"),
            std::string::npos);
  Accelerator unprepared;
  EXPECT_NE(error_of([&] { unprepared.step(); }).find("call prepare(model, make_optimizer) first"),
            std::string::npos);
  EXPECT_NE(error_of([&] { unprepared.shard(7); }).find("(no error)"), std::string::npos);

  const Data data;
  TwoLayer model(1);
  Accelerator acc({.grad_accum_steps = 2});
  acc.prepare(model, adamw);
  EXPECT_NE(error_of([&] { acc.prepare(model, adamw); }).find("called twice"), std::string::npos);
  acc.backward(model.loss(data.x, data.y));
  EXPECT_FALSE(acc.sync_gradients());
  EXPECT_NE(error_of([&] { acc.step(); }).find("the gradients are not synchronised"),
            std::string::npos);
  EXPECT_NE(error_of([&] { acc.clip_grad_norm(1.0); }).find("not synchronised"), std::string::npos);
  acc.backward(model.loss(data.x, data.y));
  EXPECT_TRUE(acc.sync_gradients());
  EXPECT_NE(error_of([&] { acc.backward(model.loss(data.x, data.y)); }).find("call step()"),
            std::string::npos);
  acc.zero_grad();  // drops the window instead
  EXPECT_EQ(acc.step_count(), 0);
  EXPECT_NE(error_of([&] { acc.backward(data.x); }).find("the loss must be a scalar"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              acc.load_state("/nonexistent/step-00000001");
            }).find("no such checkpoint directory"),
            std::string::npos);
}

TEST(Accelerator, SaveAndLoadStateResumeExactly) {
  testing::TempDir dir;
  const std::string root = dir.file("ckpt");
  const Data data;
  TwoLayer model(1);
  Accelerator acc({.grad_accum_steps = 2, .seed = 5, .keep_checkpoints = 1});
  acc.prepare(model, adamw);
  EXPECT_FALSE(acc.latest_state(root).has_value());
  for (int s = 0; s < 2; ++s) train_step(acc, model, data);
  acc.generator().advance(3);
  const std::string saved = acc.save_state(root);
  EXPECT_EQ(std::filesystem::path(saved).filename(), "step-00000002");
  for (int s = 0; s < 2; ++s) train_step(acc, model, data);
  const std::string later = acc.save_state(root);
  EXPECT_FALSE(std::filesystem::exists(saved));  // keep_checkpoints = 1

  // A fresh model (other initial values) continues from step 2 as the first one did.
  TwoLayer resumed_model(99);
  Accelerator resumed({.grad_accum_steps = 2, .seed = 123});
  resumed.prepare(resumed_model, adamw);
  ASSERT_EQ(resumed.latest_state(root), later);
  EXPECT_EQ(resumed.load_state(later), 4);
  EXPECT_EQ(resumed.step_count(), 4);
  EXPECT_EQ(resumed.generator().seed(), 5u);
  EXPECT_EQ(resumed.generator().offset(), 3u);
  train_step(acc, model, data);
  train_step(resumed, resumed_model, data);
  const auto a = model.named_parameters(), b = resumed_model.named_parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(testing::tensors_near(a[i].second, b[i].second, 0, 0)) << a[i].first;
  }
}

// load_latest_state resumes from the newest checkpoint that loads: a damaged one is passed
// over with a warning, and with none the model stays as it was.
TEST(Accelerator, LoadLatestStatePassesOverADamagedCheckpoint) {
  testing::TempDir dir;
  const std::string root = dir.file("ckpt");
  const Data data;
  TwoLayer model(1);
  Accelerator acc({.grad_accum_steps = 2, .seed = 5});
  acc.prepare(model, adamw);
  for (int s = 0; s < 2; ++s) train_step(acc, model, data);
  acc.save_state(root);
  const auto at2 = model.named_parameters();
  std::vector<Tensor> want;
  for (const auto& [name, p] : at2) want.push_back(ops::clone(p));
  for (int s = 0; s < 2; ++s) train_step(acc, model, data);
  const std::string later = acc.save_state(root);
  const std::string opt = later + "/rank-00000-of-00001.optimizer.safetensors";
  {
    std::fstream f(opt, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(opt) - 1));
    f.put('\x7f');
  }
  TwoLayer fresh(99);
  Accelerator resumed({.grad_accum_steps = 2, .seed = 123});
  resumed.prepare(fresh, adamw);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(resumed.load_latest_state(root), 2);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("skipping checkpoint " + later), std::string::npos) << err;
  EXPECT_NE(err.find("optimizer.safetensors has checksum"), std::string::npos) << err;
  const auto got = fresh.named_parameters();
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(testing::tensors_near(got[i].second, want[i], 0, 0)) << got[i].first;
  }
  TwoLayer empty(7);
  Accelerator none;
  none.prepare(empty, adamw);
  EXPECT_FALSE(none.load_latest_state(dir.file("nothing")).has_value());
  EXPECT_EQ(none.step_count(), 0);
}

TEST(Accelerator, SaveModelWritesTheWholeModel) {
  testing::TempDir dir;
  const Data data;
  TwoLayer model(1);
  Accelerator acc;
  acc.prepare(model, adamw);
  train_step(acc, model, data);
  const dist::TrainingMemory m = acc.training_memory();
  EXPECT_EQ(m.params, m.grads);
  EXPECT_GE(m.params, model.num_parameters() * 4);         // the flat buffer (slots aligned)
  EXPECT_EQ(m.optimizer, 2 * model.num_parameters() * 4);  // AdamW: exp_avg, exp_avg_sq
  const std::string out = dir.file("model");
  acc.save_model(out);
  const auto file = io::SafetensorsFile::open(out + "/model.safetensors");
  const auto named = model.named_parameters();
  ASSERT_EQ(file.entries().size(), named.size());
  for (const auto& [name, t] : named) {
    EXPECT_TRUE(testing::tensors_near(file.tensor(name), t, 0, 0)) << name;
  }
  EXPECT_FALSE(std::filesystem::exists(out + "/config.json"));  // not a model of models/
}

TEST(Accelerator, FromATrainConfig) {
  auto parse = [](const std::string& yaml) {
    return TrainConfig::parse("tokenizer: t.json\ndata: {train: [a.txt]}\n" + yaml, "run.yaml");
  };
  const TrainConfig c = parse(
      "seed: 9\ntrain: {grad_accum_steps: 3, mixed_precision: bf16}\ncheckpoint: {keep: 4}\n"
      "distributed: {bucket_mb: 2.5, timeout_s: 30}\n");
  Accelerator acc(c, /*handle_stop_signals=*/false);
  EXPECT_EQ(acc.options().grad_accum_steps, 3);
  EXPECT_EQ(acc.options().seed, 9u);
  EXPECT_EQ(acc.options().keep_checkpoints, 4);
  EXPECT_EQ(acc.options().mixed_precision, "bf16");
  EXPECT_EQ(acc.options().bucket_mb, 2.5);
  EXPECT_EQ(acc.generator().seed(), 9u);
  EXPECT_FALSE(acc.grad_scaler().enabled());  // bf16 needs no loss scaling
  // fp16 scales its loss by default (as Accelerate), with the section's arguments.
  Accelerator fp16(parse("train: {mixed_precision: fp16, grad_scaler: {init_scale: 128, "
                         "growth_interval: 7}}\n"),
                   false);
  EXPECT_TRUE(fp16.grad_scaler().enabled());
  EXPECT_EQ(fp16.loss_scale(), 128.0f);
  EXPECT_EQ(fp16.grad_scaler().options().growth_interval, 7);
  Accelerator unscaled(parse("train: {mixed_precision: fp16, grad_scaler: {enabled: false}}\n"),
                       false);
  EXPECT_FALSE(unscaled.grad_scaler().enabled());
  EXPECT_EQ(unscaled.loss_scale(), 1.0f);
  Accelerator f32(parse("train: {grad_scaler: {enabled: true}}\n"), false);
  EXPECT_EQ(f32.loss_scale(), 65536.0f);
  // The options' default follows the precision too.
  EXPECT_TRUE(
      Accelerator(AcceleratorOptions{.handle_stop_signals = false, .mixed_precision = "fp16"})
          .grad_scaler()
          .enabled());
  const std::string np = error_of([&] { Accelerator(parse("distributed: {num_processes: 2}\n")); });
  EXPECT_NE(np.find("run.yaml: distributed.num_processes 2 needs a multi-process launch"),
            std::string::npos)
      << np;
}

}  // namespace
}  // namespace hfrun::train
