// What the Trainer does differently per task (CONTRACT.md `task`): where its batches come from,
// the loss one micro step backpropagates, and evaluation. causal_lm trains on token windows
// (data/loader.h); sft, sequence_classification and masked_lm on padded batches of records
// (data/task_loader.h).
//
// Token tasks with records (sft, masked_lm) weigh every counted target of the global batch the
// same: a micro batch with c of the step's N counted targets backpropagates its mean
// cross-entropy times c * A * R / N (A micro steps, R ranks), so the Accelerator's average over
// micro steps and ranks is the step's summed cross-entropy over N. sequence_classification
// averages over the step's records (every micro batch has B of them).
#pragma once

#include <cstdint>
#include <memory>

#include "data/loader.h"
#include "data/tokenizer/tokenizer.h"
#include "models/model.h"
#include "train/accelerator.h"
#include "train/config.h"

namespace hfrun::train {

// The task a run trains: config.task, else the model type's default.
nn::Task model_task(const TrainConfig& config, const std::string& model_type);
// Whether config.task is sft.
bool is_sft(const TrainConfig& config);

struct MicroStep {
  Tensor loss;       // what to backpropagate (weighted as above)
  double value = 0;  // its value: the sum over micro steps and ranks, / (A * R), is the step loss
};

struct Evaluation {
  double loss = 0;
  double accuracy = -1;  // sequence_classification (not regression)
  double f1 = -1;        // two labels, class 1 positive
};

class TaskData {
 public:
  virtual ~TaskData() = default;
  virtual data::ResumableLoader& loader() = 0;
  // The next micro batch's forward and loss on `model` (not its backward).
  virtual MicroStep micro_step(nn::Model& model, Device device) = 0;
  // Tokens (padding excluded) the last optimizer step trained on, over every rank.
  virtual int64_t step_tokens() const = 0;
  virtual bool has_validation() const = 0;
  // Every validation sample once, split over the data-parallel ranks (collective).
  virtual Evaluation evaluate(nn::Model& model, Accelerator& acc) = 0;
  // Seconds micro_step() waited for the loader's batches (the data share of the time split).
  double data_seconds() const { return data_seconds_; }

 protected:
  double data_seconds_ = 0;
};

// The task's data for `model` (its labels for sequence classification), sharded by `acc`.
std::unique_ptr<TaskData> make_task_data(const TrainConfig& config, const data::Tokenizer* tok,
                                         const nn::Model& model, Accelerator& acc);

}  // namespace hfrun::train
