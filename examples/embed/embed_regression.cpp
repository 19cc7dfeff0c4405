// A program that embeds hfrun as a library (no hfrun binary): a small residual MLP, defined
// here as an nn::Module, learns a synthetic regression task with hfrun::Accelerator, on one
// process or on several ranks under mpirun, with DDP or ZeRO, gradient accumulation, clipping
// and resumable checkpoints.
//
//   embed_regression [--zero-stage S] [--steps N] [--accum A] [--global-batch G] [--lr LR]
//                    [--seed S] [--ckpt DIR [--save-every K] [--resume]]
//
// Step s trains on G samples of a fixed, seeded data set (G = samples per optimizer step over
// all ranks, whatever the world size), so -np 1 and -np 2 log the same losses. The main process
// prints one JSON line per step ({"step", "loss", "grad_norm"}); the exit code is 1 when the
// loss did not fall, 2 for bad arguments.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "hfrun/hfrun.h"

using namespace hfrun;

namespace {

constexpr int64_t kIn = 8, kHidden = 32, kOut = 2, kBlocks = 2, kSamples = 1024;

// x + W2 relu(W1 layer_norm(x) + b1) + b2: a pre-norm residual block.
class ResidualBlock : public nn::Module {
 public:
  ResidualBlock(int64_t dim, Generator& gen) {
    ln_w_ = register_parameter("ln.weight", ops::full({dim}, 1.0));
    ln_b_ = register_parameter("ln.bias", ops::zeros({dim}));
    w1_ = register_parameter("fc1.weight", ops::randn({dim, 2 * dim}, gen, DType::kF32, 0,
                                                      1.0 / std::sqrt(double(dim))));
    b1_ = register_parameter("fc1.bias", ops::zeros({2 * dim}));
    w2_ = register_parameter("fc2.weight", ops::randn({2 * dim, dim}, gen, DType::kF32, 0,
                                                      0.5 / std::sqrt(2.0 * double(dim))));
    b2_ = register_parameter("fc2.bias", ops::zeros({dim}));
  }
  // Parameters are handles: prepare() moves them into flat buffers and the handles follow.
  Tensor forward(const Tensor& x) const {
    Tensor h = relu(linear(layer_norm(x, ln_w_, ln_b_), w1_, b1_));
    return add(x, linear(h, w2_, b2_));
  }

 private:
  nn::Parameter ln_w_, ln_b_, w1_, b1_, w2_, b2_;
};

class ResidualMLP : public nn::Module {
 public:
  explicit ResidualMLP(Generator& gen) {
    w_in_ = register_parameter(
        "in.weight", ops::randn({kIn, kHidden}, gen, DType::kF32, 0, 1.0 / std::sqrt(double(kIn))));
    b_in_ = register_parameter("in.bias", ops::zeros({kHidden}));
    // "blocks.0", "blocks.1", ...
    blocks_ = &register_module("blocks", std::make_unique<nn::ModuleList<ResidualBlock>>());
    for (int64_t i = 0; i < kBlocks; ++i) {
      blocks_->append(std::make_unique<ResidualBlock>(kHidden, gen));
    }
    w_out_ = register_parameter("out.weight", ops::randn({kHidden, kOut}, gen, DType::kF32, 0,
                                                         1.0 / std::sqrt(double(kHidden))));
    b_out_ = register_parameter("out.bias", ops::zeros({kOut}));
  }
  // x [B, kIn] -> [B, kOut]
  Tensor forward(const Tensor& x) const {
    Tensor h = linear(x, w_in_, b_in_);
    for (const ResidualBlock* block : blocks_->items()) h = block->forward(h);
    return linear(h, w_out_, b_out_);
  }
  // Mean squared error over the batch's rows and outputs.
  Tensor loss(const Tensor& x, const Tensor& y) const {
    Tensor d = sub(forward(x), y);
    return mean(mul(d, d));
  }

 private:
  nn::Parameter w_in_, b_in_, w_out_, b_out_;
  nn::ModuleList<ResidualBlock>* blocks_;
};

// The data set: x ~ N(0, 1), y = tanh(x A) B with a fixed random teacher (A, B).
struct Dataset {
  Tensor x, y;
  explicit Dataset(uint64_t seed) {
    Generator gen(seed);
    x = ops::randn({kSamples, kIn}, gen);
    Tensor a = ops::randn({kIn, 16}, gen, DType::kF32, 0, 0.5);
    Tensor b = ops::randn({16, kOut}, gen);
    y = matmul(tanh(matmul(x, a)), b);
  }
};

struct Args {
  int zero_stage = 0;
  int64_t steps = 12, accum = 2, global_batch = 32;
  double lr = 1e-2;
  uint64_t seed = 7;
  std::string ckpt;
  int64_t save_every = 0;
  bool resume = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      HF_CHECK_INPUT(i + 1 < argc, k, " needs a value");
      return argv[++i];
    };
    if (k == "--zero-stage") {
      a.zero_stage = std::stoi(value());
    } else if (k == "--steps") {
      a.steps = std::stoll(value());
    } else if (k == "--accum") {
      a.accum = std::stoll(value());
    } else if (k == "--global-batch") {
      a.global_batch = std::stoll(value());
    } else if (k == "--lr") {
      a.lr = std::stod(value());
    } else if (k == "--seed") {
      a.seed = std::stoull(value());
    } else if (k == "--ckpt") {
      a.ckpt = value();
    } else if (k == "--save-every") {
      a.save_every = std::stoll(value());
    } else if (k == "--resume") {
      a.resume = true;
    } else {
      HF_CHECK_INPUT(false, "unknown argument ", k,
                     " (see the comment at the top of embed_regression.cpp)");
    }
  }
  HF_CHECK_INPUT(
      a.global_batch > 0 && a.global_batch % a.accum == 0 && kSamples % a.global_batch == 0,
      "--global-batch ", a.global_batch, " must divide ", kSamples,
      " and be a multiple of --accum ", a.accum);
  HF_CHECK_INPUT(a.ckpt.empty() == (a.save_every == 0 && !a.resume),
                 "--save-every and --resume need --ckpt, and --ckpt needs one of them");
  return a;
}

int run(const Args& args) {
  Accelerator acc({.zero_stage = args.zero_stage,
                   .grad_accum_steps = args.accum,
                   .bucket_mb = 0.002,  // tiny units, so even this model has several
                   .timeout_s = 60,
                   .seed = args.seed});
  const Dataset data(args.seed);
  // Each rank initialises differently on purpose: prepare() gives every rank rank 0's values.
  Generator init(args.seed + 1000 * static_cast<uint64_t>(acc.rank()) + 1);
  ResidualMLP model(init);
  optim::Optimizer& opt = acc.prepare(model, [&](std::vector<optim::ParamRef> params) {
    return std::make_unique<optim::AdamW>(std::move(params),
                                          optim::AdamWOptions{.lr = args.lr, .weight_decay = 0.01});
  });
  if (args.resume) {
    // The newest checkpoint that loads; each rank reads and checks only its own files.
    if (auto step = acc.load_latest_state(args.ckpt)) {
      if (acc.is_main_process())
        std::printf("resumed at step %lld\n", static_cast<long long>(*step));
    }
  }

  const int64_t micro_rows = args.global_batch / args.accum;  // over all ranks
  double first = 0, last = 0;
  int64_t steps_run = 0;
  while (acc.step_count() < args.steps) {
    // A random window of the data set per step, from the accelerator's generator (the same on
    // every rank, and restored with the state).
    const uint64_t counter = acc.generator().advance(1);
    const int64_t start =
        static_cast<int64_t>(philox4x32(args.seed, counter)[0] % (kSamples / args.global_batch)) *
        args.global_batch;
    double loss_sum = 0;
    for (int64_t m = 0; m < args.accum; ++m) {
      const IndexRange mine = acc.shard(micro_rows);  // this rank's rows of the micro-step
      const int64_t row = start + m * micro_rows + mine.begin;
      Tensor x = ops::narrow(data.x, 0, row, mine.size());
      Tensor y = ops::narrow(data.y, 0, row, mine.size());
      Tensor loss = model.loss(x, y);
      loss_sum += acc.mean_across_ranks(loss);
      acc.backward(loss);
    }
    HF_CHECK(acc.sync_gradients(), "the window's last backward synchronises the gradients");
    const double grad_norm = acc.clip_grad_norm(1.0);
    opt.set_lr(args.lr);  // a schedule would set it from acc.step_count() here
    acc.step();
    const double loss = loss_sum / static_cast<double>(args.accum);
    if (steps_run++ == 0) first = loss;
    last = loss;
    acc.log({{"loss", loss}, {"grad_norm", grad_norm}});
    if (args.save_every > 0 && acc.step_count() % args.save_every == 0) {
      const std::string dir = acc.save_state(args.ckpt);
      if (acc.is_main_process()) std::printf("saved %s\n", dir.c_str());
    }
    // SIGTERM/SIGUSR1/Ctrl-C on any rank (a Slurm time limit or preemption): every rank sees it
    // at the same step; save and exit 3, as hfrun itself does, so a job script can requeue.
    if (const int sig = acc.stop_requested(); sig != 0 && acc.step_count() < args.steps) {
      if (!args.ckpt.empty()) {
        const std::string dir = acc.save_state(args.ckpt);
        if (acc.is_main_process())
          std::printf("stopped on signal %d: saved %s\n", sig, dir.c_str());
      }
      return hfrun::kExitStopped;
    }
  }
  if (acc.is_main_process() && steps_run > 0) {
    std::printf("%d rank(s), zero_stage %d: loss %.6f -> %.6f\n", acc.world(), args.zero_stage,
                first, last);
  }
  if (steps_run >= 2 && !(last < first)) {
    if (acc.is_main_process()) std::fprintf(stderr, "error: the loss did not fall\n");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const hfrun::Error& e) {
    std::fprintf(stderr, "embed_regression: %s\n", e.what());
    return e.kind() == hfrun::ErrorKind::kInvalidInput ? 2 : 1;
  } catch (const std::invalid_argument& e) {  // std::stoi and friends: a malformed number
    std::fprintf(stderr, "embed_regression: bad number in the arguments (%s)\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "embed_regression: %s\n", e.what());
    return 1;
  }
}
