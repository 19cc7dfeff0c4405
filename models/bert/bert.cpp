#include "models/bert/bert.h"

#include <cmath>
#include <vector>

#include "autograd/functions.h"
#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::nn {

namespace {

// BERT's hidden_act (transformers' ACT2FN names).
Tensor activation(const std::string& name, const Tensor& x) {
  if (name == "gelu") return gelu(x, /*tanh_approx=*/false);
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return gelu(x, /*tanh_approx=*/true);
  if (name == "relu") return relu(x);
  return silu(x);  // silu, swish (validated)
}

std::unique_ptr<Embedding> normal_embedding(int64_t rows, int64_t dim, Generator& gen, double std,
                                            int64_t padding_row = -1) {
  Tensor w = ops::randn({rows, dim}, gen, DType::kF32, 0.0, std);
  if (padding_row >= 0) {
    Tensor row = ops::narrow(w, 0, padding_row, 1);
    ops::fill_(row, 0.0);
  }
  return std::make_unique<Embedding>(std::move(w));
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

// embeddings: word, position and token-type embeddings, LayerNorm (HF's BertEmbeddings).
class BertEmbeddings : public Module {
 public:
  BertEmbeddings(const BertConfig& c, Generator& gen) : c_(c) {
    const double std = c.initializer_range;
    word_embeddings = &register_module(
        "word_embeddings", normal_embedding(c.vocab_size, c.hidden_size, gen, std, c.pad_token_id));
    position_embeddings_ =
        &register_module("position_embeddings",
                         normal_embedding(c.max_position_embeddings, c.hidden_size, gen, std));
    token_type_embeddings_ = &register_module(
        "token_type_embeddings", normal_embedding(c.type_vocab_size, c.hidden_size, gen, std));
    layer_norm_ =
        &register_module("LayerNorm", std::make_unique<LayerNorm>(c.hidden_size, c.layer_norm_eps));
  }

  Tensor forward(const ModelInputs& in, Generator& gen) {
    const Tensor& ids = in.ids;
    const int64_t B = ids.size(0), T = ids.size(1);
    Tensor words = word_embeddings->forward(ids);
    if (words.requires_grad()) {
      // nn.Embedding(padding_idx): the pad token's row gets no gradient from the lookup.
      const Tensor pad =
          ops::full({1}, static_cast<double>(c_.pad_token_id), ids.dtype(), ids.device());
      words = where(ops::reshape(ops::eq(ids, pad), {B, T, 1}), words.detach(), words);
    }
    const Tensor types =
        in.type_ids.defined() ? in.type_ids : ops::zeros({B, T}, DType::kI64, ids.device());
    Tensor x = add(words, token_type_embeddings_->forward(types));
    x = add(x, position_embeddings_->forward(positions(0, T, ids.device())));
    return dropout(layer_norm_->forward(x), c_.hidden_dropout_prob, is_training(), gen);
  }

  Embedding* word_embeddings;

 private:
  const BertConfig& c_;
  Embedding* position_embeddings_;
  Embedding* token_type_embeddings_;
  LayerNorm* layer_norm_;
};

// attention.self: query, key, value and bidirectional attention over the unpadded keys.
class BertSelfAttention : public Module {
 public:
  BertSelfAttention(const BertConfig& c, Generator& gen) : c_(c) {
    const int64_t C = c.hidden_size;
    query_ = &register_module("query", normal_linear(C, C, true, gen, c.initializer_range));
    key_ = &register_module("key", normal_linear(C, C, true, gen, c.initializer_range));
    value_ = &register_module("value", normal_linear(C, C, true, gen, c.initializer_range));
  }

  // x [B, T, C] -> the heads' context [B, T, heads * D] in the compute dtype (the heads this
  // rank holds under tensor parallelism).
  Tensor forward(const Tensor& x, const BlockArgs& a) {
    const int64_t B = x.size(0), T = x.size(1), D = c_.head_dim();
    const std::optional<DType> cd = compute_dtype();
    const InputCastScope shared(x);      // query, key, value read one bf16 copy of x
    auto heads = [&](const Tensor& t) {  // [B, T, h*D] -> [B, h, T, D]
      return transpose(reshape(t, {B, T, t.size(2) / D, D}), 1, 2);
    };
    Tensor q = heads(query_->forward(x, cd));
    Tensor k = heads(key_->forward(x, cd));
    Tensor v = heads(value_->forward(x, cd));
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    // attention_probs_dropout_prob drops the probabilities in training (inside the fused kernel
    // where it runs).
    const double p = is_training() ? c_.attention_probs_dropout_prob : 0.0;
    Tensor y = scaled_dot_product_attention(q, k, v, /*causal=*/false, scale, a.key_lengths, 0, p,
                                            a.dropout);
    return reshape(transpose(y, 1, 2), {B, T, y.size(1) * D});
  }

 private:
  const BertConfig& c_;
  Linear* query_;
  Linear* key_;
  Linear* value_;
};

// attention.output and output: LayerNorm(residual + dropout(dense(x))).
class BertSublayerOutput : public Module {
 public:
  BertSublayerOutput(const BertConfig& c, int64_t in, Generator& gen) : c_(c) {
    dense_ =
        &register_module("dense", normal_linear(in, c.hidden_size, true, gen, c.initializer_range));
    layer_norm_ =
        &register_module("LayerNorm", std::make_unique<LayerNorm>(c.hidden_size, c.layer_norm_eps));
  }

  Tensor forward(const Tensor& x, const Tensor& residual, const BlockArgs& a) {
    Tensor h = dense_->forward(x, residual.dtype());
    if (is_training() && a.dropout != nullptr) {
      h = dropout(h, c_.hidden_dropout_prob, true, *a.dropout);
    }
    return layer_norm_->forward(add(residual, h));
  }

 private:
  const BertConfig& c_;
  Linear* dense_;
  LayerNorm* layer_norm_;
};

class BertAttention : public Module {
 public:
  BertAttention(const BertConfig& c, Generator& gen) {
    self = &register_module("self", std::make_unique<BertSelfAttention>(c, gen));
    output =
        &register_module("output", std::make_unique<BertSublayerOutput>(c, c.hidden_size, gen));
  }
  BertSelfAttention* self;
  BertSublayerOutput* output;
};

// intermediate: act(dense(x)).
class BertIntermediate : public Module {
 public:
  BertIntermediate(const BertConfig& c, Generator& gen) : c_(c) {
    dense_ = &register_module(
        "dense", normal_linear(c.hidden_size, c.intermediate_size, true, gen, c.initializer_range));
  }
  Tensor forward(const Tensor& x) {
    return activation(c_.hidden_act, dense_->forward(x, compute_dtype()));
  }

 private:
  const BertConfig& c_;
  Linear* dense_;
};

class BertLayer : public Block {
 public:
  BertLayer(const BertConfig& c, Generator& gen) {
    attention_ = &register_module("attention", std::make_unique<BertAttention>(c, gen));
    intermediate_ = &register_module("intermediate", std::make_unique<BertIntermediate>(c, gen));
    output_ = &register_module("output",
                               std::make_unique<BertSublayerOutput>(c, c.intermediate_size, gen));
  }

 protected:
  Tensor forward(const Tensor& x, const BlockArgs& a) override {
    Tensor h = attention_->output->forward(attention_->self->forward(x, a), x, a);
    return output_->forward(intermediate_->forward(h), h, a);
  }

 private:
  BertAttention* attention_;
  BertIntermediate* intermediate_;
  BertSublayerOutput* output_;
};

class BertEncoder : public Module {
 public:
  BertEncoder(const BertConfig& c, Generator& gen) {
    layer = &register_module("layer", std::make_unique<ModuleList<BertLayer>>());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      layer->append(std::make_unique<BertLayer>(c, gen));
    }
  }
  ModuleList<BertLayer>* layer;
};

// pooler: tanh(dense(x[:, 0])).
class BertPooler : public Module {
 public:
  BertPooler(const BertConfig& c, Generator& gen) {
    dense_ = &register_module(
        "dense", normal_linear(c.hidden_size, c.hidden_size, true, gen, c.initializer_range));
  }
  Tensor forward(const Tensor& x) {
    const int64_t B = x.size(0), C = x.size(2);
    return tanh(dense_->forward(reshape(narrow(x, 1, 0, 1), {B, C})));
  }

 private:
  Linear* dense_;
};

// "bert": HF's BertModel (with the pooler for sequence classification only, as transformers
// builds BertForMaskedLM without one).
class BertBody : public Module {
 public:
  BertBody(const BertConfig& c, bool pooler, Generator& gen) {
    embeddings = &register_module("embeddings", std::make_unique<BertEmbeddings>(c, gen));
    encoder = &register_module("encoder", std::make_unique<BertEncoder>(c, gen));
    if (pooler) this->pooler = &register_module("pooler", std::make_unique<BertPooler>(c, gen));
  }
  BertEmbeddings* embeddings;
  BertEncoder* encoder;
  BertPooler* pooler = nullptr;
};

// cls.predictions.transform: LayerNorm(act(dense(x))).
class BertPredictionTransform : public Module {
 public:
  BertPredictionTransform(const BertConfig& c, Generator& gen) : c_(c) {
    dense_ = &register_module(
        "dense", normal_linear(c.hidden_size, c.hidden_size, true, gen, c.initializer_range));
    layer_norm_ =
        &register_module("LayerNorm", std::make_unique<LayerNorm>(c.hidden_size, c.layer_norm_eps));
  }
  Tensor forward(const Tensor& x) {
    return layer_norm_->forward(activation(c_.hidden_act, dense_->forward(x)));
  }

 private:
  const BertConfig& c_;
  Linear* dense_;
  LayerNorm* layer_norm_;
};

// cls.predictions: bias, transform; the decoder is the word embeddings (tied).
class BertPredictions : public Module {
 public:
  BertPredictions(const BertConfig& c, Generator& gen) {
    bias_ = register_parameter("bias", ops::zeros({c.vocab_size}));
    transform_ = &register_module("transform", std::make_unique<BertPredictionTransform>(c, gen));
  }
  Tensor forward(const Tensor& x, Embedding& decoder) {
    return add(decoder.attend(transform_->forward(x)), bias_.get());
  }
  // The loss of rows x [M, C] against targets [M]: the decoder's fused loss where it takes it
  // for M rows, else the logits' cross-entropy.
  Tensor loss(const Tensor& x, Embedding& decoder, const Tensor& targets) {
    if (!decoder.fuses_loss(x.size(0))) return cross_entropy(forward(x, decoder), targets);
    return decoder.fused_loss(transform_->forward(x), targets, bias_.get());
  }

 private:
  Parameter bias_;
  BertPredictionTransform* transform_;
};

class BertMlmHead : public Module {
 public:
  BertMlmHead(const BertConfig& c, Generator& gen) {
    predictions = &register_module("predictions", std::make_unique<BertPredictions>(c, gen));
  }
  BertPredictions* predictions;
};

Bert::Bert(const BertConfig& config, Task task, uint64_t seed)
    : Model(seed), config_(config), task_(task) {
  config_.validate("bert config");
  HF_CHECK_INPUT(task == Task::kMaskedLM || task == Task::kSequenceClassification, "bert: task ",
                 task_name(task), " is not supported (masked_lm or sequence_classification)");
  Generator gen(seed);
  const bool classify = task == Task::kSequenceClassification;
  body_ = &register_module("bert", std::make_unique<BertBody>(config_, classify, gen));
  if (classify) {
    classifier_ = &register_module(
        "classifier", normal_linear(config_.hidden_size, config_.labels.num_labels(), true, gen,
                                    config_.initializer_range));
  } else {
    mlm_ = &register_module("cls", std::make_unique<BertMlmHead>(config_, gen));
  }
}

Bert::~Bert() = default;

std::string Bert::architecture() const {
  return task_ == Task::kSequenceClassification ? "BertForSequenceClassification"
                                                : "BertForMaskedLM";
}

std::vector<Module*> Bert::blocks() {
  const auto& items = body_->encoder->layer->items();
  return {items.begin(), items.end()};
}

void Bert::check_sequence_length(int64_t T, const std::string& source) const {
  HF_CHECK_INPUT(T <= config_.max_position_embeddings, source, ": sequence length ", T,
                 " exceeds the model's max_position_embeddings ", config_.max_position_embeddings);
}

void Bert::check_tensor_parallel(int T) const {
  HF_CHECK_INPUT(config_.num_attention_heads % T == 0, "distributed.tensor_parallel ", T,
                 " must divide the model's num_attention_heads ", config_.num_attention_heads);
  HF_CHECK_INPUT(config_.intermediate_size % T == 0, "distributed.tensor_parallel ", T,
                 " must divide the model's intermediate_size ", config_.intermediate_size);
}

double Bert::matmul_flops_per_token(int64_t T) const {
  const double C = static_cast<double>(config_.hidden_size);
  const double L = static_cast<double>(config_.num_hidden_layers);
  const double I = static_cast<double>(config_.intermediate_size);
  const double V = static_cast<double>(config_.vocab_size);
  // Per layer q, k, v, attention.output (4 C^2), intermediate and output (2 C I), attention's
  // two T x T products (2 T C); the MLM head's transform and decoder (C^2 + V C).
  const double head = task_ == Task::kMaskedLM ? C * C + V * C : 0.0;
  return L * (4 * C * C + 2 * C * I + 2 * static_cast<double>(T) * C) + head;
}

std::vector<std::string> Bert::checkpoint_aliases(const std::string& name) const {
  std::vector<std::string> names = {name};
  if (name == "cls.predictions.bias") names.push_back("cls.predictions.decoder.bias");
  if (starts_with(name, "bert.")) names.push_back(name.substr(5));  // a BertModel's names
  std::vector<std::string> out;
  for (const std::string& n : names) {
    if (n != name) out.push_back(n);
    for (const auto& [now, old] :
         {std::pair<std::string, std::string>{"LayerNorm.weight", "LayerNorm.gamma"},
          {"LayerNorm.bias", "LayerNorm.beta"}}) {
      if (ends_with(n, now)) out.push_back(n.substr(0, n.size() - now.size()) + old);
    }
  }
  return out;
}

bool Bert::may_be_newly_initialized(const std::string& name) const {
  return !starts_with(name, "bert.") || starts_with(name, "bert.pooler.");
}

TensorParallelPlan Bert::tensor_parallel_plan() const {
  return {{"bert.encoder.layer.*.attention.self.query", ParallelStyle::kColwise, 1},
          {"bert.encoder.layer.*.attention.self.key", ParallelStyle::kColwise, 1},
          {"bert.encoder.layer.*.attention.self.value", ParallelStyle::kColwise, 1},
          {"bert.encoder.layer.*.attention.output.dense", ParallelStyle::kRowwise, 1},
          {"bert.encoder.layer.*.intermediate.dense", ParallelStyle::kColwise, 1},
          {"bert.encoder.layer.*.output.dense", ParallelStyle::kRowwise, 1}};
}

Tensor Bert::encode(const ModelInputs& in) {
  const int64_t T = check_inputs(in);
  check_sequence_length(T, "bert");
  BertBody& b = *body_;
  Tensor x = b.embeddings->forward(in, dropout_generator());
  BlockArgs args;
  args.dropout = &dropout_generator();
  args.key_lengths = in.lengths;
  for (BertLayer* layer : b.encoder->layer->items()) x = (*layer)(x, args);
  return x;
}

bool Bert::fuses_token_loss(int64_t rows) const {
  return mlm_ != nullptr && body_->embeddings->word_embeddings->fuses_loss(rows);
}

// Only the positions whose target counts (about mlm_probability of them) reach the MLM head,
// whose rows are independent: the loss and every gradient are those of the whole head (an
// ignored row adds to neither), at that fraction of its cost. transformers computes every
// position's logits.
Tensor Bert::token_loss(const ModelInputs& in, const Tensor& targets) {
  const CountedRows r = counted_rows(encode(in), targets);
  return mlm_->predictions->loss(r.x, *body_->embeddings->word_embeddings, r.targets);
}

Tensor Bert::outputs(const ModelInputs& in) {
  Tensor x = encode(in);
  BertBody& b = *body_;
  if (mlm_ != nullptr) return mlm_->predictions->forward(x, *b.embeddings->word_embeddings);
  Tensor pooled = b.pooler->forward(x);
  pooled = dropout(pooled, config_.classifier_dropout_prob(), is_training(), dropout_generator());
  return classifier_->forward(pooled, DType::kF32);
}

}  // namespace hfrun::nn
