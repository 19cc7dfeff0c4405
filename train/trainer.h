// The training loop the CLI and embedding programs share: builds the tokenizer, data and model
// from a TrainConfig and drives an Accelerator (train/accelerator.h: the parallel layout,
// gradient synchronisation, optimizer, checkpoints and export are its) through optimizer steps
// with gradient accumulation, clipping and the LR schedule; evaluates, logs (metrics.jsonl +
// a progress line) and exports the model in Hugging Face layout (final/: config.json,
// model.safetensors, tokenizer.json). Writes resumable checkpoints every checkpoint.every steps
// and at the end, and resumes from one per checkpoint.resume with the data order, LR, dropout
// stream and metrics of an uninterrupted run.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "tensor/device.h"
#include "train/config.h"
#include "train/task_data.h"

namespace hfrun::train {

struct StepMetrics {
  int64_t step = 0;  // optimizer steps done, from 1
  double loss = 0;   // mean token cross-entropy over the step's global batch
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  double elapsed_s = 0;
  // This rank's peak memory so far (MiB): the process's resident memory on the CPU, the tensor
  // allocator's peak on a GPU.
  double peak_mem_mb = 0;
  int64_t tokens = 0;    // tokens trained on in this step (padding excluded), every rank's
  double val_loss = -1;  // >= 0 when evaluated at this step
  double val_accuracy = -1, val_f1 = -1;  // >= 0 when evaluated (sequence classification)
  // The step's loss or global gradient norm was not finite on some rank: every rank skipped
  // the update (train.max_skipped_steps); `step` is the step it would have been.
  bool skipped = false;
  std::string skip_reason;  // "loss inf on rank 1", "grad_norm nan"
  // Loss scaling (train.grad_scaler): the scale this step's backward used (0 without), and
  // whether the gradients overflowed at it, so that the step made no update (the step counts,
  // the data moves on, the scale backs off; as torch's GradScaler and Accelerate).
  double loss_scale = 0;
  bool update_skipped = false;
};

struct RunSummary {
  int64_t steps = 0;
  double first_loss = 0, last_loss = 0;
  double tokens_per_s = 0;
  std::string final_dir;  // empty when the run stopped early
  // Set when a stop signal (SIGTERM, SIGUSR1, SIGINT; see common/stop_signals.h) reached any
  // rank: the run stopped after `steps`, with that step's checkpoint committed and no export.
  int stop_signal = 0;
  std::string last_checkpoint;  // the newest checkpoint this run committed ("" if none)
  // The run resumed at train.max_steps with final/ already exported: nothing was trained or
  // written (steps is max_steps, tokens_per_s 0).
  bool already_complete = false;

  // What this run (this process's run(), not earlier attempts) did and where its time went,
  // for the end-of-run summary and summary.json (train/run_summary.h). Seconds on this rank.
  std::string output_dir, device;
  int world = 1;
  int64_t steps_run = 0;      // optimizer steps this run took
  int64_t skipped_steps = 0;  // non-finite steps skipped
  // Steps (this run) whose update loss scaling skipped: the gradients overflowed; they count
  // in steps_run.
  int64_t overflow_steps = 0;
  int64_t checkpoints_saved = 0;
  int64_t tokens = 0;          // trained this run, every rank's
  double flops_per_token = 0;  // 6 x the forward's GEMM multiply-adds per token
  double wall_s = 0;           // the whole run(), setup excluded
  double steps_s = 0;          // inside optimizer steps
  double data_s = 0;           // ... waiting for batches
  double communication_s = 0;  // ... synchronising gradients, gathering parameters
  double eval_s = 0, checkpoint_s = 0, export_s = 0;
  std::vector<double> peak_mem_mb;  // every rank's peak memory (MiB), in rank order
};

class Trainer {
 public:
  explicit Trainer(TrainConfig config);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Runs to train.max_steps (resuming per checkpoint.resume), logging, evaluating,
  // checkpointing and exporting final/. on_step (optional) sees every step's metrics.
  // While it runs, SIGTERM/SIGUSR1/SIGINT ask for a graceful stop: at the next step boundary
  // every rank agrees (one rank receiving it is enough), a checkpoint of that step is committed
  // and run() returns with RunSummary::stop_signal set.
  RunSummary run(const std::function<void(const StepMetrics&)>& on_step = {});
  // One optimizer step without logging or checkpoints: LR from the schedule, grad_accum_steps
  // micro-batches, clipping, the update. For programs that drive the loop themselves and for
  // benchmarks. elapsed_s and tokens_per_s are those of this step alone.
  StepMetrics step();
  int64_t steps_done() const;
  // The model (its family's interface; this rank's part under tensor parallelism).
  const nn::Model& model() const;
  int64_t num_parameters() const;
  // Where the model trains (train.device resolved: cpu or cuda:N).
  Device device() const;
  // Data-parallel ranks (StepMetrics::tokens counts every one's).
  int data_parallel_world() const;
  // The validation loss (no gradients): mean token cross-entropy over every validation window
  // or counted target, or the mean over the validation records for sequence classification.
  double evaluate();
  // The same with accuracy and F1 where the task has them.
  Evaluation evaluate_metrics();
  // Writes the model as a Hugging Face directory (config.json, model.safetensors,
  // tokenizer.json). Collective with several ranks (parameters sharded by ZeRO-3 or split by
  // tensor parallelism are gathered); global rank 0 writes.
  void export_final(const std::string& dir);

  const TrainConfig& config() const;
  struct State;

 private:
  std::unique_ptr<State> s_;
};

}  // namespace hfrun::train
