#include "models/gpt2/gpt2.h"

#include <cmath>
#include <optional>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::nn {

namespace {

Tensor init_normal(const Shape& shape, Generator& gen, double std) {
  return ops::randn(shape, gen, DType::kF32, 0.0, std);
}

// A Conv1D ([in, out]) with a normal(0, std) weight and a zero bias.
std::unique_ptr<Linear> conv1d(int64_t in, int64_t out, Generator& gen, double std) {
  Tensor w = init_normal({in, out}, gen, std);
  return std::make_unique<Linear>(std::move(w), ops::zeros({out}), WeightLayout::kInOut);
}

Tensor activation(const std::string& name, const Tensor& x) {
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return gelu(x, /*tanh_approx=*/true);
  if (name == "gelu") return gelu(x, false);
  if (name == "relu") return relu(x);
  return silu(x);
}

}  // namespace

// attn: c_attn (fused q, k, v) and c_proj.
class Gpt2Attention : public Module {
 public:
  Gpt2Attention(const Gpt2Config& c, Generator& gen, double proj_std) : c_(c) {
    c_attn_ = &register_module("c_attn", conv1d(c.n_embd, 3 * c.n_embd, gen, c.initializer_range));
    c_proj_ = &register_module("c_proj", conv1d(c.n_embd, c.n_embd, gen, proj_std));
  }

  // Causal self-attention over the heads this rank holds (all of them without tensor
  // parallelism: c_attn's output width says how many). With a cache (inference) the new keys
  // and values are written into it and the queries attend over every cached position.
  Tensor forward(const Tensor& x, const BlockArgs& a) {
    const int64_t B = x.size(0), T = x.size(1), D = c_.n_embd / c_.n_head;
    // Under mixed precision q, k, v come out of the projection in the compute dtype (as
    // PyTorch's autocast does), so attention runs on the 16-bit fused kernels where the device
    // has them; scores and softmax stay f32 either way.
    Tensor qkv = c_attn_->forward(x, compute_dtype());  // [B, T, 3C]
    const int64_t C = qkv.size(2) / 3, H = C / D;
    auto heads = [&](int64_t i) {
      return transpose(reshape(narrow(qkv, 2, i * C, C), {B, T, H, D}), 1, 2);  // [B, H, T, D]
    };
    Tensor y;
    if (a.cache_k != nullptr) {
      Tensor k_new = ops::narrow(*a.cache_k, 2, a.cache_start, T);
      Tensor v_new = ops::narrow(*a.cache_v, 2, a.cache_start, T);
      ops::copy_(k_new, heads(1));
      ops::copy_(v_new, heads(2));
      const int64_t S = a.cache_start + T;
      // Causal with the offset S - T: query i sees keys [0, start + i].
      y = ops::attention(ops::contiguous(heads(0)), ops::narrow(*a.cache_k, 2, 0, S),
                         ops::narrow(*a.cache_v, 2, 0, S), /*causal=*/true,
                         1.0 / std::sqrt(static_cast<double>(D)))
              .out;
    } else {
      // attn_pdrop drops the probabilities in training (inside the fused kernel where it runs).
      const double p = is_training() ? c_.attn_pdrop : 0.0;
      y = scaled_dot_product_attention(heads(0), heads(1), heads(2), /*causal=*/true, std::nullopt,
                                       Tensor(), 0, p, a.dropout);
    }
    y = reshape(transpose(y, 1, 2), {B, T, C});
    return c_proj_->forward(y, x.dtype());
  }

 private:
  const Gpt2Config& c_;
  Linear* c_attn_;
  Linear* c_proj_;
};

// mlp: c_fc, the activation, c_proj.
class Gpt2Mlp : public Module {
 public:
  Gpt2Mlp(const Gpt2Config& c, Generator& gen, double proj_std) : c_(c) {
    c_fc_ = &register_module("c_fc", conv1d(c.n_embd, c.mlp_width(), gen, c.initializer_range));
    c_proj_ = &register_module("c_proj", conv1d(c.mlp_width(), c.n_embd, gen, proj_std));
  }

  // The tanh GELU (gelu_new) runs as c_fc's GEMM epilogue; under mixed precision c_fc's output
  // is in the compute dtype, as autocast gives it. The result is in x's dtype.
  Tensor forward(const Tensor& x) {
    const std::string& act = c_.activation_function;
    Tensor m = act == "gelu_new" || act == "gelu_pytorch_tanh"
                   ? c_fc_->forward_gelu(x, compute_dtype())
                   : activation(act, c_fc_->forward(x));
    return c_proj_->forward(m, x.dtype());
  }

 private:
  const Gpt2Config& c_;
  Linear* c_fc_;
  Linear* c_proj_;
};

class Gpt2Block : public Block {
 public:
  Gpt2Block(const Gpt2Config& c, Generator& gen) : c_(c) {
    const double proj_std = c.initializer_range / std::sqrt(2.0 * static_cast<double>(c.n_layer));
    ln_1_ = &register_module("ln_1", std::make_unique<LayerNorm>(c.n_embd, c.layer_norm_epsilon));
    attn_ = &register_module("attn", std::make_unique<Gpt2Attention>(c, gen, proj_std));
    ln_2_ = &register_module("ln_2", std::make_unique<LayerNorm>(c.n_embd, c.layer_norm_epsilon));
    mlp_ = &register_module("mlp", std::make_unique<Gpt2Mlp>(c, gen, proj_std));
  }

 protected:
  Tensor forward(const Tensor& x, const BlockArgs& a) override {
    const bool drop = is_training() && a.dropout != nullptr && a.cache_k == nullptr;
    auto residual_dropout = [&](const Tensor& t) {
      return drop ? dropout(t, c_.resid_pdrop, true, *a.dropout) : t;
    };
    Tensor h = add(x, residual_dropout(attn_->forward(ln_1_->forward(x), a)));
    return add(h, residual_dropout(mlp_->forward(ln_2_->forward(h))));
  }

 private:
  const Gpt2Config& c_;
  LayerNorm* ln_1_;
  Gpt2Attention* attn_;
  LayerNorm* ln_2_;
  Gpt2Mlp* mlp_;
};

// "transformer": wte, wpe, h, ln_f (HF's GPT2Model).
class Gpt2Body : public Module {
 public:
  Gpt2Body(const Gpt2Config& c, Generator& gen) {
    const int64_t C = c.n_embd;
    wte = &register_module("wte", std::make_unique<Embedding>(
                                      init_normal({c.vocab_size, C}, gen, c.initializer_range)));
    wpe = &register_module("wpe", std::make_unique<Embedding>(
                                      init_normal({c.n_positions, C}, gen, c.initializer_range)));
    h = &register_module("h", std::make_unique<ModuleList<Gpt2Block>>());
    for (int64_t i = 0; i < c.n_layer; ++i) h->append(std::make_unique<Gpt2Block>(c, gen));
    ln_f = &register_module("ln_f", std::make_unique<LayerNorm>(C, c.layer_norm_epsilon));
  }

  Embedding* wte;
  Embedding* wpe;
  ModuleList<Gpt2Block>* h;
  LayerNorm* ln_f;
};

Gpt2::Gpt2(const Gpt2Config& config, uint64_t seed) : CausalLM(seed), config_(config) {
  config_.validate();
  Generator gen(seed);
  body_ = &register_module("transformer", std::make_unique<Gpt2Body>(config_, gen));
}

Gpt2::~Gpt2() = default;

std::vector<Module*> Gpt2::blocks() {
  return {body_->h->items().begin(), body_->h->items().end()};
}

const ParallelLayer* Gpt2::output_layer() const {
  return body_->wte;
}

void Gpt2::check_sequence_length(int64_t T, const std::string& source) const {
  HF_CHECK_INPUT(T <= config_.n_positions, source, ": sequence length ", T,
                 " exceeds the model's n_positions ", config_.n_positions);
}

Tensor Gpt2::head(const Tensor& x) {
  // The tied lm_head (this rank's vocabulary columns under tensor parallelism).
  return body_->wte->attend(x);
}

Tensor Gpt2::hidden(const Tensor& ids) {
  HF_CHECK(ids.dim() == 2, "gpt2: ids must be [B, T], got ", ids.str());
  const int64_t T = ids.size(1);
  HF_CHECK_INPUT(T <= config_.n_positions, "gpt2: sequence length ", T, " exceeds n_positions ",
                 config_.n_positions);
  Gpt2Body& b = *body_;
  // Positions (and every other tensor made here) on the parameters' device.
  Tensor x = add(b.wte->forward(ids), b.wpe->forward(positions(0, T, b.wpe->weight()->device())));
  x = dropout(x, config_.embd_pdrop, is_training(), dropout_generator());
  BlockArgs args;
  args.dropout = &dropout_generator();
  for (Gpt2Block* block : b.h->items()) x = (*block)(x, args);
  return b.ln_f->forward(x);
}

KvCache Gpt2::make_kv_cache(int64_t batch, int64_t capacity) const {
  const int64_t H = config_.n_head;
  return allocate_kv_cache(batch, capacity, body_->h->size(), H, config_.n_embd / H);
}

Tensor Gpt2::forward_cached(const Tensor& ids, KvCache& cache) {
  const int64_t T = check_cached_input(ids, cache, body_->h->size());
  autograd::NoGradGuard no_grad;
  if (T == 0) return ops::empty({cache.batch, 0, config_.vocab_size}, DType::kF32, device());
  const int64_t start = cache.length;
  Gpt2Body& b = *body_;
  Tensor x = add(b.wte->forward(ids), b.wpe->forward(positions(start, T, device())));
  for (size_t l = 0; l < b.h->size(); ++l) {
    BlockArgs args;
    args.cache_k = &cache.k[l];
    args.cache_v = &cache.v[l];
    args.cache_start = start;
    x = (*b.h)[l](x, args);
  }
  cache.length = start + T;
  return b.wte->attend(b.ln_f->forward(x));
}

TensorParallelPlan Gpt2::tensor_parallel_plan() const {
  return {{"transformer.wte", ParallelStyle::kVocab, 1},
          {"transformer.h.*.attn.c_attn", ParallelStyle::kColwise, 3},
          {"transformer.h.*.attn.c_proj", ParallelStyle::kRowwise, 1},
          {"transformer.h.*.mlp.c_fc", ParallelStyle::kColwise, 1},
          {"transformer.h.*.mlp.c_proj", ParallelStyle::kRowwise, 1}};
}

void Gpt2::check_tensor_parallel(int T) const {
  HF_CHECK_INPUT(config_.n_head % T == 0, "distributed.tensor_parallel ", T,
                 " must divide the model's n_head ", config_.n_head);
  HF_CHECK_INPUT(config_.mlp_width() % T == 0, "distributed.tensor_parallel ", T,
                 " must divide the model's MLP width ", config_.mlp_width());
  HF_CHECK_INPUT(config_.vocab_size >= T, "distributed.tensor_parallel ", T,
                 " exceeds the vocabulary size ", config_.vocab_size);
}

double Gpt2::matmul_flops_per_token(int64_t T) const {
  const double C = static_cast<double>(config_.n_embd), L = static_cast<double>(config_.n_layer);
  const double V = static_cast<double>(config_.vocab_size);
  const double M = static_cast<double>(config_.mlp_width());
  // Per layer qkv (3C^2), proj (C^2), fc and fc2 (2CM); the tied lm_head (VC); attention's
  // two T x T products (2TC).
  return L * (4 * C * C + 2 * C * M) + V * C + 2 * L * static_cast<double>(T) * C;
}

std::vector<std::string> Gpt2::checkpoint_aliases(const std::string& name) const {
  if (name.starts_with("transformer.")) return {name.substr(12)};
  return {};
}

}  // namespace hfrun::nn
