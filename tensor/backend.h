// The narrow interface a device implements. hfrun::ops validates arguments, picks dtypes and
// allocates outputs; a Backend only computes. Unless a method says otherwise, tensors passed in
// are contiguous, on the backend's device, and outputs are preallocated with the right shape.
// To add a backend: implement this class (tensor/backend/<device>/) and register it with
// register_backend(); to add an op: declare it in tensor/ops.h, add a primitive here if it
// cannot be composed from existing ones, implement it in every backend, and add a row to the
// op tests (tests/tensor) and a gradient check (tests/autograd).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "tensor/ops.h"
#include "tensor/tensor.h"

namespace hfrun {

enum class BinaryOp : uint8_t { kAdd, kSub, kMul, kDiv, kMax, kEq, kGt, kLt };
enum class RandomKind : uint8_t { kUniform, kNormal };

// Fused optimizer updates (optim/adamw.cpp, optim/sgd.cpp). optim/ computes each parameter's
// scalars in double as torch does and rounds them to f32; a backend applies the per-element f32
// arithmetic in torch's order, with one fused multiply-add where torch's vectorised kernels
// fuse one (optim/optimizer.h states the formulas).
// grad_scale multiplies each gradient element as it is read (an f32 multiply, as torch's
// grads.mul_(clip_coef) before the step; 1 leaves it exact).
struct AdamWScalars {
  float grad_scale = 1.0f;
  float decay;  // 1 - lr * wd (1 for parameters without decay)
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float bias_correction2_sqrt;  // sqrt(1 - beta2^t)
  float eps;
  float neg_step_size;  // -lr / (1 - beta1^t)
};
// param, grad: f32, same shape, any strides (views into the flat buffers, typically); exp_avg,
// exp_avg_sq: f32, contiguous, the parameter's shape. All on the backend's device.
// param_copy: undefined, or a contiguous bf16/f16 tensor of the parameter's shape (mixed
// precision's compute copy of the weight) that receives the new value rounded as copy() rounds
// it, element for element in the parameter's index order: the copy a cast after the update would
// make, without a pass of its own over the parameter.
struct AdamWUpdate {
  Tensor param, grad, exp_avg, exp_avg_sq;
  AdamWScalars s;
  Tensor param_copy;
};
struct SGDScalars {
  float grad_scale = 1.0f;  // as AdamWScalars'
  float weight_decay;       // L2 term added to the gradient when l2
  float neg_lr;
  float momentum;
  float one_minus_dampening;
  bool l2;     // decay parameter with weight_decay != 0
  bool first;  // the parameter's first step: the momentum buffer starts as d
  bool nesterov;
};
// momentum_buffer: undefined without momentum, else as AdamWUpdate's state buffers.
struct SGDUpdate {
  Tensor param, grad, momentum_buffer;
  SGDScalars s;
  Tensor param_copy;  // as AdamWUpdate's
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // dst[i] = cast(src[i]); src may be any strided view (stride 0 = broadcast) of dst's shape;
  // dst may be strided too. Any dtype pair.
  virtual void copy(const Tensor& src, Tensor& dst) = 0;
  virtual void fill(Tensor& dst, double value) = 0;
  virtual void fill_random(Tensor& dst, RandomKind kind, uint64_t seed, uint64_t offset, double a,
                           double b) = 0;  // uniform [a, b) or normal(mean a, std b)
  virtual void axpy(Tensor& dst, const Tensor& src, double alpha) = 0;  // dst += alpha * src
  virtual void scale(Tensor& dst, double alpha) = 0;

  virtual void unary(ops::UnaryOp op, const Tensor& x, Tensor& y) = 0;
  virtual void unary_backward(ops::UnaryOp op, const Tensor& gy, const Tensor& x, const Tensor& y,
                              Tensor& gx) = 0;
  virtual void pow_scalar(const Tensor& x, double p, Tensor& y) = 0;
  // a and b are views of out's shape (strided, possibly stride 0) with out's compute dtype.
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  virtual void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) = 0;

  // x viewed as [outer, n, inner]; out [outer, inner].
  virtual void reduce_sum(const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                          Tensor& out) = 0;
  virtual void reduce_max(const Tensor& x, int64_t outer, int64_t n, int64_t inner, Tensor& values,
                          Tensor& indices) = 0;

  // a [batch..., M, K], b [batch..., K, N] already broadcast to out's batch dims (may be
  // strided/transposed views); bias [N] or undefined; out [batch..., M, N] contiguous.
  virtual void matmul(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& out) = 0;
  // out += a @ b for 2-D a [M, K], b [K, N] (strided views as matmul takes them) and a
  // contiguous f32 out [M, N]: a weight gradient accumulated into its buffer. The default
  // computes the product and adds it; a backend whose GEMM accumulates (beta = 1) overrides it.
  virtual void matmul_add(const Tensor& a, const Tensor& b, Tensor& out);

  // pre = a @ b + bias, out = gelu_tanh(pre): 2-D a, b as matmul takes them, out and pre
  // contiguous [M, N] of one dtype. The default composes matmul and unary (kGeluTanh); a
  // backend with a GEMM epilogue overrides it.
  virtual void matmul_gelu(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& out,
                           Tensor& pre);

  // x viewed as [outer, n, inner], softmax over n.
  virtual void softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log,
                       Tensor& y) = 0;
  virtual void softmax_backward(const Tensor& gy, const Tensor& y, int64_t outer, int64_t n,
                                int64_t inner, bool log, Tensor& gx) = 0;
  // scores [BH, T, S] -> probs = softmax(scale * scores) with positions j > i + (S - T) masked
  // when causal, with a sliding window (window > 0, causal only) also j <= i + (S - T) - window
  // (each query sees at most `window` keys, itself included: HF's sliding_window), and, when
  // key_lengths (i32 [B], B dividing BH: row block b * BH / B .. holds batch b) is defined,
  // positions j >= key_lengths[b]. A row with no visible key is all 0.
  virtual void scaled_masked_softmax(const Tensor& scores, double scale, bool causal,
                                     int64_t window, const Tensor& key_lengths, Tensor& probs) = 0;
  // The composed attention's score gradient, rows of length n over the last dim:
  // gscores = scale * probs * (gp - sum(gp * probs)), gp and probs contiguous f32 of gscores'
  // shape, gscores contiguous in any floating dtype. Rounded as softmax_backward, scale and
  // copy round it one after the other (f32 results, then the cast); the default runs those three.
  virtual void attention_scores_backward(const Tensor& gp, const Tensor& probs, int64_t n,
                                         double scale, Tensor& gscores);

  // Fused (flash-style) attention, where a backend has it; ops::attention asks first and
  // composes matmul + scaled_masked_softmax otherwise. q [B, H, T, D], k, v [B, Hkv, S, D]
  // (Hkv dividing H) are views with unit last stride. fused_attention writes out [B, H, T, D]
  // (a view, unit last stride) = softmax(scale * q k^T, masked as scaled_masked_softmax) @ v
  // without storing the probabilities, and lse [B, H, T] f32 = each row's log-sum-exp of its
  // scaled visible scores (+inf for a row that sees no key; its output is 0). The backward
  // recomputes the probabilities from q, k and lse; gout must pass fused_attention_supported in
  // q's place, gq, gk, gv are views shaped as q, k, v laid out as out. key_lengths and window
  // (> 0: a sliding window, causal only) as scaled_masked_softmax's.
  // dropout (p > 0): the probabilities [B, H, T, S] (element index in that order) dropped as
  // ops::dropout drops them before the product with v; the backward drops their gradient alike
  // and gv is the dropped probabilities' product with gout.
  virtual bool fused_attention_supported(const Tensor& /*q*/, const Tensor& /*k*/,
                                         const Tensor& /*v*/, int64_t /*window*/,
                                         const DropoutMask& /*dropout*/) {
    return false;
  }
  virtual void fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                               double scale, const Tensor& key_lengths, int64_t window,
                               const DropoutMask& dropout, Tensor& out, Tensor& lse);
  virtual void fused_attention_backward(const Tensor& gout, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const Tensor& out, const Tensor& lse,
                                        bool causal, double scale, const Tensor& key_lengths,
                                        int64_t window, const DropoutMask& dropout, Tensor& gq,
                                        Tensor& gk, Tensor& gv);

  virtual void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& y,
                          Tensor& mean, Tensor& rstd) = 0;
  virtual void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w,
                                   const Tensor& mean, const Tensor& rstd, Tensor& gx, Tensor& gw,
                                   Tensor& gb) = 0;  // gw/gb may be undefined
  virtual void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) = 0;
  virtual void rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w,
                                 const Tensor& rstd, Tensor& gx, Tensor& gw) = 0;

  virtual void embedding(const Tensor& weight, const Tensor& ids, Tensor& out) = 0;
  virtual void embedding_backward(const Tensor& gy, const Tensor& ids, Tensor& gweight) = 0;
  // gweight += embedding_backward(gy, ids): rows no id names are left as they are, and each
  // named row gets its ids' gy rows summed (as embedding_backward sums them) added once, so the
  // result has the bits of the dense gradient added to gweight. The default computes the dense
  // gradient and adds it; a backend overrides it to touch only the named rows.
  virtual void embedding_backward_add(const Tensor& gy, const Tensor& ids, Tensor& gweight);
  // Rotary position embedding, rotate-half form, in one pass: x [..., T, D] (any strides but a
  // unit last one), cos and sin contiguous [T, D] of x's dtype. Returns y, contiguous of x's
  // shape and dtype. Forward: y = x * cos + rotate_half(x) * sin; backward (x the output's
  // gradient): y = x * cos - rotate_half(x * sin); rotate_half([a, b]) = [-b, a] over halves of
  // D. Each product and sum rounded to the dtype as the composed ops round them, so the result is
  // theirs bit for bit. Returns an undefined tensor, allocating nothing, where the backend has no
  // such kernel or the operands do not fit it (the caller composes).
  virtual Tensor rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, bool backward);
  // SwiGLU's gated product (Llama's MLP) in one pass: gate and up contiguous, one shape and
  // dtype; returns silu(gate) * up with silu rounded to the dtype before the product, as the
  // composed ops (silu, then mul) store it, so the result is theirs bit for bit.
  // swiglu_backward takes the output's gradient g (contiguous, gate's shape and dtype) and
  // returns {g_gate, g_up} with the bits of the composed backward: g_up = g * s and g_s = g * up
  // (s = silu(gate) rounded, recomputed), g_gate = g_s * silu'(gate), each rounded to the dtype.
  // Both return undefined tensors, allocating nothing, where the backend has no such kernel or
  // the operands do not fit it (the caller composes).
  virtual Tensor swiglu(const Tensor& gate, const Tensor& up);
  virtual std::pair<Tensor, Tensor> swiglu_backward(const Tensor& g, const Tensor& gate,
                                                    const Tensor& up);

  virtual void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                             Tensor& loss, Tensor& lse) = 0;
  virtual void cross_entropy_backward(const Tensor& gloss, const Tensor& logits,
                                      const Tensor& targets, const Tensor& lse,
                                      int64_t ignore_index, Tensor& glogits) = 0;

  // Cross-entropy over logits that come a block of columns at a time (the vocabulary's columns
  // [col0, col0 + n) of an [N, V] whole that is never held: autograd::linear_cross_entropy).
  // Optional: where cross_entropy_blocks() is false the others are never called (their defaults
  // throw). The caller has checked targets against V. The row state is f32 [N, 3]: the running
  // max m, the sum s of exp(logit - m) over the columns folded so far, the target's logit.
  //   cross_entropy_fold: folds logits f32 [N, n] (contiguous) into state (m = -inf, s = 0 to
  //     start); a row whose target is ignore_index keeps no target logit.
  //   cross_entropy_finish: lse[r] = m + log(s) (m where m is infinite) and loss as
  //     cross_entropy's: the mean over counted rows of lse - the target's logit, NaN when none.
  //   cross_entropy_block_backward: glogits [N, n] (f32, or the GEMM's bf16/f16; may be logits'
  //     own storage when f32) = (exp(logit - lse) - [column == target]) * gloss / count, 0 on
  //     ignored rows: cross_entropy_backward's arithmetic on the block's columns, where count is
  //     the whole batch's counted rows (the caller's: the block may hold some of the rows).
  virtual bool cross_entropy_blocks() const { return false; }
  // Whether a loss over `logits` logits (N x V) whose head GEMMs run in `gemm_dtype` should take
  // the blocks by default: where recomputing the head's product in the backward costs less than
  // storing and passing over its logits.
  virtual bool prefers_cross_entropy_blocks(DType /*gemm_dtype*/, int64_t /*logits*/) const {
    return false;
  }
  virtual void cross_entropy_fold(const Tensor& logits, int64_t col0, const Tensor& targets,
                                  int64_t ignore_index, Tensor& state);
  virtual void cross_entropy_finish(const Tensor& state, const Tensor& targets,
                                    int64_t ignore_index, Tensor& loss, Tensor& lse);
  virtual void cross_entropy_block_backward(const Tensor& gloss, const Tensor& logits, int64_t col0,
                                            const Tensor& targets, const Tensor& lse,
                                            int64_t ignore_index, int64_t count, Tensor& glogits);

  virtual void dropout(const Tensor& x, double p, uint64_t seed, Tensor& y) = 0;

  // One optimizer step over many parameters at once (a CUDA backend: one launch).
  virtual void adamw_update(const std::vector<AdamWUpdate>& updates) = 0;
  virtual void sgd_update(const std::vector<SGDUpdate>& updates) = 0;
  // Sum over every tensor of the sum of its squared elements (contiguous f32 tensors),
  // accumulated in double in an order fixed by the sizes alone: the gradient-norm reduction.
  // With inv_scale != 1 every element is first multiplied by it in place (f32), and the squares
  // are those of the products: unscale_grads and the norm in one pass, with the same result as
  // the two in turn (an inf or NaN element makes the sum inf or NaN).
  virtual double sum_squares(const std::vector<Tensor>& xs, float inv_scale) = 0;
  // Loss scaling's unscale (torch's _amp_foreach_non_finite_check_and_unscale_): multiplies
  // every element of the contiguous f32 tensors by inv_scale in place (f32 arithmetic; nothing
  // when inv_scale is 1) and returns whether any element was inf or NaN.
  virtual bool unscale_grads(const std::vector<Tensor>& xs, float inv_scale) = 0;
  // Waits until every operation queued on `device` has finished (a no-op on the CPU).
  virtual void synchronize(Device device) = 0;
};

Backend& backend_for(Device device);
void register_backend(DeviceType type, Backend* backend);

}  // namespace hfrun
