// The data-parallel strategies (Ddp, Zero12, Zero3) and tensor parallelism in one process: the
// ranks are threads over an in-process process group (local_group.h), so the arithmetic of
// units, chunks, pieces, gathers and norms is checked without mpirun. Each run trains a small
// Llama (GQA, untied head) for a few AdamW steps with gradient accumulation and clipping that
// bites; its losses, gradient norms and final parameters must equal one process training on
// the whole global batch. (tests/distributed/test_*.sh run the same protocol across real ranks.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "distributed/parallel/strategy.h"
#include "distributed/parallel/tensor_parallel.h"
#include "distributed/parallel/topology.h"
#include "local_group.h"
#include "models/registry.h"
#include "nn/lora.h"
#include "optim/clip.h"
#include "optim/optimizer.h"
#include "tensor/ops.h"

namespace hfrun::dist {
namespace {

using testing::LocalProcessGroup;
using testing::LocalWorld;
using testing::run_ranks;

constexpr const char* kConfig = R"({"model_type": "llama", "vocab_size": 40, "hidden_size": 16,
    "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 32, "tie_word_embeddings": false})";
// The same with the head tied to the embedding table (as GPT-2's).
constexpr const char* kTiedConfig = R"({"model_type": "llama", "vocab_size": 40,
    "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32,
    "tie_word_embeddings": true})";
constexpr int kSteps = 3, kMicro = 2, kRowsPerRank = 2, kSeq = 8;
constexpr double kMaxNorm = 0.05;  // below the gradients' norm: clipping scales every step

// With `lora`: adapters (r 4) on q, v (column-parallel under TP) and o, down (row-parallel), B
// drawn nonzero so the adapters matter from the first step, and lm_head trained whole.
std::unique_ptr<nn::CausalLM> make_model(bool lora, bool tied = false) {
  auto model =
      nn::create_causal_lm(tied ? kTiedConfig : kConfig, "test config", /*seed=*/11, "llama");
  if (lora) {
    nn::LoraOptions o;
    o.r = 4;
    o.alpha = 8;
    o.target_modules = {"q_proj", "v_proj", "o_proj", "down_proj"};
    o.modules_to_save = {"lm_head"};
    Generator init(5);
    nn::apply_lora(*model, o, init, nullptr, "test");
    Generator b(6);
    for (const auto& [name, t] : model->named_parameters()) {
      if (name.find("lora_B") != std::string::npos) {
        model->load_parameter(name, ops::randn(t.sizes(), b, DType::kF32, 0.0, 0.2));
      }
    }
  }
  return model;
}

std::vector<Tensor> trainable(const nn::Module& model) {
  std::vector<Tensor> out;
  for (const auto& [name, t] : model.named_trainable_parameters()) out.push_back(t);
  return out;
}

optim::AdamWOptions adamw() {
  optim::AdamWOptions o;
  o.lr = 1e-2;
  o.weight_decay = 0.1;
  return o;
}

// The global micro-batch `micro` of step `step`: rows x (kSeq + 1) tokens, cut into inputs and
// next-token targets; rows [first, first + n) of it.
std::pair<Tensor, Tensor> batch(int step, int micro, int rows, int first, int n) {
  std::vector<float> tokens;
  for (int r = 0; r < rows; ++r) {
    for (int t = 0; t <= kSeq; ++t)
      tokens.push_back(static_cast<float>((r * 7 + t * 3 + step * 13 + micro * 5 + r * t) % 40));
  }
  const Tensor all = ops::from_vector(tokens, {rows, kSeq + 1}, DType::kI64);
  const Tensor mine = ops::narrow(all, 0, first, n);
  return {ops::contiguous(ops::narrow(mine, 1, 0, kSeq)),
          ops::contiguous(ops::narrow(mine, 1, 1, kSeq))};
}

// Every rank's `at`, in rank order.
std::vector<uintptr_t> allgather_addresses(dist::ProcessGroup& group, uintptr_t at) {
  Tensor mine = ops::empty({1}, DType::kI64);
  *static_cast<int64_t*>(mine.raw_data()) = static_cast<int64_t>(at);
  Tensor all = ops::empty({group.size()}, DType::kI64);
  group.allgather(all, mine)->wait();
  const auto* p = static_cast<const int64_t*>(all.raw_data());
  std::vector<uintptr_t> out;
  for (int r = 0; r < group.size(); ++r) out.push_back(static_cast<uintptr_t>(p[r]));
  return out;
}

struct TrainingRun {
  std::vector<double> losses, norms;
  std::vector<std::pair<std::string, Tensor>> params;  // after the last step
};

// One process on the whole global batch of `dp` ranks' rows.
TrainingRun reference(int dp, bool lora, bool tied = false) {
  auto model = make_model(lora, tied);
  model->flatten_parameters(Device::cpu());
  optim::AdamW opt(optim::param_refs(model->named_trainable_parameters()), adamw());
  TrainingRun run;
  for (int s = 0; s < kSteps; ++s) {
    model->zero_grad();
    double loss = 0;
    for (int m = 0; m < kMicro; ++m) {
      const auto [ids, targets] = batch(s, m, dp * kRowsPerRank, 0, dp * kRowsPerRank);
      const Tensor l = model->loss(ids, targets);
      loss += l.item() / kMicro;
      autograd::backward(mul_scalar(l, 1.0 / kMicro));
    }
    run.norms.push_back(optim::clip_grad_norm(trainable(*model), kMaxNorm));
    opt.step();
    run.losses.push_back(loss);
  }
  for (const auto& [name, t] : model->named_parameters()) {
    run.params.emplace_back(name, ops::clone(t));
  }
  return run;
}

// The same training as `tp` x `dp` ranks (global rank g: tensor-parallel rank g % tp,
// data-parallel rank g / tp) with the strategy of `stage`. Returns global rank 0's view, and
// checks every rank's parameters (its tensor-parallel part) against `want`.
// With reduce_dtype bf16 the gradients cross in bf16 (wire_tensor): the synchronised ones
// (stages 0 and 1: one bf16 sum per step, widened) must be exactly bf16 values (but for DDP's
// embedding table, whose lookup rows are gathered apart in f32), and the run close to `want`
// within bf16's precision.
// With loss_scale != 1 backward runs on the scaled loss and the clip unscales the gradients in
// its norm's pass (what Accelerator::clip_grad_norm does with a grad scaler); a power of two
// scales exactly, so the run must still equal `want`.
// ZeRO-1/2 keep one copy of the parameters in memory the ranks share where the data-parallel
// group offers it (`share`: the in-process groups do, as MPI ranks on one node); every rank's
// parameters must then be the same memory.
TrainingRun distributed(int stage, int tp, int dp, bool lora, const TrainingRun& want,
                        DType reduce_dtype = DType::kF32, float loss_scale = 1.0f,
                        bool tied = false, bool share = true) {
  const bool bf16 = reduce_dtype == DType::kBF16;
  std::vector<std::unique_ptr<LocalWorld>> data_worlds, tensor_worlds;
  for (int t = 0; t < tp; ++t) data_worlds.push_back(std::make_unique<LocalWorld>(dp, share));
  for (int d = 0; d < dp; ++d) tensor_worlds.push_back(std::make_unique<LocalWorld>(tp));
  LocalWorld all(tp * dp);  // failure propagation only
  TrainingRun out;
  run_ranks(all, [&](int g) {
    const int t = g % tp, d = g / tp;
    auto data = std::make_shared<LocalProcessGroup>(*data_worlds[t], d);
    auto tensor = std::make_shared<LocalProcessGroup>(*tensor_worlds[d], t);
    std::unique_ptr<TensorParallelOverGroup> tp_group;
    auto model = make_model(lora, tied);
    if (tp > 1) {
      tp_group = std::make_unique<TensorParallelOverGroup>(tensor, CollectiveOptions{});
      apply_tensor_parallel(*model, *tp_group);
    }
    Tensor flat = model->flatten_parameters(Device::cpu()).params;
    StrategyContext ctx;
    ctx.data = ctx.data_device = data.get();
    ctx.tensor = tp > 1 ? tensor.get() : nullptr;
    ctx.bucket_elements = 500;  // many units, some crossing parameters
    ctx.rank = d;
    ctx.size = dp;
    ctx.reduce_dtype = reduce_dtype;
    static_cast<dist::ProcessGroup&>(*data).broadcast(flat, 0)->wait();
    auto strategy = Strategy::create(stage, ctx);
    strategy->attach(*model);
    std::vector<ParamSlice> slices;
    const std::vector<optim::ParamRef> updated =
        strategy->optimizer_params(optim::param_refs(model->named_trainable_parameters()), &slices);
    optim::AdamW opt(updated, adamw());
    strategy->adopt_optimizer(opt);  // DDP sharing parameters: each rank steps its part
    TrainingRun run;
    for (int s = 0; s < kSteps; ++s) {
      strategy->zero_grad(*model);
      double loss = 0;
      for (int m = 0; m < kMicro; ++m) {
        const auto [ids, targets] = batch(s, m, dp * kRowsPerRank, d * kRowsPerRank, kRowsPerRank);
        const Tensor l = model->loss(ids, targets);
        loss += l.item() / kMicro;
        if (stage == 3) {
          // A forward without gradients between a loss and its backward (a logged metric)
          // must leave what that backward needs gathered.
          autograd::NoGradGuard no_grad;
          model->loss(ids, targets);
        }
        strategy->before_backward(m + 1 == kMicro);
        autograd::backward(mul_scalar(l, loss_scale / kMicro));
        strategy->finish_gradient_sync();
      }
      if (bf16 && stage <= 1) {  // stages 2 and 3 add each micro-step's reduced chunk
        int64_t checked = 0;
        for (const optim::ParamRef& r : updated) {
          // DDP and ZeRO-1 add an embedding table's lookup rows after the table's bf16
          // reduction, in f32.
          if (r.name.find("embed_tokens") != std::string::npos) continue;
          for (float v : r.param.grad().to_vector()) {
            ASSERT_EQ(v, bf16_to_f32(f32_to_bf16(v))) << "rank " << g << " " << r.name;
            ++checked;
          }
        }
        EXPECT_GT(checked, 0);
      }
      run.norms.push_back(strategy->clip_grad_norm(kMaxNorm, 1.0f / loss_scale));
      opt.step();
      strategy->after_optimizer_step();
      run.losses.push_back(sum_over(*data, loss, {}) / dp);
    }
    if (stage == 3) {
      // Between steps only this rank's shard is held; a forward without gradients (evaluation)
      // gathers each block and releases it again, and leaves the root unit for
      // release_parameters() (a backward may still follow).
      const optim::AdamW& o = opt;
      const int64_t shard = strategy->memory(o).params;
      {
        autograd::NoGradGuard no_grad;
        const auto [ids, targets] = batch(0, 0, dp * kRowsPerRank, 0, kRowsPerRank);
        model->loss(ids, targets);
      }
      EXPECT_GT(strategy->memory(o).params, shard) << "rank " << g;
      strategy->release_parameters();
      EXPECT_EQ(strategy->memory(o).params, shard) << "rank " << g;
      // This rank's chunks of every parameter, trainable or frozen: about 1/dp of the whole.
      const int64_t whole = model->num_parameters() * 4;
      EXPECT_LT(shard, whole * 3 / (2 * dp) + 4096) << "rank " << g << ": not sharded";
    }
    const bool shared = stage <= 2 && dp > 1 && share;
    EXPECT_EQ(strategy->memory(static_cast<const optim::Optimizer&>(opt)).params_shared, shared)
        << "rank " << g << ", stage " << stage;
    if (dp > 1 && stage != 3) {  // (ZeRO-3's are released between steps)
      const Tensor first = model->named_parameters()[0].second;
      const auto at = reinterpret_cast<uintptr_t>(first.raw_data());
      const std::vector<uintptr_t> all = allgather_addresses(*data, at);
      EXPECT_EQ(std::all_of(all.begin(), all.end(), [&](uintptr_t a) { return a == at; }), shared)
          << "rank " << g << ", stage " << stage << ": parameters shared or not as expected";
    }
    strategy->gather_parameters();
    double diff2 = 0, norm2 = 0;
    for (size_t i = 0; i < want.params.size(); ++i) {
      const auto& [name, full] = want.params[i];
      const auto named = model->named_parameters();
      ASSERT_EQ(named[i].first, name);
      const nn::TensorParallelSplit split = model->tensor_parallel_split(name);
      const Tensor part =
          split.split() && tp > 1 ? tensor_parallel_slice(full, split, t, tp) : full;
      const std::vector<float> a = named[i].second.to_vector(), b = part.to_vector();
      ASSERT_EQ(a.size(), b.size()) << name;
      if (bf16) {  // lossy by design: AdamW may turn a rounded tiny gradient; compare in L2
        for (size_t k = 0; k < a.size(); ++k) {
          diff2 += (a[k] - b[k]) * (a[k] - b[k]);
          norm2 += b[k] * b[k];
        }
        continue;
      }
      for (size_t k = 0; k < a.size(); ++k) {
        ASSERT_NEAR(a[k], b[k], 2e-5 + 1e-4 * std::fabs(b[k]))
            << "rank " << g << " " << name << "[" << k << "], stage " << stage;
      }
    }
    if (bf16) {
      EXPECT_LT(std::sqrt(diff2 / norm2), 5e-3) << "rank " << g << ", stage " << stage;
      EXPECT_GT(diff2, 0) << "bf16 gradients must round somewhere";
    }
    if (g == 0) out = run;
  });
  return out;
}

void expect_same_run(const TrainingRun& got, const TrainingRun& want, double tol = 1e-5) {
  ASSERT_EQ(got.losses.size(), want.losses.size());
  for (size_t s = 0; s < want.losses.size(); ++s) {
    EXPECT_NEAR(got.losses[s], want.losses[s], tol * std::fabs(want.losses[s])) << "step " << s;
    EXPECT_NEAR(got.norms[s], want.norms[s], 10 * tol * want.norms[s]) << "step " << s;
    EXPECT_GT(want.norms[s], kMaxNorm) << "clipping must bite for the test to mean anything";
  }
}

// Without memory the ranks share (ranks on several nodes), ZeRO-1/2 gather the parameters after
// each step, each rank its own copy.
// Stages 1 and 2, data-parallel 2 and 3, tensor-parallel 2, LoRA, a tied table.
TEST(Strategies, Zero12WithoutSharedMemoryGatherTheParameters) {
  for (int stage : {1, 2}) {
    const TrainingRun want = reference(2, false);
    expect_same_run(distributed(stage, 1, 2, false, want, DType::kF32, 1.0f, false, false), want);
  }
  const TrainingRun three = reference(3, false);
  expect_same_run(distributed(2, 1, 3, false, three, DType::kF32, 1.0f, false, false), three);
  const TrainingRun tp = reference(2, false);
  expect_same_run(distributed(1, 2, 2, false, tp, DType::kF32, 1.0f, false, false), tp);
  const TrainingRun lora = reference(2, true);
  expect_same_run(distributed(1, 1, 2, true, lora, DType::kF32, 1.0f, false, false), lora);
  const TrainingRun tied = reference(3, false, true);
  expect_same_run(distributed(1, 1, 3, false, tied, DType::kF32, 1.0f, true, false), tied);
}

// Mixed precision under ZeRO-1/2 with shared parameters: the bf16 copies every rank's step
// writes for its chunks (and casts for chunks the step did not update) equal every weight's
// cast on every rank afterwards, whole or transposed; a frozen weight (LoRA's base) and a view
// that is not dense have none.
TEST(Strategies, SharedWeightCopiesEqualEveryWeightsCastAfterTheStep) {
  for (int stage : {1, 2}) {
    for (int dp : {2, 3}) {
      LocalWorld world(dp);
      run_ranks(world, [&](int d) {
        auto group = std::make_shared<LocalProcessGroup>(world, d);
        auto model = make_model(/*lora=*/true);
        model->set_compute_dtype(DType::kBF16);
        Tensor flat = model->flatten_parameters(Device::cpu(), stage < 2).params;
        StrategyContext ctx;
        ctx.data = ctx.data_device = group.get();
        ctx.bucket_elements = 500;
        ctx.rank = d;
        ctx.size = dp;
        static_cast<dist::ProcessGroup&>(*group).broadcast(flat, 0)->wait();
        auto strategy = Strategy::create(stage, ctx);
        strategy->attach(*model);
        const auto updated = strategy->optimizer_params(
            optim::param_refs(model->named_trainable_parameters()), nullptr);
        optim::AdamW opt(updated, adamw());
        strategy->adopt_optimizer(opt);
        const std::vector<Tensor> copies = strategy->shared_weight_copies();
        ASSERT_EQ(copies.size(), updated.size()) << "stage " << stage;
        strategy->zero_grad(*model);
        const auto [ids, targets] = batch(0, 0, dp * kRowsPerRank, d * kRowsPerRank, kRowsPerRank);
        strategy->before_backward(true);
        autograd::backward(model->loss(ids, targets));
        strategy->finish_gradient_sync();
        // The first piece is left out of the update: its copy is cast, not written.
        std::vector<Tensor> some = copies;
        some[0] = Tensor();
        std::vector<bool> written = opt.step(1.0, some);
        EXPECT_FALSE(written[0]);
        strategy->complete_shared_copies(written);
        strategy->after_optimizer_step();
        int checked = 0;
        for (const auto& [name, w] : model->named_parameters()) {
          const bool frozen = !model->is_trainable(name);
          for (const Tensor& source : {w, w.dim() == 2 ? ops::transpose(w, 0, 1) : w}) {
            const Tensor cast = ops::to_dtype(source, DType::kBF16);
            const Tensor shared = strategy->shared_copy_of(source, cast);
            ASSERT_EQ(shared.defined(), !frozen) << name << ", stage " << stage;
            if (frozen) continue;
            EXPECT_EQ(shared.sizes(), source.sizes());
            const std::vector<float> a = shared.to_vector(), b = cast.to_vector();
            ASSERT_EQ(a, b) << "rank " << d << " " << name << ", stage " << stage;
            ++checked;
          }
          if (w.dim() == 2 && w.sizes()[0] > 1) {
            const Tensor rows = ops::narrow(w, 1, 0, 1);  // a column: not dense
            EXPECT_FALSE(
                strategy->shared_copy_of(rows, ops::to_dtype(rows, DType::kBF16)).defined());
          }
        }
        EXPECT_GT(checked, 0);
      });
    }
  }
}

// (zero_stage, tensor-parallel size, data-parallel size)
class Strategies : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(Strategies, EqualOneProcessOnTheGlobalBatch) {
  const auto [stage, tp, dp] = GetParam();
  const TrainingRun want = reference(dp, /*lora=*/false);
  expect_same_run(distributed(stage, tp, dp, /*lora=*/false, want), want);
}

// LoRA: only the adapters (and lm_head) train; the frozen base takes no part in the gradient
// synchronisation, and tensor parallelism splits each adapter with its layer.
class LoraStrategies : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(LoraStrategies, EqualOneProcessOnTheGlobalBatch) {
  const auto [stage, tp, dp] = GetParam();
  const TrainingRun want = reference(dp, /*lora=*/true);
  expect_same_run(distributed(stage, tp, dp, /*lora=*/true, want), want);
}

// distributed.reduce_dtype bf16: every stage, 2 and 3 data-parallel ranks, and with TP2.
class Bf16Reduce : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(Bf16Reduce, CloseToOneProcessWithBf16Gradients) {
  const auto [stage, tp, dp] = GetParam();
  const TrainingRun want = reference(dp, /*lora=*/false);
  expect_same_run(distributed(stage, tp, dp, /*lora=*/false, want, DType::kBF16), want, 2e-3);
}

// Loss scaling (fp16): the gradients arrive scaled by 2^12 and are unscaled in the clip's norm
// pass, over each strategy's own gradients (whole, sharded, split across tensor parallelism).
class LossScaled : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(LossScaled, UnscaleInTheNormPassEqualsOneProcess) {
  const auto [stage, tp, dp] = GetParam();
  const TrainingRun want = reference(dp, /*lora=*/false);
  expect_same_run(distributed(stage, tp, dp, /*lora=*/false, want, DType::kF32, 4096.0f), want);
}

// A head tied to the embedding table: under DDP and ZeRO-1 the table's dense gradient (the
// head's) is reduced during backward and the lookup's rows are gathered apart (2 ranks: 32 rows
// of a 40-row table), or, where the rows of all ranks outnumber the table's (3 ranks; each
// tensor-parallel part's 20 rows), averaged apart as a dense table. The other micro-step adds
// its rows in place. ZeRO-2 and 3 reduce the table whole.
class TiedStrategies : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(TiedStrategies, EqualOneProcessOnTheGlobalBatch) {
  const auto [stage, tp, dp] = GetParam();
  const TrainingRun want = reference(dp, /*lora=*/false, /*tied=*/true);
  expect_same_run(
      distributed(stage, tp, dp, /*lora=*/false, want, DType::kF32, 1.0f, /*tied=*/true), want);
}

TEST(TiedStrategies, Bf16ReduceCloseToOneProcess) {
  const TrainingRun want = reference(2, /*lora=*/false, /*tied=*/true);
  for (int stage : {0, 1}) {
    expect_same_run(
        distributed(stage, 1, 2, /*lora=*/false, want, DType::kBF16, 1.0f, /*tied=*/true), want,
        2e-3);
  }
}

INSTANTIATE_TEST_SUITE_P(DataParallel, TiedStrategies,
                         ::testing::Values(std::make_tuple(0, 1, 2), std::make_tuple(0, 1, 3),
                                           std::make_tuple(0, 2, 2), std::make_tuple(1, 1, 2),
                                           std::make_tuple(1, 1, 3), std::make_tuple(1, 2, 2),
                                           std::make_tuple(2, 1, 2), std::make_tuple(3, 1, 2)));

// One synchronising backward under DDP (stage 0) or ZeRO-1 with every unit but the table's one
// large unit: the gradients this rank's optimizer reads equal one process's on the global
// batch, and the order of the collectives shows where the embedding table went. Tied: the
// table's all-reduce (reduce-scatter) goes first (the head is the first backward), the lookup's
// rows are gathered at the end. Untied: the table is never reduced, only its rows gathered.
void expect_embedding_rows_gathered(int stage, bool tied, DType reduce_dtype = DType::kF32) {
  constexpr int dp = 2;
  auto one = make_model(false, tied);
  one->flatten_parameters(Device::cpu());
  {
    const auto [ids, targets] = batch(0, 0, dp * kRowsPerRank, 0, dp * kRowsPerRank);
    autograd::backward(one->loss(ids, targets));
  }
  const auto want = one->named_trainable_parameters();
  LocalWorld world(dp);
  run_ranks(world, [&](int d) {
    auto group = std::make_shared<LocalProcessGroup>(world, d);
    auto model = make_model(false, tied);
    model->flatten_parameters(Device::cpu());
    StrategyContext ctx;
    ctx.data = ctx.data_device = group.get();
    ctx.bucket_elements = 1 << 20;
    ctx.rank = d;
    ctx.size = dp;
    ctx.reduce_dtype = reduce_dtype;
    auto strategy = Strategy::create(stage, ctx);
    strategy->attach(*model);
    group->issued.clear();  // (ZeRO-1 set up its shared parameters)
    const auto [ids, targets] = batch(0, 0, dp * kRowsPerRank, d * kRowsPerRank, kRowsPerRank);
    strategy->before_backward(true);
    autograd::backward(model->loss(ids, targets));
    strategy->finish_gradient_sync();
    std::vector<ParamSlice> slices;
    const auto got =
        strategy->optimizer_params(optim::param_refs(model->named_trainable_parameters()), &slices);
    ASSERT_FALSE(got.empty());
    for (size_t i = 0; i < got.size(); ++i) {
      const auto whole = std::find_if(want.begin(), want.end(),
                                      [&](const auto& w) { return w.first == slices[i].name; });
      ASSERT_NE(whole, want.end()) << slices[i].name;
      const std::vector<float> a = got[i].param.grad().to_vector();
      const std::vector<float> b =
          ops::narrow(ops::reshape(whole->second.grad(), {whole->second.numel()}), 0,
                      slices[i].offset, static_cast<int64_t>(a.size()))
              .to_vector();
      // bf16: each rank's half rounded, then summed; within bf16's step of the tensor's largest.
      float largest = 0;
      for (float v : b) largest = std::max(largest, std::fabs(v));
      const double abs = reduce_dtype == DType::kF32 ? 1e-6 : 1e-2 * largest;
      const double rel = reduce_dtype == DType::kF32 ? 1e-5 : 1e-2;
      for (size_t k = 0; k < a.size(); ++k)
        ASSERT_NEAR(a[k], b[k], abs + rel * std::fabs(b[k])) << got[i].name << "[" << k << "]";
    }
    const int64_t table = 40 * 16, rows = dp * kRowsPerRank * kSeq;
    const auto& ops = group->issued;
    std::vector<std::string> seen;
    for (const auto& [op, n] : ops) seen.push_back(op + " " + std::to_string(n));
    const auto at = [&](const std::string& what) {
      return std::find(seen.begin(), seen.end(), what) - seen.begin();
    };
    const auto end = static_cast<ptrdiff_t>(seen.size());
    ASSERT_LT(at("allgather " + std::to_string(rows * 16)), end) << "the rows were not gathered";
    EXPECT_LT(at("allgather " + std::to_string(rows)), end) << "the ids were not gathered";
    const std::string reduced =
        (stage == 0 ? "allreduce " : "reduce_scatter ") + std::to_string(table);
    if (tied) {
      EXPECT_EQ(at(reduced), 0) << "the table did not go first";
    } else {
      EXPECT_EQ(at(reduced), end) << "the table was reduced";
    }
  });
}

TEST(DdpEmbeddingRows, TiedTableGoesDuringBackwardAndItsRowsAfter) {
  expect_embedding_rows_gathered(0, true);
}

TEST(DdpEmbeddingRows, UntiedTableOnlyGathersItsRows) {
  expect_embedding_rows_gathered(0, false);
}

// The same with gradients crossing in bf16: the untied table's unit, never issued, has no wire
// copy to widen back.
TEST(DdpEmbeddingRows, WithBf16GradientsOnTheWire) {
  expect_embedding_rows_gathered(0, true, DType::kBF16);
  expect_embedding_rows_gathered(0, false, DType::kBF16);
}

// ZeRO-1: the table's units (their own) are reduce-scattered during backward, the rows added
// into this rank's chunks after; an untied table's units go nowhere.
TEST(Zero1EmbeddingRows, TiedTableGoesDuringBackwardAndItsRowsAfter) {
  expect_embedding_rows_gathered(1, true);
  expect_embedding_rows_gathered(1, true, DType::kBF16);
}

TEST(Zero1EmbeddingRows, UntiedTableOnlyGathersItsRows) {
  expect_embedding_rows_gathered(1, false);
  expect_embedding_rows_gathered(1, false, DType::kBF16);
}

// Two matrices; a step's loss may leave the second out, so that no gradient reaches it.
class Alternating : public nn::Module {
 public:
  Alternating() {
    Generator gen(4);
    w1_ = register_parameter("w1", ops::randn({4, 8}, gen, DType::kF32, 0, 0.5));
    w2_ = register_parameter("w2", ops::randn({8, 3}, gen, DType::kF32, 0, 0.5));
  }
  Tensor loss(const Tensor& x, bool whole) const {
    Tensor h = linear(x, w1_);
    if (!whole) return mean(mul(h, h));
    Tensor o = linear(relu(h), w2_);
    return mean(mul(o, o));
  }

 private:
  nn::Parameter w1_, w2_;
};

// The strategies zero the gradients lazily (the next backward writes over them). A parameter
// that a step's backward leaves out keeps its buffer's stale values (the last step's gradient)
// until read: its units must go out with zeros (ZeRO-1 reduces the flat buffer itself), and
// every stage must update it from zeros, as one process with an eager zero_grad does.
TEST(Strategies, ParameterNoBackwardReachesSynchronisesZeros) {
  Generator gen(9);
  const Tensor x = ops::randn({4, 4}, gen);
  constexpr int kDp = 2, kAltSteps = 4;
  auto reference = std::make_unique<Alternating>();
  reference->flatten_parameters(Device::cpu());
  optim::AdamW ref_opt(optim::param_refs(reference->named_trainable_parameters()), adamw());
  for (int s = 0; s < kAltSteps; ++s) {
    reference->zero_grad();
    autograd::backward(reference->loss(x, s % 2 == 0));
    ref_opt.step();
  }
  for (int stage : {0, 1, 2}) {
    LocalWorld world(kDp);
    run_ranks(world, [&](int d) {
      auto group = std::make_shared<LocalProcessGroup>(world, d);
      Alternating model;
      model.flatten_parameters(Device::cpu());
      StrategyContext ctx;
      ctx.data = ctx.data_device = group.get();
      ctx.bucket_elements = 10;  // units crossing both parameters
      ctx.rank = d;
      ctx.size = kDp;
      auto strategy = Strategy::create(stage, ctx);
      strategy->attach(model);
      optim::AdamW opt(strategy->optimizer_params(
                           optim::param_refs(model.named_trainable_parameters()), nullptr),
                       adamw());
      strategy->adopt_optimizer(opt);
      for (int s = 0; s < kAltSteps; ++s) {
        strategy->zero_grad(model);
        strategy->before_backward(true);
        autograd::backward(model.loss(ops::narrow(x, 0, 2 * d, 2), s % 2 == 0));
        strategy->finish_gradient_sync();
        opt.step();
        strategy->after_optimizer_step();
      }
      const auto got = model.named_parameters(), want = reference->named_parameters();
      for (size_t i = 0; i < want.size(); ++i) {
        const std::vector<float> a = got[i].second.to_vector(), b = want[i].second.to_vector();
        for (size_t k = 0; k < a.size(); ++k) {
          ASSERT_NEAR(a[k], b[k], 1e-6 + 1e-5 * std::fabs(b[k]))
              << "stage " << stage << ", rank " << d << ", " << want[i].first << "[" << k << "]";
        }
      }
    });
  }
}

INSTANTIATE_TEST_SUITE_P(DataParallel, LossScaled,
                         ::testing::Values(std::make_tuple(0, 1, 2), std::make_tuple(1, 1, 3),
                                           std::make_tuple(2, 1, 2), std::make_tuple(3, 1, 3),
                                           std::make_tuple(0, 2, 2), std::make_tuple(3, 2, 2)));

INSTANTIATE_TEST_SUITE_P(DataParallel, Bf16Reduce,
                         ::testing::Values(std::make_tuple(0, 1, 2), std::make_tuple(0, 1, 3),
                                           std::make_tuple(1, 1, 2), std::make_tuple(2, 1, 3),
                                           std::make_tuple(3, 1, 2), std::make_tuple(3, 1, 3),
                                           std::make_tuple(0, 2, 2), std::make_tuple(3, 2, 2)));

INSTANTIATE_TEST_SUITE_P(Lora, LoraStrategies,
                         ::testing::Values(std::make_tuple(0, 1, 2), std::make_tuple(1, 1, 2),
                                           std::make_tuple(2, 1, 3), std::make_tuple(3, 1, 2),
                                           std::make_tuple(3, 1, 3), std::make_tuple(0, 2, 1),
                                           std::make_tuple(0, 2, 2), std::make_tuple(2, 2, 2),
                                           std::make_tuple(3, 2, 2)));

INSTANTIATE_TEST_SUITE_P(DataParallel, Strategies,
                         ::testing::Combine(::testing::Values(0, 1, 2, 3), ::testing::Values(1),
                                            ::testing::Values(2, 3)));
INSTANTIATE_TEST_SUITE_P(TensorParallel2, Strategies,
                         ::testing::Values(std::make_tuple(0, 2, 1), std::make_tuple(0, 2, 2),
                                           std::make_tuple(1, 2, 2), std::make_tuple(2, 2, 2),
                                           std::make_tuple(3, 2, 2)));

}  // namespace
}  // namespace hfrun::dist
