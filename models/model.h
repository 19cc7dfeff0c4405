// The interface every model implements, whatever its family and task: a module tree with HF's
// parameter names, its Hugging Face identity (model_type, the transformers class, config.json),
// the task's outputs and loss of one micro batch, and the checks the trainer makes before it
// runs one. The trainer, the Accelerator, checkpoints and export use only this; causal LMs add
// generation (models/causal_lm.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/labels.h"
#include "nn/block.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "tensor/random.h"

namespace hfrun::nn {

// What a model is trained for (CONTRACT.md `task`; sft trains a causal LM).
enum class Task { kCausalLM, kMaskedLM, kSequenceClassification };
// "causal_lm", "masked_lm", "sequence_classification".
const char* task_name(Task task);

// One micro batch as a model reads it. Rows are padded on the right; positions count from 0
// at each row's first token.
struct ModelInputs {
  ModelInputs() = default;
  ModelInputs(Tensor ids_, Tensor type_ids_ = Tensor(), Tensor lengths_ = Tensor())  // NOLINT
      : ids(std::move(ids_)), type_ids(std::move(type_ids_)), lengths(std::move(lengths_)) {}

  Tensor ids;       // i64 [B, T]
  Tensor type_ids;  // i64 [B, T] token types (BERT's sentence A / B); undefined: all 0
  Tensor lengths;   // i64 [B] tokens before each row's padding, on the model's device;
                    // undefined: no padding
};

class Model : public Module {
 public:
  explicit Model(uint64_t seed) : dropout_gen_(seed ^ 0x9e3779b97f4a7c15ull) {}

  // HF's model_type ("gpt2", "llama", "mistral", "qwen2", "qwen3", "bert").
  virtual std::string model_type() const = 0;
  // The transformers class these weights are ("LlamaForCausalLM", "BertForMaskedLM", ...).
  virtual std::string architecture() const = 0;
  virtual Task task() const = 0;
  // config.json text that transformers' from_pretrained loads with this model's weights.
  virtual std::string config_json() const = 0;
  virtual int64_t vocab_size() const = 0;
  // The context the model was configured for (n_positions, max_position_embeddings).
  virtual int64_t max_positions() const = 0;
  // Throws an invalid-input error (naming `source` and the config key) when sequences of T
  // tokens cannot be run (learned positions end at max_positions()).
  virtual void check_sequence_length(int64_t T, const std::string& source) const = 0;
  // Throws an invalid-input error naming the config key when the model cannot be split over T
  // tensor-parallel ranks (heads, KV heads, MLP width not divisible by T).
  virtual void check_tensor_parallel(int T) const = 0;
  // Multiply-adds per token of the forward's GEMMs with a T-token context (for MFU: 6 x this
  // per trained token is the usual estimate).
  virtual double matmul_flops_per_token(int64_t T) const = 0;
  // Other names a checkpoint may store parameter `name` under (GPT-2's without "transformer.",
  // BERT's LayerNorm gamma/beta, a base model's names without the task model's prefix).
  virtual std::vector<std::string> checkpoint_aliases(const std::string& /*name*/) const {
    return {};
  }
  // Parameters a pretrained checkpoint may lack and that then keep their initialisation, as
  // transformers' from_pretrained does for a task head over a base model's weights (BERT's
  // classifier and pooler, a decoder's score head).
  virtual bool may_be_newly_initialized(const std::string& /*name*/) const { return false; }
  // sequence_classification: the labels (num_labels, id2label, regression or not); null for
  // other tasks.
  virtual const LabelConfig* labels() const { return nullptr; }

  // The task's outputs: logits [B, T, V] for token tasks (f32; this rank's vocabulary slice
  // under tensor parallelism), [B, num_labels] for sequence classification (f32).
  Tensor forward(const ModelInputs& in) {
    return hooked([&] { return outputs(in); });
  }
  // The task's loss of one micro batch:
  //   causal_lm, masked_lm: targets i64 [B, T], -100 not counted; the mean cross-entropy of the
  //     counted targets (the whole vocabulary's under tensor parallelism); NaN when none counts,
  //     as torch's mean over nothing (the trainer takes a zero loss for such a batch)
  //   sequence_classification: targets i64 [B] class ids (mean cross-entropy), or f32 [B] for
  //     regression (num_labels 1: mean squared error, transformers' "regression" problem type)
  Tensor loss(const ModelInputs& in, const Tensor& targets);
  // Whether loss() of a token task takes the model's token_loss(): the final hidden states of
  // the positions whose target counts, and only those, through the output layer (a decoder
  // whose output layer is known, BERT's masked LM), instead of the logits of every position.
  // Prompts (SFT), padding and masked LM's unmasked positions then cost the head nothing.
  virtual bool has_token_loss() const { return false; }
  // Whether that loss over `rows` counted rows is fused in the output layer, so that no
  // [rows, V] logits are made (ParallelLayer::fuses_loss: a whole layer whose device's backend
  // takes the blocked loss for the GEMMs' dtype and that many logits; HFRUN_FUSED_LOSS=1 / 0
  // decides where set).
  virtual bool fuses_token_loss(int64_t /*rows*/) const { return false; }

  // Dropout's random stream (saved and restored with checkpoints).
  Generator& dropout_generator() { return dropout_gen_; }

 protected:
  virtual Tensor outputs(const ModelInputs& in) = 0;
  // Token tasks: the layer that produces the logits (an output Linear, or the tied input
  // Embedding), for the vocabulary-parallel cross-entropy; null when it is never split.
  virtual const ParallelLayer* output_layer() const { return nullptr; }
  // The token loss of the counted positions' final hidden states (has_token_loss()), inside the
  // same forward hook as outputs().
  virtual Tensor token_loss(const ModelInputs& in, const Tensor& targets);
  // Checks ids (and type_ids, lengths when given) for a forward; returns T.
  int64_t check_inputs(const ModelInputs& in) const;

 private:
  Generator dropout_gen_;
};

// A Linear [out, in] (nn.Linear's layout) with weights normal(0, std) drawn from `gen` and a zero
// bias (none when !bias): transformers' _init_weights for most families.
std::unique_ptr<Linear> normal_linear(int64_t in, int64_t out, bool bias, Generator& gen,
                                      double std);

// Positions [start, start + T) as an i64 tensor on `device`.
Tensor positions(int64_t start, int64_t T, Device device);

// The mean cross-entropy of token logits [..., V] against targets [...] (-100 not counted):
// the vocabulary-parallel one where `head` (the layer that made them) is split, so that it
// covers the whole vocabulary.
Tensor logits_loss(const Tensor& logits, const Tensor& targets, const ParallelLayer* head);

// The rows of hidden states x [..., C] whose target in targets [...] counts (is not -100), as
// [M, C] (a gather whose backward adds each row's gradient back; x itself, flattened, when every
// target counts) with their targets [M]. When none counts, the first row with its ignored
// target: the loss of that is cross_entropy's of nothing counted, at the cost of one row.
struct CountedRows {
  Tensor x;
  Tensor targets;
};
CountedRows counted_rows(const Tensor& x, const Tensor& targets);

}  // namespace hfrun::nn
