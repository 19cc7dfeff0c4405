// BERT with Hugging Face semantics and names, as BertForMaskedLM and
// BertForSequenceClassification:
//
//   x = LayerNorm(word_embeddings[ids] + token_type_embeddings[type_ids] + position_embeddings)
//   per layer (post-LN):  a = LayerNorm(x + dense(self_attention(x)))       attention.output
//                         x = LayerNorm(a + dense(act(intermediate(a))))    output
//   masked LM:       logits = decoder(LayerNorm(act(dense(x)))) + bias, decoder tied to
//                    word_embeddings                                     (cls.predictions)
//   classification:  logits = classifier(tanh(pooler.dense(x[:, 0])))
//
// Self-attention is bidirectional over the row's tokens: right padding (ModelInputs::lengths)
// is masked out of the keys, as HF's attention_mask does. Dropout where BERT has it
// (embeddings, attention probabilities, each sublayer's output, before the classifier). The
// word embedding row of pad_token_id gets no gradient from the lookup (nn.Embedding's
// padding_idx).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/bert/config.h"
#include "models/model.h"

namespace hfrun::nn {

class BertBody;
class BertMlmHead;

class Bert : public Model {
 public:
  // task: kMaskedLM or kSequenceClassification. Linear and embedding weights normal(0,
  // initializer_range), biases 0, LayerNorms 1 and 0, pad_token_id's embedding row 0, from
  // `seed` (transformers' _init_weights).
  Bert(const BertConfig& config, Task task, uint64_t seed = 0);
  ~Bert() override;

  const BertConfig& config() const { return config_; }

  std::string model_type() const override { return "bert"; }
  std::string architecture() const override;
  Task task() const override { return task_; }
  std::string config_json() const override { return config_.to_json(architecture()); }
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t max_positions() const override { return config_.max_position_embeddings; }
  void check_sequence_length(int64_t T, const std::string& source) const override;
  void check_tensor_parallel(int T) const override;
  double matmul_flops_per_token(int64_t T) const override;
  // LayerNorm gamma/beta (older checkpoints), a BertModel's names without "bert.", and the
  // MLM bias stored as cls.predictions.decoder.bias.
  std::vector<std::string> checkpoint_aliases(const std::string& name) const override;
  // The task head (classifier, cls.predictions) and the pooler.
  bool may_be_newly_initialized(const std::string& name) const override;
  // Masked LM: the masked positions only through the head, and the decoder (the tied word
  // embeddings, plus cls.predictions.bias) takes its loss without the logits where it fuses it.
  bool has_token_loss() const override { return mlm_ != nullptr; }
  bool fuses_token_loss(int64_t rows) const override;
  const LabelConfig* labels() const override {
    return task_ == Task::kSequenceClassification ? &config_.labels : nullptr;
  }
  std::vector<Module*> blocks() override;
  // Megatron's split of each layer: query, key, value and intermediate column-parallel,
  // attention.output.dense and output.dense row-parallel; embeddings and heads replicated.
  TensorParallelPlan tensor_parallel_plan() const override;

 protected:
  Tensor outputs(const ModelInputs& in) override;
  Tensor token_loss(const ModelInputs& in, const Tensor& targets) override;

 private:
  BertConfig config_;
  Task task_;
  BertBody* body_ = nullptr;    // "bert"
  BertMlmHead* mlm_ = nullptr;  // "cls" (masked LM)
  // The encoder's last hidden states [B, T, C].
  Tensor encode(const ModelInputs& in);
  Linear* classifier_ = nullptr;  // "classifier" (sequence classification)
};

}  // namespace hfrun::nn
