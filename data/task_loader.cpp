#include "data/task_loader.h"

#include <algorithm>

#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::data {

TaskDataset::TaskDataset(const Records& records, const Tokenizer& tok,
                         const RecordTaskOptions& options)
    : options_(options), tok_(&tok) {
  const RecordTaskOptions& o = options_;
  HF_CHECK_INPUT(o.seq_len >= 1, "data.seq_len ", o.seq_len, " must be at least 1");
  const SpecialTokens& st = tok.special_tokens();
  pad_id_ = st.pad.value_or(tok.eot_id().value_or(0));
  std::optional<int32_t> eos;
  if (o.task == RecordTask::kSft) {
    eos = tok.eot_id();
    HF_CHECK_INPUT(eos.has_value(),
                   "sft: the tokenizer has no end-of-text token to end each completion with "
                   "(tokenizer_config.json's eos_token, or <|endoftext|>, </s>, ...)");
  }
  if (o.task == RecordTask::kMaskedLM) {
    const std::optional<int32_t> mask = mask_token_id(tok);
    HF_CHECK_INPUT(mask.has_value(),
                   "masked_lm: the tokenizer has no mask token (tokenizer_config.json's "
                   "mask_token, [MASK] or <mask>)");
    mask_id_ = *mask;
  }
  examples_.reserve(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    TokenExample e;
    switch (o.task) {
      case RecordTask::kSft:
        e = sft_example(tok, records.require(i, o.prompt_field),
                        records.require(i, o.completion_field), *eos, o.seq_len);
        HF_CHECK_INPUT(!e.inputs.empty(), records.origin(i),
                       ": the record has no token to train on (empty prompt and completion)");
        break;
      case RecordTask::kSequenceClassification: {
        std::optional<std::string_view> pair;
        if (!o.text_pair_field.empty()) pair = records.require(i, o.text_pair_field);
        Encoding enc = tok.encode_pair(records.require(i, o.text_field), pair,
                                       /*add_special_tokens=*/true, static_cast<size_t>(o.seq_len));
        HF_CHECK_INPUT(!enc.ids.empty(), records.origin(i), ": the record encodes to no token");
        e.inputs = std::move(enc.ids);
        e.type_ids = std::move(enc.type_ids);
        if (o.regression) {
          targets_.push_back(static_cast<float>(regression_target(records, i, o.label_field)));
        } else {
          classes_.push_back(class_label(records, i, o.label_field, o.label2id, o.num_labels));
        }
        break;
      }
      case RecordTask::kMaskedLM: {
        Encoding enc = tok.encode_pair(records.require(i, o.text_field), std::nullopt,
                                       /*add_special_tokens=*/true, static_cast<size_t>(o.seq_len));
        HF_CHECK_INPUT(!enc.ids.empty(), records.origin(i), ": the record encodes to no token");
        e.inputs = std::move(enc.ids);
        break;
      }
    }
    examples_.push_back(std::move(e));
  }
}

TokenExample TaskDataset::example(int64_t sample, int64_t position) const {
  const TokenExample& e = examples_[static_cast<size_t>(sample)];
  if (options_.task != RecordTask::kMaskedLM) return e;
  return mask_tokens(e.inputs, *tok_, mask_id_, options_.mlm_probability, options_.seed, position);
}

TaskBatch make_task_batch(const TaskDataset& data, const std::vector<int64_t>& samples,
                          const std::vector<int64_t>& positions) {
  TaskBatch b;
  b.samples = samples;
  if (samples.empty()) return b;
  std::vector<TokenExample> examples;
  std::vector<int64_t> lengths;
  for (size_t i = 0; i < samples.size(); ++i) {
    examples.push_back(data.example(samples[i], positions[i]));
    lengths.push_back(static_cast<int64_t>(examples.back().inputs.size()));
  }
  b.batch = pad_examples(examples, data.pad_id());
  const auto rows = static_cast<int64_t>(samples.size());
  b.lengths = ops::from_ints(lengths, {rows});
  if (data.options().task == RecordTask::kSequenceClassification) {
    if (data.options().regression) {
      std::vector<float> t;
      for (int64_t s : samples) t.push_back(data.target(s));
      b.labels = ops::from_vector(t, {rows});
    } else {
      std::vector<int64_t> c;
      for (int64_t s : samples) c.push_back(data.class_id(s));
      b.labels = ops::from_ints(c, {rows});
    }
  }
  return b;
}

RecordLoader::RecordLoader(std::shared_ptr<const TaskDataset> data, const LoaderOptions& options)
    : data_(std::move(data)),
      options_(options),
      layout_{options.micro_batch, options.grad_accum, options.world},
      sampler_(data_->size(), options.shuffle, options.seed) {
  layout_.validate();
  HF_CHECK_INPUT(data_->size() > 0, "the training data has no records");
  HF_CHECK_INPUT(options.rank >= 0 && options.rank < options.world, "data-parallel rank ",
                 options.rank, " out of range for world size ", options.world);
}

void RecordLoader::restore(const LoaderState& state) {
  check_loader_state(state, layout_);
  state_ = state;
}

void RecordLoader::step_totals(int64_t step, int64_t& counted, int64_t& tokens) {
  if (step != totals_step_) {
    totals_counted_ = totals_tokens_ = 0;
    const int64_t g = layout_.global_batch();
    for (int64_t k = step * g; k < (step + 1) * g; ++k) {
      const TokenExample e = data_->example(sampler_.sample_at(k), k);
      totals_tokens_ += static_cast<int64_t>(e.inputs.size());
      for (int32_t t : e.targets) totals_counted_ += t != kIgnoreTarget;
    }
    totals_step_ = step;
  }
  counted = totals_counted_;
  tokens = totals_tokens_;
}

TaskBatch RecordLoader::next() {
  std::vector<int64_t> samples, positions;
  const int64_t first = layout_.position(state_.step, state_.micro_step, options_.rank);
  for (int64_t k = first; k < first + layout_.micro_batch; ++k) {
    samples.push_back(sampler_.sample_at(k));
    positions.push_back(k);
  }
  TaskBatch b = make_task_batch(*data_, samples, positions);
  b.step = state_.step;
  b.micro_step = state_.micro_step;
  step_totals(state_.step, b.step_counted, b.step_tokens);
  advance_loader_state(state_, layout_);
  return b;
}

RecordValidationLoader::RecordValidationLoader(std::shared_ptr<const TaskDataset> data,
                                               int64_t batch_size, int64_t rank, int64_t world)
    : data_(std::move(data)), batch_size_(batch_size), rank_(rank), world_(world) {
  HF_CHECK_INPUT(batch_size >= 1 && world >= 1 && rank >= 0 && rank < world,
                 "validation loader: bad layout (batch ", batch_size, ", rank ", rank, " of ",
                 world, ")");
}

int64_t RecordValidationLoader::num_batches() const {
  const int64_t per_batch = batch_size_ * world_;
  return (data_->size() + per_batch - 1) / per_batch;
}

std::optional<TaskBatch> RecordValidationLoader::next() {
  if (next_batch_ >= num_batches()) return std::nullopt;
  const int64_t first = next_batch_ * batch_size_ * world_ + rank_ * batch_size_;
  const int64_t last = std::min(first + batch_size_, data_->size());
  std::vector<int64_t> samples;
  for (int64_t i = first; i < last; ++i) samples.push_back(i);
  ++next_batch_;
  // Validation draws masks at the sample's own index (the same masks at every evaluation).
  TaskBatch b = make_task_batch(*data_, samples, samples);
  b.step = next_batch_ - 1;
  return b;
}

}  // namespace hfrun::data
