#include "models/llama/llama.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::nn {

std::vector<double> rope_inverse_frequencies(const LlamaConfig& c) {
  const int64_t D = c.dim_per_head();
  std::vector<double> inv(static_cast<size_t>(D / 2));
  for (int64_t i = 0; i < D / 2; ++i) {
    inv[static_cast<size_t>(i)] =
        1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / static_cast<double>(D));
  }
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == "linear") {
    for (double& f : inv) f /= rs.factor;
  } else if (rs.type == "llama3") {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between
    // interpolated smoothly.
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor;
    const double high_wavelen = old_len / rs.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f /= rs.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        f = (1 - smooth) * f / rs.factor + smooth * f;
      }
    }
  } else if (rs.type == "yarn") {
    // YaRN (transformers' _compute_yarn_parameters): frequencies that turn fewer than beta_slow
    // times over the original context are interpolated (divided by factor), those that turn
    // more than beta_fast times kept, a linear ramp over the dimensions between.
    const double base = c.rope_theta, dim = static_cast<double>(D);
    const double orig = static_cast<double>(rs.original_max_position_embeddings > 0
                                                ? rs.original_max_position_embeddings
                                                : c.max_position_embeddings);
    const auto correction_dim = [&](double rotations) {
      return dim * std::log(orig / (rotations * 2 * std::numbers::pi)) / (2 * std::log(base));
    };
    double low = correction_dim(rs.beta_fast), high = correction_dim(rs.beta_slow);
    if (rs.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, dim - 1);
    if (low == high) high += 0.001;  // as transformers: no zero-width ramp
    for (int64_t i = 0; i < D / 2; ++i) {
      const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
      const double keep = 1 - ramp;  // the share of the unscaled (extrapolated) frequency
      double& f = inv[static_cast<size_t>(i)];
      f = (f / rs.factor) * (1 - keep) + f * keep;
    }
  }
  return inv;
}

namespace {

// The factor RoPE's cos and sin are scaled by: YaRN's attention factor (1 otherwise).
double rope_attention_factor(const LlamaConfig& c) {
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type != "yarn") return 1.0;
  if (rs.attention_factor > 0) return rs.attention_factor;
  const auto mscale = [](double scale, double m) {
    return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
  };
  if (rs.mscale > 0 && rs.mscale_all_dim > 0) {
    return mscale(rs.factor, rs.mscale) / mscale(rs.factor, rs.mscale_all_dim);
  }
  return mscale(rs.factor, 1.0);
}

}  // namespace

RopeTables rope_tables(const LlamaConfig& c, int64_t start, int64_t T, Device device) {
  const int64_t D = c.dim_per_head(), half = D / 2;
  const std::vector<double> inv = rope_inverse_frequencies(c);
  const double scale = rope_attention_factor(c);
  std::vector<float> cos(static_cast<size_t>(T * D)), sin(static_cast<size_t>(T * D));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(start + t) * inv[static_cast<size_t>(i)];
      const auto c0 = static_cast<float>(std::cos(angle) * scale);
      const auto s0 = static_cast<float>(std::sin(angle) * scale);
      // emb = cat(freqs, freqs): both halves of D use frequency i.
      for (int64_t k : {i, i + half}) {
        cos[static_cast<size_t>(t * D + k)] = c0;
        sin[static_cast<size_t>(t * D + k)] = s0;
      }
    }
  }
  return {ops::to_device(ops::from_vector(cos, {T, D}), device),
          ops::to_device(ops::from_vector(sin, {T, D}), device)};
}

// self_attn: q_proj, k_proj, v_proj, o_proj (and Qwen3's q_norm, k_norm).
class LlamaAttention : public Module {
 public:
  // `layer`: the decoder layer's index (its sliding window, if any).
  LlamaAttention(const LlamaConfig& c, int64_t layer, Generator& gen)
      : c_(c), window_(c.window_of_layer(layer)) {
    const int64_t C = c.hidden_size, D = c.dim_per_head();
    const int64_t H = c.num_attention_heads, Hkv = c.kv_heads();
    const double std = c.initializer_range;
    q_proj_ = &register_module("q_proj", normal_linear(C, H * D, c.qkv_bias(), gen, std));
    k_proj_ = &register_module("k_proj", normal_linear(C, Hkv * D, c.qkv_bias(), gen, std));
    v_proj_ = &register_module("v_proj", normal_linear(C, Hkv * D, c.qkv_bias(), gen, std));
    o_proj_ = &register_module("o_proj", normal_linear(H * D, C, c.o_bias(), gen, std));
    if (c.qk_norm()) {
      q_norm_ = &register_module("q_norm", std::make_unique<RMSNorm>(D, c.rms_norm_eps));
      k_norm_ = &register_module("k_norm", std::make_unique<RMSNorm>(D, c.rms_norm_eps));
    }
  }

  // The heads this rank holds (all without tensor parallelism) follow from the projections'
  // widths. Under mixed precision q, k, v come out in the compute dtype (as autocast gives
  // them), except that Qwen3's per-head norms read f32.
  Tensor forward(const Tensor& x, const BlockArgs& a) {
    const int64_t B = x.size(0), T = x.size(1), D = c_.dim_per_head();
    const std::optional<DType> cd = compute_dtype();
    const std::optional<DType> qk_dtype = q_norm_ ? std::optional<DType>(x.dtype()) : cd;
    const InputCastScope shared(x);      // q, k, v read one bf16 copy of x
    auto heads = [&](const Tensor& t) {  // [B, T, h*D] -> [B, T, h, D]
      return reshape(t, {B, T, t.size(2) / D, D});
    };
    Tensor q = heads(q_proj_->forward(x, qk_dtype));
    Tensor k = heads(k_proj_->forward(x, qk_dtype));
    Tensor v = transpose(heads(v_proj_->forward(x, cd)), 1, 2);  // [B, H_kv, T, D]
    if (q_norm_) {
      q = q_norm_->forward(q);
      k = k_norm_->forward(k);
    }
    q = rotary_embedding(transpose(q, 1, 2), a.rope_cos, a.rope_sin);  // [B, H, T, D]
    k = rotary_embedding(transpose(k, 1, 2), a.rope_cos, a.rope_sin);  // [B, H_kv, T, D]
    if (cd && q.dtype() != *cd) {
      q = to_dtype(q, *cd);
      k = to_dtype(k, *cd);
    }
    const int64_t H = q.size(1);
    // Grouped-query attention reads each KV head for its group of query heads in place (no
    // repeat of K, V: ops::attention groups the queries instead).
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    Tensor y;
    if (a.cache_k != nullptr) {
      Tensor k_new = ops::narrow(*a.cache_k, 2, a.cache_start, T);
      Tensor v_new = ops::narrow(*a.cache_v, 2, a.cache_start, T);
      ops::copy_(k_new, k);
      ops::copy_(v_new, v);
      const int64_t S = a.cache_start + T;
      // Causal with the offset S - T: query i sees keys [0, start + i] (the last window_ of
      // them in a sliding layer; the cache keeps every key, as HF's DynamicCache does).
      y = ops::attention(ops::contiguous(q), ops::narrow(*a.cache_k, 2, 0, S),
                         ops::narrow(*a.cache_v, 2, 0, S), /*causal=*/true, scale, Tensor(),
                         /*keep_for_backward=*/false, window_)
              .out;
    } else {
      // attention_dropout drops the probabilities in training (HF's attention dropout).
      const double p = is_training() ? c_.attention_dropout : 0.0;
      y = scaled_dot_product_attention(q, k, v, /*causal=*/true, scale, Tensor(), window_, p,
                                       a.dropout);
    }
    y = reshape(transpose(y, 1, 2), {B, T, H * D});
    return o_proj_->forward(y, x.dtype());
  }

 private:
  const LlamaConfig& c_;
  int64_t window_;  // 0: full causal attention
  Linear* q_proj_;
  Linear* k_proj_;
  Linear* v_proj_;
  Linear* o_proj_;
  RMSNorm* q_norm_ = nullptr;
  RMSNorm* k_norm_ = nullptr;
};

// mlp: down_proj(silu(gate_proj(x)) * up_proj(x)).
class LlamaMlp : public Module {
 public:
  LlamaMlp(const LlamaConfig& c, Generator& gen) {
    const int64_t C = c.hidden_size, I = c.intermediate_size;
    const double std = c.initializer_range;
    gate_proj_ = &register_module("gate_proj", normal_linear(C, I, c.mlp_bias, gen, std));
    up_proj_ = &register_module("up_proj", normal_linear(C, I, c.mlp_bias, gen, std));
    down_proj_ = &register_module("down_proj", normal_linear(I, C, c.mlp_bias, gen, std));
  }

  Tensor forward(const Tensor& x) {
    const std::optional<DType> cd = compute_dtype();
    const InputCastScope shared(x);  // gate and up read one bf16 copy of x
    Tensor h = swiglu(gate_proj_->forward(x, cd), up_proj_->forward(x, cd));
    return down_proj_->forward(h, x.dtype());
  }

 private:
  Linear* gate_proj_;
  Linear* up_proj_;
  Linear* down_proj_;
};

class LlamaBlock : public Block {
 public:
  LlamaBlock(const LlamaConfig& c, int64_t layer, Generator& gen) {
    self_attn_ = &register_module("self_attn", std::make_unique<LlamaAttention>(c, layer, gen));
    mlp_ = &register_module("mlp", std::make_unique<LlamaMlp>(c, gen));
    input_layernorm_ = &register_module("input_layernorm",
                                        std::make_unique<RMSNorm>(c.hidden_size, c.rms_norm_eps));
    post_attention_layernorm_ = &register_module(
        "post_attention_layernorm", std::make_unique<RMSNorm>(c.hidden_size, c.rms_norm_eps));
  }

 protected:
  Tensor forward(const Tensor& x, const BlockArgs& a) override {
    Tensor h = add(x, self_attn_->forward(input_layernorm_->forward(x), a));
    return add(h, mlp_->forward(post_attention_layernorm_->forward(h)));
  }

 private:
  LlamaAttention* self_attn_;
  LlamaMlp* mlp_;
  RMSNorm* input_layernorm_;
  RMSNorm* post_attention_layernorm_;
};

// "model": embed_tokens, layers, norm (HF's LlamaModel).
class LlamaBody : public Module {
 public:
  LlamaBody(const LlamaConfig& c, Generator& gen) : c_(c) {
    embed_tokens = &register_module("embed_tokens", std::make_unique<Embedding>(ops::randn(
                                                        {c.vocab_size, c.hidden_size}, gen,
                                                        DType::kF32, 0.0, c.initializer_range)));
    layers = &register_module("layers", std::make_unique<ModuleList<LlamaBlock>>());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      layers->append(std::make_unique<LlamaBlock>(c, i, gen));
    }
    norm = &register_module("norm", std::make_unique<RMSNorm>(c.hidden_size, c.rms_norm_eps));
  }

  // ids [B, T] -> the final norm's hidden states [B, T, C] (positions from 0).
  Tensor forward(const Tensor& ids, Generator& dropout) {
    const int64_t T = ids.size(1);
    Tensor x = embed_tokens->forward(ids);
    const RopeTables& r = rope(T);
    BlockArgs args;
    args.dropout = &dropout;
    args.rope_cos = r.cos;
    args.rope_sin = r.sin;
    for (LlamaBlock* block : layers->items()) x = (*block)(x, args);
    return norm->forward(x);
  }

  Embedding* embed_tokens;
  ModuleList<LlamaBlock>* layers;
  RMSNorm* norm;

 private:
  // The rotary tables of positions [0, T) on the parameters' device (kept between steps).
  const RopeTables& rope(int64_t T) {
    const Device dev = embed_tokens->weight()->device();
    if (T != rope_len_ || !(dev == rope_device_)) {
      rope_cache_ = rope_tables(c_, 0, T, dev);
      rope_len_ = T;
      rope_device_ = dev;
    }
    return rope_cache_;
  }

  const LlamaConfig& c_;
  RopeTables rope_cache_;
  int64_t rope_len_ = -1;
  Device rope_device_ = Device::cpu();
};

Llama::Llama(const LlamaConfig& config, uint64_t seed) : CausalLM(seed), config_(config) {
  config_.validate(config_.model_type + " config");
  Generator gen(seed);
  body_ = &register_module("model", std::make_unique<LlamaBody>(config_, gen));
  if (!config_.tie_word_embeddings) {
    lm_head_ = &register_module("lm_head", normal_linear(config_.hidden_size, config_.vocab_size,
                                                         false, gen, config_.initializer_range));
  }
}

Llama::~Llama() = default;

std::vector<Module*> Llama::blocks() {
  return {body_->layers->items().begin(), body_->layers->items().end()};
}

const ParallelLayer* Llama::output_layer() const {
  if (lm_head_ != nullptr) return lm_head_;
  return body_->embed_tokens;
}

Tensor Llama::head(const Tensor& x) {
  return lm_head_ != nullptr ? lm_head_->forward(x) : body_->embed_tokens->attend(x);
}

Tensor Llama::hidden(const Tensor& ids) {
  HF_CHECK(ids.dim() == 2, model_type(), ": ids must be [B, T], got ", ids.str());
  check_sequence_length(ids.size(1), model_type());
  return body_->forward(ids, dropout_generator());
}

KvCache Llama::make_kv_cache(int64_t batch, int64_t capacity) const {
  return allocate_kv_cache(batch, capacity, body_->layers->size(), config_.kv_heads(),
                           config_.dim_per_head());
}

Tensor Llama::forward_cached(const Tensor& ids, KvCache& cache) {
  const int64_t T = check_cached_input(ids, cache, body_->layers->size());
  autograd::NoGradGuard no_grad;
  if (T == 0) return ops::empty({cache.batch, 0, config_.vocab_size}, DType::kF32, device());
  const int64_t start = cache.length;
  check_sequence_length(start + T, model_type());
  LlamaBody& b = *body_;
  Tensor x = b.embed_tokens->forward(ids);
  const RopeTables r = rope_tables(config_, start, T, device());
  for (size_t l = 0; l < b.layers->size(); ++l) {
    BlockArgs args;
    args.rope_cos = r.cos;
    args.rope_sin = r.sin;
    args.cache_k = &cache.k[l];
    args.cache_v = &cache.v[l];
    args.cache_start = start;
    x = (*b.layers)[l](x, args);
  }
  cache.length = start + T;
  x = b.norm->forward(x);
  return lm_head_ != nullptr ? lm_head_->forward(x) : b.embed_tokens->attend(x);
}

namespace {

// What the causal LM and the sequence classifier share: the decoder's plan and cost.

TensorParallelPlan llama_body_plan(const LlamaConfig& config_) {
  TensorParallelPlan plan = {{"model.embed_tokens", ParallelStyle::kVocab, 1},
                             {"model.layers.*.self_attn.q_proj", ParallelStyle::kColwise, 1},
                             {"model.layers.*.self_attn.k_proj", ParallelStyle::kColwise, 1},
                             {"model.layers.*.self_attn.v_proj", ParallelStyle::kColwise, 1},
                             {"model.layers.*.self_attn.o_proj", ParallelStyle::kRowwise, 1},
                             {"model.layers.*.mlp.gate_proj", ParallelStyle::kColwise, 1},
                             {"model.layers.*.mlp.up_proj", ParallelStyle::kColwise, 1},
                             {"model.layers.*.mlp.down_proj", ParallelStyle::kRowwise, 1}};
  if (config_.qk_norm()) {
    plan.push_back({"model.layers.*.self_attn.q_norm", ParallelStyle::kReplicatedSumGrad, 1});
    plan.push_back({"model.layers.*.self_attn.k_norm", ParallelStyle::kReplicatedSumGrad, 1});
  }
  return plan;
}

void check_llama_tensor_parallel(const LlamaConfig& config_, int T) {
  HF_CHECK_INPUT(config_.num_attention_heads % T == 0, "distributed.tensor_parallel ", T,
                 " must divide the model's num_attention_heads ", config_.num_attention_heads);
  HF_CHECK_INPUT(config_.kv_heads() % T == 0, "distributed.tensor_parallel ", T,
                 " must divide the model's num_key_value_heads ", config_.kv_heads(),
                 " (each rank holds whole KV heads)");
  HF_CHECK_INPUT(config_.intermediate_size % T == 0, "distributed.tensor_parallel ", T,
                 " must divide the model's intermediate_size ", config_.intermediate_size);
  HF_CHECK_INPUT(config_.vocab_size >= T, "distributed.tensor_parallel ", T,
                 " exceeds the vocabulary size ", config_.vocab_size);
}

// The decoder's GEMMs per token (the head's not included).
double llama_body_flops(const LlamaConfig& config_, int64_t T) {
  const double C = static_cast<double>(config_.hidden_size);
  const double L = static_cast<double>(config_.num_hidden_layers);
  const double I = static_cast<double>(config_.intermediate_size);
  const double Dq = static_cast<double>(config_.num_attention_heads * config_.dim_per_head());
  const double Dkv = static_cast<double>(config_.kv_heads() * config_.dim_per_head());
  // Per layer q and o (2 C Dq), k and v (2 C Dkv), gate, up and down (3 C I); attention's two
  // T x T products (2 T Dq).
  return L * (2 * C * Dq + 2 * C * Dkv + 3 * C * I + 2 * static_cast<double>(T) * Dq);
}

}  // namespace

// Rotary positions have no table to outgrow, and sliding windows are applied: any length runs,
// as in transformers (max_position_embeddings only sizes RoPE's scaling).
void Llama::check_sequence_length(int64_t /*T*/, const std::string& /*source*/) const {}

TensorParallelPlan Llama::tensor_parallel_plan() const {
  TensorParallelPlan plan = llama_body_plan(config_);
  if (!config_.tie_word_embeddings) plan.push_back({"lm_head", ParallelStyle::kVocab, 1});
  return plan;
}

void Llama::check_tensor_parallel(int T) const {
  check_llama_tensor_parallel(config_, T);
}

double Llama::matmul_flops_per_token(int64_t T) const {
  // The decoder and lm_head (V C).
  return llama_body_flops(config_, T) +
         static_cast<double>(config_.vocab_size) * static_cast<double>(config_.hidden_size);
}

LlamaForSequenceClassification::LlamaForSequenceClassification(const LlamaConfig& config,
                                                               uint64_t seed)
    : Model(seed), config_(config) {
  config_.validate(config_.model_type + " config");
  Generator gen(seed);
  body_ = &register_module("model", std::make_unique<LlamaBody>(config_, gen));
  score_ = &register_module("score", normal_linear(config_.hidden_size, config_.labels.num_labels(),
                                                   false, gen, config_.initializer_range));
}

LlamaForSequenceClassification::~LlamaForSequenceClassification() = default;

std::string LlamaForSequenceClassification::architecture() const {
  return config_.class_prefix() + "ForSequenceClassification";
}

std::string LlamaForSequenceClassification::config_json() const {
  return config_.to_json(architecture(), /*with_labels=*/true);
}

std::vector<Module*> LlamaForSequenceClassification::blocks() {
  return {body_->layers->items().begin(), body_->layers->items().end()};
}

void LlamaForSequenceClassification::check_sequence_length(int64_t /*T*/,
                                                           const std::string& /*source*/) const {}

void LlamaForSequenceClassification::check_tensor_parallel(int T) const {
  check_llama_tensor_parallel(config_, T);
}

double LlamaForSequenceClassification::matmul_flops_per_token(int64_t T) const {
  return llama_body_flops(config_, T);
}

TensorParallelPlan LlamaForSequenceClassification::tensor_parallel_plan() const {
  return llama_body_plan(config_);
}

// HF scores every position and keeps each row's last token before its padding; the score of
// that token alone is the same.
Tensor LlamaForSequenceClassification::outputs(const ModelInputs& in) {
  const int64_t T = check_inputs(in);
  check_sequence_length(T, model_type());
  Tensor x = body_->forward(in.ids, dropout_generator());  // [B, T, C]
  const int64_t B = x.size(0), C = x.size(2);
  std::vector<Tensor> last;
  if (in.lengths.defined()) {
    const std::vector<float> lengths = ops::to_device(in.lengths, Device::cpu()).to_vector();
    for (int64_t b = 0; b < B; ++b) {
      const auto n = static_cast<int64_t>(lengths[static_cast<size_t>(b)]);
      HF_CHECK(n >= 1 && n <= T, model_type(), ": row ", b, " has length ", n, " of ", T);
      last.push_back(narrow(narrow(x, 0, b, 1), 1, n - 1, 1));
    }
  } else {
    last.push_back(narrow(x, 1, T - 1, 1));
  }
  Tensor h = reshape(last.size() == 1 ? last[0] : cat(last, 0), {B, C});
  return score_->forward(h, DType::kF32);
}

}  // namespace hfrun::nn
