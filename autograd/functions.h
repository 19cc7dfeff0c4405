// Differentiable functions: what models call. Each runs the raw op from tensor/ops.h and,
// when grad mode is on and an input requires grad, records a node whose backward captures
// only what it reads. Views (reshape, transpose, narrow, ...) are differentiable too.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "tensor/ops.h"

namespace hfrun {

// views
Tensor view(const Tensor& x, const Shape& shape);
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor contiguous(const Tensor& x);
Tensor to_dtype(const Tensor& x, DType dtype);  // gradient is cast back to x's dtype

// elementwise (broadcasting; gradients are summed back to each input's shape)
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& x, double s);
Tensor mul_scalar(const Tensor& x, double s);
Tensor pow_scalar(const Tensor& x, double p);
Tensor unary(ops::UnaryOp op, const Tensor& x);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor silu(const Tensor& x);
// silu(gate) * up, SwiGLU's gated product (ops::swiglu: one pass on the CPU). Keeps gate and
// up for the backward (not silu(gate), which it recomputes); the bits of mul(silu(gate), up).
Tensor swiglu(const Tensor& gate, const Tensor& up);
Tensor gelu(const Tensor& x, bool tanh_approx = false);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

// reductions
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);  // gradient to the argmax

// matmul and layers
Tensor matmul(const Tensor& a, const Tensor& b, const Tensor& bias = Tensor(),
              std::optional<DType> out_dtype = std::nullopt);
// How linear's weight is laid out: [in, out] (HF Conv1D, GPT-2) or [out, in] (torch.nn.Linear:
// Llama, BERT, LoRA's factors, a tied output head over the embedding).
enum class WeightLayout { kInOut, kOutIn };
// x [..., in] @ weight [in, out] + bias [out] (kInOut), or x @ weight^T + bias with weight
// [out, in] (kOutIn). With compute_dtype (bf16 for mixed precision) the GEMMs take bf16 copies of
// x and weight, accumulate in f32 and return out_dtype (default x's dtype), rounded once from the
// f32 accumulator; the gradients of an f32 x and weight come from the f32 accumulators of their
// GEMMs (f16: x's through its cast, rounded to f16 as autocast's). Either way the weight
// itself is the op's input: its gradient is produced in its own layout (where its gradient buffer
// is reachable, the GEMM writes into it), and its compute-dtype copy is the cast of its own
// memory.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              std::optional<DType> compute_dtype = std::nullopt,
              std::optional<DType> out_dtype = std::nullopt,
              WeightLayout layout = WeightLayout::kInOut);
// A weight's compute-dtype copy, with the source it was made from (held, so its storage cannot
// be reused for other values while the copy is known).
struct WeightCopy {
  Tensor source, copy;
};
// Within a scope on this thread, linear's compute-dtype copies of its weights are made once per
// weight (its storage, offset, shape and strides) and reused: the micro-steps of one optimizer
// step read unchanged weights, and each used to cast every weight again. The weights must not be
// written while the scope lives, nor their storage reused for other values (ZeRO-3's gathered
// parameters are). Scopes do not nest.
class WeightCastScope {
 public:
  WeightCastScope();
  // A scope that starts with copies made earlier and still equal to their sources' cast: the
  // trainer's across optimizer steps (the optimizer writes the new weights' copies, and frozen
  // weights never change).
  explicit WeightCastScope(std::vector<WeightCopy> carried);
  ~WeightCastScope();
  WeightCastScope(const WeightCastScope&) = delete;
  WeightCastScope& operator=(const WeightCastScope&) = delete;
  // Copies made (cache misses) so far in this scope.
  int64_t casts() const { return casts_; }
  // The copies carried in or made so far; the scope keeps none and makes no more reuse.
  std::vector<WeightCopy> release();

 private:
  friend Tensor weight_in_dtype(const Tensor& weight, DType dtype);
  std::vector<WeightCopy> cache_;
  int64_t casts_ = 0;
};
// weight in dtype: itself when it has it, else a copy (reused within a WeightCastScope).
Tensor weight_in_dtype(const Tensor& weight, DType dtype);
// Within the scope on this thread, the linears under bf16 mixed precision that read `x` itself
// (the same tensor, not a copy or view of it) share one bf16 copy of it, made by the first,
// instead of each casting it and keeping its own for the backward: q, k and v read one normed
// input, gate and up another. x must not be written while the scope lives. Scopes nest.
class InputCastScope {
 public:
  explicit InputCastScope(const Tensor& x);
  ~InputCastScope();
  InputCastScope(const InputCastScope&) = delete;
  InputCastScope& operator=(const InputCastScope&) = delete;

 private:
  friend Tensor input_in_dtype(const Tensor& x, DType dtype);
  Tensor x_, copy_;
  InputCastScope* outer_;
};
// x in dtype, for a GEMM: itself when it has it, else a copy (not differentiable; shared within
// an InputCastScope for x).
Tensor input_in_dtype(const Tensor& x, DType dtype);
// y + linear(x, weight, no bias, compute_dtype, y's dtype, layout), the product added into y's
// own memory by one accumulating GEMM (oneDNN's sum post-op, cuBLASLt's beta = 1) where y is
// contiguous, f32 or bf16 with bf16 GEMMs, and nothing else holds its storage (pass it moved:
// a view, or a tensor another op saved for its backward, takes the add instead). y's gradient is
// the output's. LoRA's B(h) added to the base layer's output: no [.., out] product tensor and
// no pass to add it.
Tensor linear_add(Tensor y, const Tensor& x, const Tensor& weight,
                  std::optional<DType> compute_dtype = std::nullopt,
                  WeightLayout layout = WeightLayout::kInOut);
// gelu_tanh(linear(x, weight, bias)) as one op: a GEMM with cuBLASLt's GELU epilogue on CUDA
// (the pre-activation, out_dtype, is kept for the backward), the composition on the CPU.
Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
                   std::optional<DType> compute_dtype = std::nullopt,
                   std::optional<DType> out_dtype = std::nullopt,
                   WeightLayout layout = WeightLayout::kInOut);
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);
Tensor embedding(const Tensor& weight, const Tensor& ids);
// logits [..., V] and targets [...]: mean cross-entropy over non-ignored targets.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);
// cross_entropy(linear(x, weight, bias, compute_dtype, f32, kOutIn), targets, ignore_index)
// without the logits: x [..., C], weight [V, C] (nn.Linear's layout, or a tied embedding table),
// bias [V] or undefined, targets [...]. The output layer's GEMMs run a block of rows and of the
// vocabulary at a time (blocks of about 4 MB of f32 logits unless block_rows / block_columns are
// given), forward and again in the backward, which needs only x, the weight and each row's
// log-sum-exp: no [N, V] tensor is ever held. Losses and gradients are the composition's up to
// the order of their f32 sums. The weight's gradient goes into its buffer where that is the sink
// (as linear's). Needs the backend's blocked cross-entropy (ops::cross_entropy_blocks).
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& bias,
                            const Tensor& targets, int64_t ignore_index = -100,
                            std::optional<DType> compute_dtype = std::nullopt,
                            int64_t block_rows = 0, int64_t block_columns = 0);
// Whether a model's token loss takes linear_cross_entropy for `logits` logits (N x V) of a head
// on `device` whose GEMMs run in gemm_dtype: HFRUN_FUSED_LOSS=1 (or 0) where the backend has the
// kernels, else the backend's preference (the CPU's: bf16 GEMMs on AMX, 2^25 logits or more).
// Never for f16 GEMMs, whose weight gradient autocast rounds to f16 (the overflow loss scaling
// must see).
bool fuses_linear_cross_entropy(Device device, DType gemm_dtype, int64_t logits);
// q, k, v [B, H, T, D]; scale defaults to 1/sqrt(D); key_lengths (integer [B] on q's device, or
// undefined) masks right padding: batch b's queries see keys [0, key_lengths[b]) only. window >
// 0 (causal): a sliding window of that many keys (ops::attention). The backward needs nothing
// more: masked positions have probability 0. dropout_p > 0 with a generator (training): the
// attention probabilities are dropped (HF's attention dropout), the mask drawn from `dropout` as
// dropout() draws one for a [B, H, T, S] tensor, inside the fused kernel where there is one.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    bool causal = true, std::optional<double> scale = std::nullopt,
                                    const Tensor& key_lengths = Tensor(), int64_t window = 0,
                                    double dropout_p = 0, Generator* dropout = nullptr);
// Rotary position embedding, rotate-half form (HF Llama): x [..., T, D] with cos, sin [T, D]
// (f32; cast to x's dtype): x * cos + rotate_half(x) * sin, rotate_half([x1, x2]) = [-x2, x1].
Tensor rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin);
// Identity when !training or p == 0.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);
// The mask dropout() draws for a tensor of numel elements: it reserves their Philox counters
// from gen and keys the mask by (seed, offset).
DropoutMask draw_dropout_mask(int64_t numel, double p, Generator& gen);

// joining
Tensor cat(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim);

}  // namespace hfrun
