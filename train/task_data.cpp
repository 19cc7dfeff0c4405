#include "train/task_data.h"

#include <algorithm>
#include <cmath>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "common/error.h"
#include "common/stopwatch.h"
#include "data/dataset.h"
#include "data/documents.h"
#include "data/records.h"
#include "data/task_loader.h"
#include "models/registry.h"
#include "tensor/ops.h"

namespace hfrun::train {

nn::Task model_task(const TrainConfig& c, const std::string& model_type) {
  if (c.task.empty()) return nn::default_task(model_type);
  if (c.task == "masked_lm") return nn::Task::kMaskedLM;
  if (c.task == "sequence_classification") return nn::Task::kSequenceClassification;
  return nn::Task::kCausalLM;  // causal_lm, sft
}

bool is_sft(const TrainConfig& c) {
  return c.task == "sft";
}

namespace {

// ZeRO-3 gathers parameters inside every forward, a collective: a rank whose batch is empty
// still runs one so the other ranks' gathers are matched.
bool forwards_are_collective(Accelerator& acc) {
  return acc.options().zero_stage == 3 && acc.world() > 1;
}

// A zero loss of a token batch in which no target counts, reaching every parameter (the
// backward and its gradient synchronisation still run), through the path a counted batch's loss
// takes: where the model has its token loss (the counted rows' head only), the loss of one
// counted target times 0 (finite, its gradients zero), so that the head sees one row; else the
// logits' sum times 0.
Tensor zero_token_loss(nn::Model& model, const nn::ModelInputs& in) {
  if (!model.has_token_loss()) return mul_scalar(sum(model.forward(in)), 0.0);
  Tensor targets = ops::full(in.ids.sizes(), -100.0, DType::kI64, in.ids.device());
  Tensor first = ops::narrow(ops::narrow(targets, 0, 0, 1), 1, 0, 1);
  ops::fill_(first, 0.0);
  return mul_scalar(model.loss(in, targets), 0.0);
}

// The training order of the config (the Accelerator adds rank, world and accumulation).
data::LoaderOptions loader_options(const TrainConfig& c) {
  data::LoaderOptions lo;
  lo.seq_len = c.data.seq_len;
  lo.micro_batch = c.train.micro_batch_size;
  lo.shuffle = c.data.shuffle;
  lo.seed = c.seed;
  return lo;
}

// causal_lm on token windows.
class WindowTask : public TaskData {
 public:
  // `tok` null: the sources are token shards only (make_task_data checked).
  WindowTask(const TrainConfig& c, const data::Tokenizer* tok, Accelerator& acc) : c_(c) {
    auto encode = [tok](std::string_view text) {
      HF_CHECK(tok != nullptr, "WindowTask: text without a tokenizer");
      return tok->encode(text);
    };
    const std::optional<int32_t> eot = tok ? tok->eot_id() : std::nullopt;
    data::TokenStreamOptions so;
    so.text_field = c.data.text_field;
    train_ = std::make_shared<data::TokenStream>(c.data.train, encode, eot, so);
    train_->require_samples(c.data.seq_len);
    if (!c.data.val.empty()) {
      val_ = std::make_shared<data::TokenStream>(c.data.val, encode, eot, so);
      val_->require_samples(c.data.seq_len);
    }
    loader_ = std::make_unique<data::TokenLoader>(train_, acc.shard(loader_options(c)));
    tokens_ = c.train.micro_batch_size * c.train.grad_accum_steps * c.data.seq_len * acc.world();
  }

  data::ResumableLoader& loader() override { return *loader_; }
  int64_t step_tokens() const override { return tokens_; }
  bool has_validation() const override { return val_ != nullptr; }

  MicroStep micro_step(nn::Model& model, Device device) override {
    data::Batch b;
    {
      AddTime t(data_seconds_);
      b = loader_->next();
    }
    Tensor loss = model.loss(nn::ModelInputs(ops::to_device(b.inputs, device)),
                             ops::to_device(b.targets, device));
    return {loss, loss.item()};
  }

  Evaluation evaluate(nn::Model& model, Accelerator& acc) override {
    data::ValidationLoader val(val_, c_.data.seq_len, c_.train.micro_batch_size, acc.rank(),
                               acc.world());
    const Device device = acc.device();
    double total = 0, count = 0;
    while (auto b = val.next()) {
      const int64_t n = b->targets.numel();
      if (n == 0) {
        if (forwards_are_collective(acc)) {
          const Tensor dummy = ops::zeros({1, c_.data.seq_len}, DType::kI64, device);
          model.loss(nn::ModelInputs(dummy), dummy);
        }
        continue;
      }
      total += model
                   .loss(nn::ModelInputs(ops::to_device(b->inputs, device)),
                         ops::to_device(b->targets, device))
                   .item() *
               static_cast<double>(n);
      count += static_cast<double>(n);
    }
    total = acc.sum_across_ranks(total);
    count = acc.sum_across_ranks(count);
    return {total / std::max(count, 1.0)};
  }

 private:
  const TrainConfig& c_;
  std::shared_ptr<const data::TokenStream> train_, val_;
  std::unique_ptr<data::TokenLoader> loader_;
  int64_t tokens_ = 0;
};

nn::ModelInputs inputs_of(const data::TaskBatch& b, Device device) {
  return nn::ModelInputs(
      ops::to_device(b.batch.inputs, device),
      b.batch.type_ids.defined() ? ops::to_device(b.batch.type_ids, device) : Tensor(),
      ops::to_device(b.lengths, device));
}

// sft, sequence_classification, masked_lm on records.
class RecordTaskData : public TaskData {
 public:
  RecordTaskData(const TrainConfig& c, const data::Tokenizer& tok, const nn::Model& model,
                 Accelerator& acc)
      : c_(c), task_(model.task()), scale_(c.train.grad_accum_steps * acc.world()) {
    data::RecordTaskOptions o;
    o.task = task_ == nn::Task::kMaskedLM ? data::RecordTask::kMaskedLM
             : task_ == nn::Task::kSequenceClassification
                 ? data::RecordTask::kSequenceClassification
                 : data::RecordTask::kSft;
    o.seq_len = c.data.seq_len;
    o.text_field = c.data.text_field;
    o.text_pair_field = c.data.text_pair_field;
    o.label_field = c.data.label_field;
    o.prompt_field = c.data.prompt_field;
    o.completion_field = c.data.completion_field;
    o.mlm_probability = c.data.mlm_probability;
    o.seed = c.seed;
    if (const nn::LabelConfig* labels = model.labels()) {
      o.label2id = labels->label2id;
      o.num_labels = labels->num_labels();
      o.regression = labels->regression();
    }
    train_ = std::make_shared<data::TaskDataset>(data::Records::read(c.data.train), tok, o);
    if (!c.data.val.empty()) {
      val_ = std::make_shared<data::TaskDataset>(data::Records::read(c.data.val), tok, o);
    }
    loader_ = std::make_unique<data::RecordLoader>(train_, acc.shard(loader_options(c)));
  }

  data::ResumableLoader& loader() override { return *loader_; }
  int64_t step_tokens() const override { return tokens_; }
  bool has_validation() const override { return val_ != nullptr; }

  MicroStep micro_step(nn::Model& model, Device device) override {
    data::TaskBatch b;
    {
      AddTime t(data_seconds_);
      b = loader_->next();
    }
    tokens_ = b.step_tokens;
    const nn::ModelInputs in = inputs_of(b, device);
    if (task_ == nn::Task::kSequenceClassification) {
      Tensor loss = model.loss(in, ops::to_device(b.labels, device));
      return {loss, loss.item()};
    }
    if (b.batch.counted == 0) {
      // Nothing counts here, but the backward still runs (its gradient synchronisation is
      // collective): a zero loss that reaches every parameter.
      return {zero_token_loss(model, in), 0.0};
    }
    const double weight = static_cast<double>(b.batch.counted) * static_cast<double>(scale_) /
                          static_cast<double>(b.step_counted);
    Tensor loss = mul_scalar(model.loss(in, ops::to_device(b.batch.targets, device)), weight);
    return {loss, loss.item()};
  }

  Evaluation evaluate(nn::Model& model, Accelerator& acc) override {
    data::RecordValidationLoader val(val_, c_.train.micro_batch_size, acc.rank(), acc.world());
    const Device device = acc.device();
    const bool classify = task_ == nn::Task::kSequenceClassification;
    const bool regression = classify && model.labels()->regression();
    // loss sum, its count, correct, tp, fp, fn
    double sums[6] = {0, 0, 0, 0, 0, 0};
    while (auto b = val.next()) {
      if (b->samples.empty()) {
        if (forwards_are_collective(acc)) {
          model.forward(nn::ModelInputs(ops::zeros({1, 1}, DType::kI64, device)));
        }
        continue;
      }
      const nn::ModelInputs in = inputs_of(*b, device);
      if (!classify) {
        if (b->batch.counted == 0) {
          if (forwards_are_collective(acc)) zero_token_loss(model, in);
          continue;
        }
        const double loss = model.loss(in, ops::to_device(b->batch.targets, device)).item();
        sums[0] += loss * static_cast<double>(b->batch.counted);
        sums[1] += static_cast<double>(b->batch.counted);
        continue;
      }
      const Tensor logits = model.forward(in);
      const auto rows = static_cast<int64_t>(b->samples.size());
      const Tensor labels = ops::to_device(b->labels, device);
      const double loss =
          regression ? mean_squared_error(logits, labels) : cross_entropy(logits, labels).item();
      sums[0] += loss * static_cast<double>(rows);
      sums[1] += static_cast<double>(rows);
      if (regression) continue;
      const std::vector<float> l = ops::to_device(logits, Device::cpu()).to_vector();
      const std::vector<float> y = ops::to_dtype(b->labels, DType::kF32).to_vector();
      const int64_t k = logits.size(1);
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = l.data() + r * k;
        const auto pred = static_cast<int64_t>(std::max_element(row, row + k) - row);
        const auto truth = static_cast<int64_t>(y[static_cast<size_t>(r)]);
        sums[2] += pred == truth;
        sums[3] += pred == 1 && truth == 1;
        sums[4] += pred == 1 && truth != 1;
        sums[5] += pred != 1 && truth == 1;
      }
    }
    for (double& s : sums) s = acc.sum_across_ranks(s);
    Evaluation e;
    e.loss = sums[0] / std::max(sums[1], 1.0);
    if (classify && !regression) {
      e.accuracy = sums[2] / std::max(sums[1], 1.0);
      if (model.labels()->num_labels() == 2) {
        const double denom = 2 * sums[3] + sums[4] + sums[5];
        e.f1 = denom > 0 ? 2 * sums[3] / denom : 0.0;
      }
    }
    return e;
  }

 private:
  // Mean squared error of [B, 1] predictions against [B] targets.
  static double mean_squared_error(const Tensor& logits, const Tensor& targets) {
    const std::vector<float> p = ops::to_device(logits, Device::cpu()).to_vector();
    const std::vector<float> t = ops::to_device(targets, Device::cpu()).to_vector();
    double s = 0;
    for (size_t i = 0; i < t.size(); ++i) s += (p[i] - t[i]) * static_cast<double>(p[i] - t[i]);
    return s / static_cast<double>(std::max<size_t>(t.size(), 1));
  }

  const TrainConfig& c_;
  nn::Task task_;
  int64_t scale_;
  std::shared_ptr<const data::TaskDataset> train_, val_;
  std::unique_ptr<data::RecordLoader> loader_;
  int64_t tokens_ = 0;
};

}  // namespace

std::unique_ptr<TaskData> make_task_data(const TrainConfig& c, const data::Tokenizer* tok,
                                         const nn::Model& model, Accelerator& acc) {
  const char* how = " (tokenizer: path/tokenizer.json, or model.from_pretrained with one inside)";
  if (model.task() == nn::Task::kCausalLM && !is_sft(c)) {
    if (tok == nullptr) {
      // Token shards are already ids; text needs the tokenizer (and its end-of-text token).
      for (const auto* list : {&c.data.train, &c.data.val}) {
        for (const data::SourceFile& f : data::expand_sources(*list)) {
          HF_CHECK_INPUT(f.kind == data::SourceKind::kShard, c.source, ": ", f.path,
                         " is text: tokenizing it needs a tokenizer", how,
                         "; token shards (.bin, hfrun prepare) train without one");
        }
      }
    }
    return std::make_unique<WindowTask>(c, tok, acc);
  }
  HF_CHECK_INPUT(tok != nullptr, c.source, ": task ", c.task,
                 " reads records and needs a tokenizer", how);
  return std::make_unique<RecordTaskData>(c, *tok, model, acc);
}

}  // namespace hfrun::train
