#include "models/gpt2.h"

#include <cmath>
#include <optional>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "common/error.h"
#include "models/tensor_parallel.h"

namespace hfrun::nn {

namespace {

Tensor init_normal(const Shape& shape, Generator& gen, double std) {
  return ops::randn(shape, gen, DType::kF32, 0.0, std);
}

Tensor activation(const std::string& name, const Tensor& x) {
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return gelu(x, /*tanh_approx=*/true);
  if (name == "gelu") return gelu(x, false);
  if (name == "relu") return relu(x);
  return silu(x);
}

}  // namespace

// One transformer block: ln_1, attn (c_attn, c_proj), ln_2, mlp (c_fc, c_proj).
class Gpt2Block : public Module {
 public:
  Gpt2Block(const Gpt2Config& c, Generator& gen) : c_(c) {
    const int64_t C = c.n_embd, M = c.mlp_width();
    const double proj_std = c.initializer_range / std::sqrt(2.0 * static_cast<double>(c.n_layer));
    ln_1_w_ = register_parameter("ln_1.weight", ops::ones({C}));
    ln_1_b_ = register_parameter("ln_1.bias", ops::zeros({C}));
    attn_w_ =
        register_parameter("attn.c_attn.weight", init_normal({C, 3 * C}, gen, c.initializer_range));
    attn_b_ = register_parameter("attn.c_attn.bias", ops::zeros({3 * C}));
    proj_w_ = register_parameter("attn.c_proj.weight", init_normal({C, C}, gen, proj_std));
    proj_b_ = register_parameter("attn.c_proj.bias", ops::zeros({C}));
    ln_2_w_ = register_parameter("ln_2.weight", ops::ones({C}));
    ln_2_b_ = register_parameter("ln_2.bias", ops::zeros({C}));
    fc_w_ = register_parameter("mlp.c_fc.weight", init_normal({C, M}, gen, c.initializer_range));
    fc_b_ = register_parameter("mlp.c_fc.bias", ops::zeros({M}));
    fc2_w_ = register_parameter("mlp.c_proj.weight", init_normal({M, C}, gen, proj_std));
    fc2_b_ = register_parameter("mlp.c_proj.bias", ops::zeros({C}));
  }

  void set_tensor_parallel(TensorParallelGroup* tp) { tp_ = tp; }

  // cd: the GEMMs' compute dtype under mixed precision (layer norms, softmax, GELU, residuals
  // and the loss stay f32).
  Tensor forward(const Tensor& x, Generator& gen, std::optional<DType> cd) {
    if (tp_) return forward_tensor_parallel(x, gen, cd);
    const bool train = is_training();
    Tensor h = add(
        x, dropout(attention(layer_norm(x, param(ln_1_w_), param(ln_1_b_), c_.layer_norm_epsilon),
                             gen, cd),
                   c_.resid_pdrop, train, gen));
    Tensor m = mlp(layer_norm(h, param(ln_2_w_), param(ln_2_b_), c_.layer_norm_epsilon), cd, true);
    return add(h, dropout(m, c_.resid_pdrop, train, gen));
  }

  // Inference step (called under NoGradGuard, no dropout): x [B, T, C] holds the positions
  // [start, start + T); their keys and values are written into kc, vc [B, H, capacity, D].
  Tensor forward_cached(const Tensor& x, Tensor& kc, Tensor& vc, int64_t start) {
    Tensor h = add(
        x, attention_cached(layer_norm(x, param(ln_1_w_), param(ln_1_b_), c_.layer_norm_epsilon),
                            kc, vc, start));
    return add(h, mlp(layer_norm(h, param(ln_2_w_), param(ln_2_b_), c_.layer_norm_epsilon),
                      std::nullopt, true));
  }

 private:
  // This rank's heads and MLP columns; the row-parallel projections' partial sums are summed
  // over the group before their (replicated) bias is added.
  Tensor forward_tensor_parallel(const Tensor& x, Generator& gen, std::optional<DType> cd) {
    const bool train = is_training();
    TensorParallelGroup& g = *tp_;
    Tensor a = copy_to_tensor_parallel(
        layer_norm(x, param(ln_1_w_), param(ln_1_b_), c_.layer_norm_epsilon), g);
    a = attention(a, gen, cd, /*local_heads=*/c_.n_head / g.size(), /*bias=*/false);
    a = add(reduce_from_tensor_parallel(a, g), param(proj_b_));
    Tensor h = add(x, dropout(a, c_.resid_pdrop, train, gen));
    Tensor m = copy_to_tensor_parallel(
        layer_norm(h, param(ln_2_w_), param(ln_2_b_), c_.layer_norm_epsilon), g);
    m = add(reduce_from_tensor_parallel(mlp(m, cd, /*fc2_bias=*/false), g), param(fc2_b_));
    return add(h, dropout(m, c_.resid_pdrop, train, gen));
  }

  // c_fc, the activation and c_proj (without its bias unless fc2_bias), the result in x's
  // dtype. The tanh GELU (gelu_new) runs as c_fc's GEMM epilogue; under mixed precision c_fc's
  // output is in the compute dtype, as autocast gives it.
  Tensor mlp(const Tensor& x, std::optional<DType> cd, bool fc2_bias) {
    const std::string& act = c_.activation_function;
    Tensor m = act == "gelu_new" || act == "gelu_pytorch_tanh"
                   ? linear_gelu(x, param(fc_w_), param(fc_b_), cd, cd)
                   : activation(act, linear(x, param(fc_w_), param(fc_b_), cd));
    return linear(m, param(fc2_w_), fc2_bias ? param(fc2_b_) : Tensor(), cd, x.dtype());
  }

  // Causal self-attention over `local_heads` heads (all of them without tensor parallelism);
  // the fused kernel unless attention dropout is active. Without `bias` the output projection
  // leaves its bias to the caller.
  Tensor attention(const Tensor& x, Generator& gen, std::optional<DType> cd) {
    return attention(x, gen, cd, c_.n_head, true);
  }
  Tensor attention(const Tensor& x, Generator& gen, std::optional<DType> cd, int64_t local_heads,
                   bool bias) {
    const int64_t B = x.size(0), T = x.size(1), H = local_heads, D = c_.n_embd / c_.n_head;
    const int64_t C = H * D;
    // Under mixed precision q, k, v come out of the projection in the compute dtype (as
    // PyTorch's autocast does), so attention runs on the 16-bit fused kernels where the device
    // has them; scores and softmax stay f32 either way.
    Tensor qkv = linear(x, param(attn_w_), param(attn_b_), cd, cd);  // [B, T, 3C]
    auto heads = [&](int64_t i) {
      return transpose(reshape(narrow(qkv, 2, i * C, C), {B, T, H, D}), 1, 2);  // [B, H, T, D]
    };
    Tensor q = heads(0), k = heads(1), v = heads(2);
    Tensor y;
    if (is_training() && c_.attn_pdrop > 0) {
      Tensor scores = mul_scalar(matmul(q, transpose(k, 2, 3), Tensor(), DType::kF32),
                                 1.0 / std::sqrt(static_cast<double>(D)));
      const Tensor pos = ops::to_device(ops::arange(T), x.device());
      Tensor future = ops::gt(ops::reshape(pos, {1, T}), ops::reshape(pos, {T, 1}));
      Tensor probs = softmax(masked_fill(scores, future, -INFINITY), -1);
      y = matmul(to_dtype(dropout(probs, c_.attn_pdrop, true, gen), v.dtype()), v);
    } else {
      y = scaled_dot_product_attention(q, k, v, /*causal=*/true);
    }
    y = reshape(transpose(y, 1, 2), {B, T, C});
    return linear(y, param(proj_w_), bias ? param(proj_b_) : Tensor(), cd, x.dtype());
  }

  Tensor attention_cached(const Tensor& x, Tensor& kc, Tensor& vc, int64_t start) {
    const int64_t B = x.size(0), T = x.size(1), C = c_.n_embd, H = c_.n_head, D = C / H;
    Tensor qkv = linear(x, param(attn_w_), param(attn_b_));  // [B, T, 3C]
    auto heads = [&](int64_t i) {
      return ops::transpose(ops::reshape(ops::narrow(qkv, 2, i * C, C), {B, T, H, D}), 1, 2);
    };
    Tensor k_new = ops::narrow(kc, 2, start, T), v_new = ops::narrow(vc, 2, start, T);
    ops::copy_(k_new, heads(1));
    ops::copy_(v_new, heads(2));
    const int64_t S = start + T;
    // Causal with the offset S - T: query i sees keys [0, start + i].
    Tensor y = ops::attention(ops::contiguous(heads(0)), ops::narrow(kc, 2, 0, S),
                              ops::narrow(vc, 2, 0, S), /*causal=*/true,
                              1.0 / std::sqrt(static_cast<double>(D)))
                   .out;
    y = ops::reshape(ops::transpose(y, 1, 2), {B, T, C});
    return linear(y, param(proj_w_), param(proj_b_));
  }

  const Gpt2Config& c_;
  TensorParallelGroup* tp_ = nullptr;
  size_t ln_1_w_, ln_1_b_, attn_w_, attn_b_, proj_w_, proj_b_, ln_2_w_, ln_2_b_, fc_w_, fc_b_,
      fc2_w_, fc2_b_;
};

Gpt2::Gpt2(const Gpt2Config& config, uint64_t seed)
    : config_(config), dropout_gen_(seed ^ 0x9e3779b97f4a7c15ull) {
  config_.validate();
  Generator gen(seed);
  const int64_t C = config_.n_embd;
  wte_ = register_parameter("wte.weight",
                            init_normal({config_.vocab_size, C}, gen, config_.initializer_range));
  wpe_ = register_parameter("wpe.weight",
                            init_normal({config_.n_positions, C}, gen, config_.initializer_range));
  for (int64_t i = 0; i < config_.n_layer; ++i) {
    blocks_.push_back(
        &register_module("h." + std::to_string(i), std::make_unique<Gpt2Block>(config_, gen)));
  }
  ln_f_w_ = register_parameter("ln_f.weight", ops::ones({C}));
  ln_f_b_ = register_parameter("ln_f.bias", ops::zeros({C}));
}

Gpt2::~Gpt2() = default;

std::vector<const Module*> Gpt2::layers() const {
  return {blocks_.begin(), blocks_.end()};
}

Tensor Gpt2::forward(const Tensor& ids) {
  HF_CHECK(ids.dim() == 2, "gpt2: ids must be [B, T], got ", ids.str());
  const int64_t T = ids.size(1);
  HF_CHECK_INPUT(T <= config_.n_positions, "gpt2: sequence length ", T, " exceeds n_positions ",
                 config_.n_positions);
  LayerHooks* hooks = layer_hooks();
  if (hooks) hooks->before_model();
  Tensor tok = tp_ ? vocab_parallel_embedding(param(wte_), ids, vocab_begin(), *tp_)
                   : embedding(param(wte_), ids);
  // Positions (and every other tensor made here) on the parameters' device.
  Tensor x = add(tok, embedding(param(wpe_), ops::to_device(ops::arange(T), param(wpe_).device())));
  x = dropout(x, config_.embd_pdrop, is_training(), dropout_gen_);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    if (hooks) hooks->before_layer(i);
    x = blocks_[i]->forward(x, dropout_gen_, compute_dtype_);
    if (hooks) x = hooks->after_layer(i, x);
  }
  x = layer_norm(x, param(ln_f_w_), param(ln_f_b_), config_.layer_norm_epsilon);
  if (tp_) x = copy_to_tensor_parallel(x, *tp_);  // logits: this rank's vocabulary columns
  // Tied lm_head: a [C, V] view of wte.
  return linear(x, transpose(param(wte_), 0, 1), Tensor(), compute_dtype_);
}

KvCache Gpt2::make_kv_cache(int64_t batch) const {
  HF_CHECK(batch > 0, "gpt2: kv cache batch must be positive, got ", batch);
  const int64_t H = config_.n_head, D = config_.n_embd / H;
  KvCache cache;
  cache.batch = batch;
  cache.capacity = config_.n_positions;
  for (size_t l = 0; l < blocks_.size(); ++l) {
    cache.k.push_back(ops::empty({batch, H, cache.capacity, D}, DType::kF32, device()));
    cache.v.push_back(ops::empty({batch, H, cache.capacity, D}, DType::kF32, device()));
  }
  return cache;
}

Tensor Gpt2::forward_cached(const Tensor& ids, KvCache& cache) {
  HF_CHECK(ids.dim() == 2, "gpt2: ids must be [B, T], got ", ids.str());
  HF_CHECK(cache.k.size() == blocks_.size() && cache.v.size() == blocks_.size(),
           "gpt2: kv cache has ", cache.k.size(), " layers, the model ", blocks_.size());
  HF_CHECK(ids.size(0) == cache.batch, "gpt2: ids ", ids.str(), " do not match the cache's batch ",
           cache.batch);
  const int64_t T = ids.size(1), start = cache.length;
  HF_CHECK_INPUT(start + T <= cache.capacity, "gpt2: sequence length ", start + T,
                 " exceeds n_positions ", cache.capacity);
  autograd::NoGradGuard no_grad;
  if (T == 0) return ops::empty({cache.batch, 0, config_.vocab_size}, DType::kF32, device());
  std::vector<int64_t> pos(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) pos[static_cast<size_t>(i)] = start + i;
  Tensor x = add(embedding(param(wte_), ids),
                 embedding(param(wpe_), ops::to_device(ops::from_ints(pos, {T}), device())));
  for (size_t l = 0; l < blocks_.size(); ++l) {
    x = blocks_[l]->forward_cached(x, cache.k[l], cache.v[l], start);
  }
  cache.length = start + T;
  x = layer_norm(x, param(ln_f_w_), param(ln_f_b_), config_.layer_norm_epsilon);
  return linear(x, transpose(param(wte_), 0, 1));
}

Tensor Gpt2::loss(const Tensor& ids, const Tensor& targets) {
  HF_CHECK(targets.sizes() == ids.sizes(), "gpt2: targets ", targets.str(), " must match ids ",
           ids.str());
  if (tp_) return vocab_parallel_cross_entropy(forward(ids), targets, vocab_begin(), *tp_);
  return cross_entropy(forward(ids), targets);
}

TensorParallelSplit Gpt2::tensor_parallel_split(const std::string& name) const {
  const int64_t C = config_.n_embd, M = config_.mlp_width();
  if (name == "wte.weight") return {0, 1, {config_.vocab_size, C}};
  if (!name.starts_with("h.")) return {};
  const std::string leaf = name.substr(name.find('.', 2) + 1);
  if (leaf == "attn.c_attn.weight") return {1, 3, {C, 3 * C}};
  if (leaf == "attn.c_attn.bias") return {0, 3, {3 * C}};
  if (leaf == "attn.c_proj.weight") return {0, 1, {C, C}};
  if (leaf == "mlp.c_fc.weight") return {1, 1, {C, M}};
  if (leaf == "mlp.c_fc.bias") return {0, 1, {M}};
  if (leaf == "mlp.c_proj.weight") return {0, 1, {M, C}};
  return {};  // layer norms and the row-parallel biases are replicated
}

int64_t Gpt2::vocab_begin() const {
  return tp_ ? tensor_parallel_range(config_.vocab_size, tp_->rank(), tp_->size()).first : 0;
}

void Gpt2::enable_tensor_parallel(TensorParallelGroup* group) {
  HF_CHECK(tp_ == nullptr && flat() == nullptr,
           "gpt2: enable_tensor_parallel once, before flatten_parameters()");
  const int T = group->size();
  HF_CHECK_INPUT(config_.n_head % T == 0, "distributed.tensor_parallel ", T,
                 " must divide the model's n_head ", config_.n_head);
  HF_CHECK_INPUT(config_.mlp_width() % T == 0, "distributed.tensor_parallel ", T,
                 " must divide the model's MLP width ", config_.mlp_width());
  HF_CHECK_INPUT(config_.vocab_size >= T, "distributed.tensor_parallel ", T,
                 " exceeds the vocabulary size ", config_.vocab_size);
  std::vector<Tensor> local;
  for (const auto& [name, t] : named_parameters()) {
    local.push_back(
        tensor_parallel_slice(t.detach(), tensor_parallel_split(name), group->rank(), T));
  }
  replace_parameters(local, /*same_shapes=*/false);
  tp_ = group;
  for (Gpt2Block* b : blocks_) b->set_tensor_parallel(group);
}

}  // namespace hfrun::nn
