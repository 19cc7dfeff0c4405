// The fine-tuning tasks' data (CONTRACT.md "Model families, tasks and adapters"): records read
// from .jsonl / .csv / .tsv files, tokenized once into examples, and served as padded micro
// batches in the order GlobalSampler (data/sampler.h) defines, so any world size sees the same
// global batches.
//   sft                      sft_example(prompt, completion): prompt targets are not counted
//   sequence_classification  encode_pair(text[, text_pair]) with special tokens, longest_first
//                            to seq_len; a class id (or a float target with one label)
//   masked_lm                encode(text) with special tokens, cut to seq_len; masked when it
//                            is drawn, by HF's collator rule, from the run's seed and the flat
//                            sample position (so each epoch masks anew, the same for every
//                            world size)
// Each batch also says how many targets count, and how many tokens there are, in its whole
// optimizer step (every micro batch of every rank): the trainer divides the summed token loss
// by that count, so every counted target of the global batch weighs the same.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "data/loader.h"
#include "data/records.h"
#include "data/sampler.h"
#include "data/tasks.h"
#include "data/tokenizer/tokenizer.h"

namespace hfrun::data {

enum class RecordTask { kSft, kSequenceClassification, kMaskedLM };

struct RecordTaskOptions {
  RecordTask task = RecordTask::kSft;
  int64_t seq_len = 128;
  std::string text_field = "text";
  std::string text_pair_field;  // empty: single texts
  std::string label_field = "label";
  std::string prompt_field = "prompt";
  std::string completion_field = "completion";
  double mlm_probability = 0.15;
  // sequence_classification: the model's labels (regression: one label, float targets).
  std::vector<std::pair<std::string, int64_t>> label2id;
  int64_t num_labels = 2;
  bool regression = false;
  uint64_t seed = 0;  // masked_lm draws
};

// Every record of a split, tokenized.
class TaskDataset {
 public:
  // Errors (a missing field, a label not in label2id, no [MASK] token, no end-of-text token
  // for sft) are invalid input naming the record's file:line.
  TaskDataset(const Records& records, const Tokenizer& tok, const RecordTaskOptions& options);

  int64_t size() const { return static_cast<int64_t>(examples_.size()); }
  const RecordTaskOptions& options() const { return options_; }
  // Sample i as trained at flat position `position` (masked_lm: masked by it).
  TokenExample example(int64_t sample, int64_t position) const;
  // sequence_classification: the class id / regression target of sample i.
  int64_t class_id(int64_t sample) const { return classes_[static_cast<size_t>(sample)]; }
  float target(int64_t sample) const { return targets_[static_cast<size_t>(sample)]; }
  int32_t pad_id() const { return pad_id_; }

 private:
  RecordTaskOptions options_;
  const Tokenizer* tok_;
  std::vector<TokenExample> examples_;
  std::vector<int64_t> classes_;
  std::vector<float> targets_;
  int32_t pad_id_ = 0;
  int32_t mask_id_ = -1;
};

// A padded micro batch of records.
struct TaskBatch {
  PaddedBatch batch;  // inputs, attention_mask, targets (token tasks), type_ids
  Tensor lengths;     // i64 [B]: tokens before each row's padding
  Tensor labels;      // sequence_classification: i64 [B] class ids or f32 [B] targets
  int64_t step = 0, micro_step = 0;
  std::vector<int64_t> samples;
  int64_t step_counted = 0;  // token tasks: counted targets in the whole optimizer step
  int64_t step_tokens = 0;   // tokens (padding excluded) in the whole optimizer step
};

// The batch of `samples` (drawn at flat positions `positions`, for masking).
TaskBatch make_task_batch(const TaskDataset& data, const std::vector<int64_t>& samples,
                          const std::vector<int64_t>& positions);

// Training batches: an endless stream over epochs, resumable at any micro step.
class RecordLoader : public ResumableLoader {
 public:
  RecordLoader(std::shared_ptr<const TaskDataset> data, const LoaderOptions& options);

  TaskBatch next();
  LoaderState state() const override { return state_; }
  void restore(const LoaderState& state) override;
  const BatchLayout& layout() const { return layout_; }

 private:
  // Counted targets and tokens of optimizer step `step` over every rank (cached per step).
  void step_totals(int64_t step, int64_t& counted, int64_t& tokens);

  std::shared_ptr<const TaskDataset> data_;
  LoaderOptions options_;
  BatchLayout layout_;
  GlobalSampler sampler_;
  LoaderState state_;
  int64_t totals_step_ = -1, totals_counted_ = 0, totals_tokens_ = 0;
};

// Every record once, in order: batch k of `rank` holds samples k*B*R + r*B + [0, B), clipped
// (the last batches may be short or empty, the same number of batches on every rank).
class RecordValidationLoader {
 public:
  RecordValidationLoader(std::shared_ptr<const TaskDataset> data, int64_t batch_size,
                         int64_t rank = 0, int64_t world = 1);
  int64_t num_batches() const;
  // nullopt after the last batch; an empty batch has no rows (batch.inputs undefined).
  std::optional<TaskBatch> next();

 private:
  std::shared_ptr<const TaskDataset> data_;
  int64_t batch_size_, rank_, world_;
  int64_t next_batch_ = 0;
};

}  // namespace hfrun::data
