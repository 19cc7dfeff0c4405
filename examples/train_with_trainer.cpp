// Embedding hfrun's trainer: the same loop `hfrun CONFIG.yaml` runs, driven step by step by a
// program (the way Accelerate users write their own loop). Reads a train.yaml, takes steps,
// prints the loss, evaluates, and leaves metrics/checkpoints/export to the caller.
//
//   train_with_trainer CONFIG.yaml [--set key.path=value ...]
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "hfrun/hfrun.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: train_with_trainer CONFIG.yaml [--set key.path=value ...]\n");
    return 2;
  }
  std::vector<std::string> overrides;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--set") != 0) {
      std::fprintf(stderr, "train_with_trainer: unknown option %s\n", argv[i]);
      return 2;
    }
    overrides.push_back(argv[i + 1]);
  }
  try {
    hfrun::train::TrainConfig cfg = hfrun::train::TrainConfig::load(argv[1], overrides);
    hfrun::train::Trainer trainer(cfg);  // tokenizer, data, model, optimizer, schedule
    std::printf("%lld parameters\n", static_cast<long long>(trainer.num_parameters()));
    while (trainer.steps_done() < cfg.train.max_steps) {
      hfrun::train::StepMetrics m = trainer.step();  // accumulation, clipping, LR, update
      std::printf("step %lld  loss %.4f  lr %.2e  grad_norm %.3f\n", static_cast<long long>(m.step),
                  m.loss, m.lr, m.grad_norm);
    }
    if (!cfg.data.val.empty()) std::printf("val_loss %.4f\n", trainer.evaluate());
    return 0;
  } catch (const hfrun::Error& e) {
    std::fprintf(stderr, "train_with_trainer: %s\n", e.what());
    return e.kind() == hfrun::ErrorKind::kInvalidInput ? 2 : 1;
  }
}
