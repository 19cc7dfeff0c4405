// A program that embeds hfrun the way Accelerate users write a loop: a tiny Llama from models/
// trained by hfrun::Accelerator on deterministic token batches, with the parallel layout, ZeRO
// stage, mixed precision and device from the command line. Prints one JSON line per step
// ({"step": S, "loss": L}, the global batch's mean loss). Driven by test_accelerator_llama.sh.
//
//   accelerator_llama [--steps N] [--zero-stage Z] [--tp T] [--accum A] [--bf16]
//                     [--device cpu|cuda|auto] [--ckpt DIR [--save-at K] [--resume]]
//                     [--save-model DIR]   (at the end: Accelerator::save_model)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/error.h"
#include "models/llama/llama.h"
#include "optim/optimizer.h"
#include "tensor/ops.h"
#include "train/accelerator.h"

using namespace hfrun;

namespace {

constexpr int64_t kRowsPerMicroStep = 8, kSeq = 16, kVocab = 97;

// Row `row` of micro-step `micro` of step `step`: ids and next-token targets from a fixed
// integer hash, the same for every layout.
void fill_row(int64_t step, int64_t micro, int64_t row, std::vector<int64_t>& ids,
              std::vector<int64_t>& targets) {
  uint64_t h = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(step * 131 + micro * 17 + row + 1);
  std::vector<int64_t> seq;
  for (int64_t t = 0; t <= kSeq; ++t) {
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    // A learnable pattern: mostly the previous token plus one.
    const int64_t prev = seq.empty() ? static_cast<int64_t>(h % kVocab) : seq.back();
    seq.push_back(h % 4 == 0 ? static_cast<int64_t>(h % kVocab) : (prev + 1) % kVocab);
  }
  ids.insert(ids.end(), seq.begin(), seq.end() - 1);
  targets.insert(targets.end(), seq.begin() + 1, seq.end());
}

}  // namespace

int main(int argc, char** argv) {
  try {
    AcceleratorOptions o;
    int64_t steps = 6, save_at = 0;
    std::string ckpt, save_model;
    bool resume = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&] {
        HF_CHECK_INPUT(i + 1 < argc, a, " needs a value");
        return std::string(argv[++i]);
      };
      if (a == "--steps")
        steps = std::stoll(next());
      else if (a == "--zero-stage")
        o.zero_stage = std::stoi(next());
      else if (a == "--tp")
        o.tensor_parallel = std::stoi(next());
      else if (a == "--accum")
        o.grad_accum_steps = std::stoll(next());
      else if (a == "--bf16")
        o.mixed_precision = "bf16";
      else if (a == "--device")
        o.device = next();
      else if (a == "--ckpt")
        ckpt = next();
      else if (a == "--save-at")
        save_at = std::stoll(next());
      else if (a == "--resume")
        resume = true;
      else if (a == "--save-model")
        save_model = next();
      else
        HF_CHECK_INPUT(false, "unknown argument ", a);
    }
    o.bucket_mb = 0.01;
    Accelerator acc(o);
    nn::LlamaConfig c;
    c.vocab_size = kVocab;
    c.hidden_size = 32;
    c.intermediate_size = 48;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.max_position_embeddings = 64;
    nn::Llama model(c, /*seed=*/11);
    acc.prepare(model, [](std::vector<optim::ParamRef> params) {
      optim::AdamWOptions a;
      a.lr = 1e-2;
      a.betas = {0.9, 0.95};
      a.weight_decay = 0.1;
      return std::make_unique<optim::AdamW>(std::move(params), a);
    });
    if (resume) {
      const auto dir = acc.latest_state(ckpt);
      HF_CHECK_INPUT(dir.has_value(), "--resume: no checkpoint under ", ckpt);
      acc.load_state(*dir);
      if (acc.is_main_process()) std::printf("resumed at step %lld\n", (long long)acc.step_count());
    }
    while (acc.step_count() < steps) {
      double loss_sum = 0;
      for (int64_t m = 0; m < o.grad_accum_steps; ++m) {
        const IndexRange rows = acc.shard(kRowsPerMicroStep);
        std::vector<int64_t> ids, targets;
        for (int64_t r = rows.begin; r < rows.end; ++r) {
          fill_row(acc.step_count(), m, r, ids, targets);
        }
        const Shape shape{rows.size(), kSeq};
        const Tensor x = ops::to_device(ops::from_ints(ids, shape), acc.device());
        const Tensor y = ops::to_device(ops::from_ints(targets, shape), acc.device());
        Tensor loss = model.loss(x, y);
        loss_sum += acc.mean_across_ranks(loss);
        acc.backward(loss);
      }
      if (acc.sync_gradients()) {
        acc.clip_grad_norm(1.0);
        acc.step();
      }
      acc.log({{"loss", loss_sum / static_cast<double>(o.grad_accum_steps)}});
      if (save_at > 0 && acc.step_count() == save_at) acc.save_state(ckpt);
    }
    if (!save_model.empty()) acc.save_model(save_model);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "accelerator_llama: %s\n", e.what());
    return e.kind() == ErrorKind::kInvalidInput ? 2 : 1;
  }
}
