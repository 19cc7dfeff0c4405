#include "nn/layers.h"

#include "autograd/functions.h"
#include "autograd/node.h"
#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::nn {

namespace {

// Rank t's part of `p` along `dim` in `groups` blocks, recorded as the parameter's split.
TensorParallelSplit split_of(const Tensor& t, int dim, int groups) {
  return TensorParallelSplit{dim, groups, t.sizes()};
}

void check_divisible(const Tensor& t, int dim, int groups, int size, const std::string& path,
                     const char* what) {
  const int64_t n = t.size(dim);
  HF_CHECK_INPUT(n % groups == 0 && (n / groups) % size == 0, "tensor parallel: ", path, " has ",
                 n / groups, " ", what, groups > 1 ? " per block" : "",
                 ", which do not split evenly over distributed.tensor_parallel ", size);
}

}  // namespace

// ---- the fused output-layer loss ---------------------------------------------------------------

Tensor ParallelLayer::fused_loss(const Tensor&, const Tensor&, const Tensor&) const {
  HF_THROW("fused_loss: this layer does not fuse its loss (fuses_loss() is false)");
}

namespace {

// A whole [V, C] weight whose GEMMs the device's backend takes blocked for `rows` rows of input.
bool head_fuses(const Tensor& weight, std::optional<DType> compute, int64_t rows) {
  return fuses_linear_cross_entropy(weight.device(), compute.value_or(weight.dtype()),
                                    rows * weight.size(0));
}

// Whether the blocked loss can run at all for such a weight (whatever the backend prefers).
void check_head_can_fuse(bool whole, const Tensor& weight, std::optional<DType> compute,
                         const char* what) {
  HF_CHECK(whole && compute.value_or(weight.dtype()) != DType::kF16 &&
               ops::cross_entropy_blocks(weight.device()),
           what, ": the fused loss needs a whole layer (not tensor-parallel, no adapter) with ",
           "bf16 or f32 GEMMs on a backend with the blocked cross-entropy kernels");
}

}  // namespace

// ---- Linear -------------------------------------------------------------------------------------

bool Linear::fuses_loss(int64_t rows) const {
  return group_ == nullptr && lora_a_ == nullptr && layout_ == WeightLayout::kOutIn &&
         head_fuses(weight_.get(), compute_dtype(), rows);
}

Tensor Linear::fused_loss(const Tensor& x, const Tensor& targets, const Tensor& bias) const {
  check_head_can_fuse(group_ == nullptr && lora_a_ == nullptr && layout_ == WeightLayout::kOutIn,
                      weight_.get(), compute_dtype(), "Linear::fused_loss");
  Tensor b = bias_.get_or_none();
  if (bias.defined()) b = b.defined() ? add(b, bias) : bias;
  return linear_cross_entropy(x, weight_.get(), b, targets, -100, compute_dtype());
}

Linear::Linear(Tensor weight, Tensor bias, WeightLayout layout) : layout_(layout) {
  HF_CHECK(weight.dim() == 2, "Linear: weight must be 2-D, got ", weight.str());
  weight_ = register_parameter("weight", std::move(weight));
  if (bias.defined()) {
    HF_CHECK(bias.dim() == 1 && bias.size(0) == out_features(), "Linear: bias ", bias.str(),
             " does not match weight ", weight_->str());
    bias_ = register_parameter("bias", std::move(bias));
  }
}

int64_t Linear::in_features() const {
  return weight_->size(layout_ == WeightLayout::kOutIn ? 1 : 0);
}

int64_t Linear::out_features() const {
  return weight_->size(layout_ == WeightLayout::kOutIn ? 0 : 1);
}

Tensor Linear::project(const Tensor& x, const Tensor& weight, const Tensor& bias, DType out) const {
  return linear(x, weight, bias, compute_dtype(), out, layout_);
}

Tensor Linear::prepare_input(const Tensor& x) const {
  // Column- and vocabulary-parallel: every rank reads the whole input; its gradient is the sum
  // of the ranks' parts.
  if (group_ && style_ != ParallelStyle::kRowwise) return copy_to_tensor_parallel(x, *group_);
  return x;
}

void Linear::add_lora(Tensor a, Tensor b, double scale, double dropout, Generator* dropout_gen) {
  HF_CHECK(group_ == nullptr, "add_lora: the layer is already tensor-parallel");
  HF_CHECK(lora_a_ == nullptr, "add_lora: the layer already has an adapter");
  HF_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == in_features() &&
               b.size(0) == out_features() && b.size(1) == a.size(0),
           "add_lora: lora_A ", a.str(), " and lora_B ", b.str(), " do not fit a layer of ",
           in_features(), " -> ", out_features(), " features");
  lora_a_ = &register_module("lora_A", std::make_unique<Linear>(std::move(a), Tensor()));
  lora_b_ = &register_module("lora_B", std::make_unique<Linear>(std::move(b), Tensor()));
  lora_scale_ = scale;
  lora_dropout_ = dropout;
  lora_gen_ = dropout_gen;
}

// y + s * B(A(dropout(x))), B's product added into y's memory by one GEMM (linear_add), h =
// s * A(..) in `dtype`. Under tensor parallelism this rank's share of it, as the
// base layer's: column-parallel, A is whole and B holds this rank's outputs; row-parallel, A
// holds this rank's input features and the term is a partial sum like the base's. The whole
// factor's gradient is summed over the group (its ranks each see part of the outputs, or part
// of the inputs), which copy_to_tensor_parallel does on the way back.
Tensor Linear::lora_term(const Tensor& x, DType dtype, Tensor y) const {
  Tensor in = x;
  if (is_training() && lora_dropout_ > 0 && lora_gen_ != nullptr) {
    in = dropout(x, lora_dropout_, true, *lora_gen_);
  }
  auto factor = [&](const Linear& l) {  // [out, in]
    Tensor w = l.weight_.get();
    if (l.group_ != nullptr && l.style_ == ParallelStyle::kReplicatedSumGrad) {
      w = copy_to_tensor_parallel(w, *l.group_);
    }
    return w;
  };
  // s scales the r-wide h rather than the out-wide term: the same product, r / out of the pass
  // (exact where s is a power of two, as alpha / r mostly is; else one rounding moves).
  Tensor h = linear(in, factor(*lora_a_), Tensor(), compute_dtype(), dtype, WeightLayout::kOutIn);
  h = mul_scalar(h, lora_scale_);
  return linear_add(std::move(y), h, factor(*lora_b_), compute_dtype(), WeightLayout::kOutIn);
}

Tensor Linear::forward(const Tensor& x, std::optional<DType> out_dtype) {
  const DType out = out_dtype.value_or(x.dtype());
  if (lora_a_ != nullptr) {
    if (group_ && style_ == ParallelStyle::kRowwise) {
      // The adapter's partial sum joins the base's before the one reduction.
      Tensor y = project(x, weight_.get(), Tensor(), DType::kF32);
      y = reduce_from_tensor_parallel(lora_term(x, DType::kF32, std::move(y)), *group_);
      if (bias_.defined()) y = add(y, bias_.get());
      return y.dtype() == out ? y : to_dtype(y, out);
    }
    const Tensor in = prepare_input(x);
    return lora_term(in, out, project(in, weight_.get(), bias_.get_or_none(), out));
  }
  if (group_ && style_ == ParallelStyle::kReplicatedSumGrad) {
    return project(x, copy_to_tensor_parallel(weight_.get(), *group_),
                   bias_.defined() ? copy_to_tensor_parallel(bias_.get(), *group_) : Tensor(), out);
  }
  if (group_ && style_ == ParallelStyle::kRowwise) {
    // Partial sums over this rank's input features, summed in f32 across the group; the
    // replicated bias is added once, after the sum.
    Tensor y = project(x, weight_.get(), Tensor(), DType::kF32);
    y = reduce_from_tensor_parallel(y, *group_);
    if (bias_.defined()) y = add(y, bias_.get());
    return y.dtype() == out ? y : to_dtype(y, out);
  }
  return project(prepare_input(x), weight_.get(), bias_.get_or_none(), out);
}

Tensor Linear::forward_gelu(const Tensor& x, std::optional<DType> out_dtype) {
  // The adapter's term is added before the activation.
  if (lora_a_ != nullptr) return gelu(forward(x, out_dtype), /*tanh_approx=*/true);
  HF_CHECK(!(group_ && style_ == ParallelStyle::kRowwise),
           "Linear::forward_gelu: a row-parallel layer's output is a partial sum");
  return linear_gelu(prepare_input(x), weight_.get(), bias_.get_or_none(), compute_dtype(),
                     out_dtype.value_or(x.dtype()), layout_);
}

TensorParallelSplit Linear::split_for(ParallelStyle style, int groups,
                                      const std::string& param) const {
  if (style == ParallelStyle::kReplicatedSumGrad) return {};
  const int out_dim = layout_ == WeightLayout::kOutIn ? 0 : 1;
  if (param == "weight") {
    const int dim = style == ParallelStyle::kRowwise ? 1 - out_dim : out_dim;
    return split_of(weight_.get(), dim, style == ParallelStyle::kRowwise ? 1 : groups);
  }
  // Column- and vocabulary-parallel split the bias with the outputs; row-parallel adds the
  // whole bias after the sum.
  if (param == "bias" && bias_.defined() && style != ParallelStyle::kRowwise) {
    return split_of(bias_.get(), 0, groups);
  }
  return {};
}

void Linear::parallelize(ParallelStyle style, int groups, TensorParallelGroup* group,
                         const std::string& path) {
  HF_CHECK(group_ == nullptr, "tensor parallel: ", path, " is already parallel");
  HF_CHECK(group != nullptr, "tensor parallel: no group for ", path);
  HF_CHECK(style != ParallelStyle::kRowwise || groups == 1, "tensor parallel: ", path,
           ": a row-parallel layer has one block");
  // A LoRA adapter follows its layer: the factor on the split side is split with it, the other
  // is whole with its gradient summed over the group.
  if (lora_a_ != nullptr && style != ParallelStyle::kReplicatedSumGrad) {
    const bool row = style == ParallelStyle::kRowwise;
    lora_a_->parallelize(row ? style : ParallelStyle::kReplicatedSumGrad, 1, group,
                         path + ".lora_A");
    lora_b_->parallelize(row ? ParallelStyle::kReplicatedSumGrad : style, groups, group,
                         path + ".lora_B");
  }
  if (style == ParallelStyle::kReplicatedSumGrad) {  // whole, its gradients summed
    style_ = style;
    group_ = group;
    return;
  }
  const int T = group->size(), t = group->rank();
  const TensorParallelSplit s = split_for(style, groups, "weight");
  const Tensor w = weight_->detach();
  if (style == ParallelStyle::kVocab) {
    // A vocabulary may split unevenly (50257 rows over 2 ranks).
    HF_CHECK_INPUT(w.size(s.dim) >= T, "tensor parallel: ", path, " has ", w.size(s.dim),
                   " rows, fewer than distributed.tensor_parallel ", T);
    vocab_begin_ = tensor_parallel_range(w.size(s.dim), t, T).first;
  } else {
    check_divisible(w, s.dim, s.groups, T, path,
                    style == ParallelStyle::kRowwise ? "input features" : "output features");
  }
  reset_parameter(weight_, tensor_parallel_slice(w, s, t, T), s);
  const TensorParallelSplit bs = split_for(style, groups, "bias");
  if (bs.split()) {
    const Tensor b = bias_->detach();
    reset_parameter(bias_, tensor_parallel_slice(b, bs, t, T), bs);
  }
  style_ = style;
  group_ = group;
}

// ---- Embedding ----------------------------------------------------------------------------------

Embedding::Embedding(Tensor weight) {
  HF_CHECK(weight.dim() == 2, "Embedding: weight must be [V, C], got ", weight.str());
  num_embeddings_ = weight.size(0);
  weight_ = register_parameter("weight", std::move(weight));
}

int64_t Embedding::num_embeddings() const {
  return num_embeddings_;
}

Tensor Embedding::forward(const Tensor& ids) {
  if (group_) return vocab_parallel_embedding(weight_.get(), ids, vocab_begin_, *group_);
  return embedding(weight_.get(), ids);
}

Tensor Embedding::attend(const Tensor& x) {
  const Tensor in = group_ ? copy_to_tensor_parallel(x, *group_) : x;
  return linear(in, weight_.get(), Tensor(), compute_dtype(), x.dtype(), WeightLayout::kOutIn);
}

bool Embedding::fuses_loss(int64_t rows) const {
  return group_ == nullptr && head_fuses(weight_.get(), compute_dtype(), rows);
}

Tensor Embedding::fused_loss(const Tensor& x, const Tensor& targets, const Tensor& bias) const {
  check_head_can_fuse(group_ == nullptr, weight_.get(), compute_dtype(), "Embedding::fused_loss");
  return linear_cross_entropy(x, weight_.get(), bias, targets, -100, compute_dtype());
}

TensorParallelSplit Embedding::split_for(ParallelStyle style, int groups,
                                         const std::string& param) const {
  if (param != "weight" || style != ParallelStyle::kVocab) return {};
  return split_of(weight_.get(), 0, 1);
}

void Embedding::parallelize(ParallelStyle style, int groups, TensorParallelGroup* group,
                            const std::string& path) {
  HF_CHECK(group_ == nullptr, "tensor parallel: ", path, " is already parallel");
  HF_CHECK_INPUT(style == ParallelStyle::kVocab && groups == 1, "tensor parallel: ", path,
                 ": an embedding splits its vocabulary (style vocab) only");
  const int T = group->size(), t = group->rank();
  const Tensor w = weight_->detach();
  HF_CHECK_INPUT(w.size(0) >= T, "tensor parallel: ", path, " has ", w.size(0),
                 " rows, fewer than distributed.tensor_parallel ", T);
  const TensorParallelSplit s = split_of(w, 0, 1);
  vocab_begin_ = tensor_parallel_range(w.size(0), t, T).first;
  reset_parameter(weight_, tensor_parallel_slice(w, s, t, T), s);
  style_ = style;
  group_ = group;
}

// ---- norms --------------------------------------------------------------------------------------

LayerNorm::LayerNorm(int64_t dim, double eps, bool bias) : eps_(eps) {
  weight_ = register_parameter("weight", ops::ones({dim}));
  if (bias) bias_ = register_parameter("bias", ops::zeros({dim}));
}

Tensor LayerNorm::forward(const Tensor& x) const {
  return layer_norm(x, weight_.get(), bias_.get_or_none(), eps_);
}

RMSNorm::RMSNorm(int64_t dim, double eps) : eps_(eps) {
  weight_ = register_parameter("weight", ops::ones({dim}));
}

Tensor RMSNorm::forward(const Tensor& x) const {
  // Under kReplicatedSumGrad the weight's gradient (from this rank's heads) is summed over
  // the group on its way back.
  return rms_norm(x, group_ ? copy_to_tensor_parallel(weight_.get(), *group_) : weight_.get(),
                  eps_);
}

void RMSNorm::parallelize(ParallelStyle style, int groups, TensorParallelGroup* group,
                          const std::string& path) {
  HF_CHECK(group_ == nullptr, "tensor parallel: ", path, " is already parallel");
  HF_CHECK_INPUT(style == ParallelStyle::kReplicatedSumGrad && groups == 1,
                 "tensor parallel: ", path,
                 ": a norm can only be replicated with its gradient summed");
  style_ = style;
  group_ = group;
}

}  // namespace hfrun::nn
