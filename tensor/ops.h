// hfrun::ops: the raw tensor ops. No autograd here: these are the kernels (forward and the
// backward formulas, side by side) that autograd/functions.h wraps into differentiable
// functions. Every op validates its arguments and throws hfrun::Error naming the op and the
// shapes/dtypes on a mismatch, allocates its result, and dispatches to the device's backend
// (tensor/backend.h). Results are contiguous unless the op is a view.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "tensor/random.h"
#include "tensor/tensor.h"

namespace hfrun {
// Declared outside hfrun::ops so that argument-dependent lookup on it does not pull the raw
// ops::unary into unqualified calls of the differentiable hfrun::unary.
enum class UnaryOp : uint8_t {
  kNeg,
  kExp,
  kLog,
  kTanh,
  kSqrt,
  kRsqrt,
  kSigmoid,
  kRelu,
  kSilu,
  kGelu,      // exact: x * Phi(x) with erf
  kGeluTanh,  // GPT-2's gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  kAbs,
  kSquare,
};
}  // namespace hfrun

namespace hfrun::ops {

// ---- creation -------------------------------------------------------------------------------
Tensor empty(const Shape& shape, DType dtype = DType::kF32, Device device = Device::cpu());
Tensor zeros(const Shape& shape, DType dtype = DType::kF32, Device device = Device::cpu());
Tensor ones(const Shape& shape, DType dtype = DType::kF32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::kF32,
            Device device = Device::cpu());
Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);
Tensor scalar(double value, DType dtype = DType::kF32,
              Device device = Device::cpu());  // rank-0 tensor
Tensor arange(int64_t n, DType dtype = DType::kI64);
// Copies `values` (converted to dtype) into a new tensor of `shape` (numel must match).
Tensor from_vector(const std::vector<float>& values, const Shape& shape, DType dtype = DType::kF32);
Tensor from_ints(const std::vector<int64_t>& values, const Shape& shape, DType dtype = DType::kI64);
// Philox values that depend only on (seed, offset, element index): the same on every device.
Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::kF32, double mean = 0,
             double std = 1, Device device = Device::cpu());
Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::kF32, double lo = 0,
            double hi = 1, Device device = Device::cpu());  // uniform in [lo, hi)

// Random initialisation put off, for a model whose weights a checkpoint is about to overwrite:
// while a DeferredRandom is open on this thread (and not stopped), randn and rand reserve their
// counters as usual but return tensors filled with NaN, remembering how each would have been
// filled. fill() draws those values later, the same ones (they depend only on seed, counter and
// element index), for the tensors the checkpoint did not provide. What was computed from such a
// tensor before fill() (a scaled copy, a row zeroed in place and then redrawn) is not redone:
// the NaN shows such a value, where it survives, to the trainer's non-finite guard instead of
// training on garbage. Nestable, stopped in any order; not thread-shared.
class DeferredRandom {
 public:
  DeferredRandom();
  ~DeferredRandom();
  DeferredRandom(const DeferredRandom&) = delete;
  DeferredRandom& operator=(const DeferredRandom&) = delete;
  // randn and rand fill at once again (fill() still works).
  void stop();
  // Gives t the values randn/rand would have given it, when t is a whole tensor one of them
  // returned while this was open; returns false (t unchanged) for any other tensor.
  bool fill(Tensor& t) const;

 private:
  struct Pending;
  friend struct DeferredRandomAccess;
  std::vector<Pending> pending_;
  DeferredRandom* previous_ = nullptr;
  bool open_ = true;
};

// ---- views (share storage; no copy) -----------------------------------------------------------
Tensor view(const Tensor& x, const Shape& shape);     // one -1 allowed; x's strides must allow it
Tensor reshape(const Tensor& x, const Shape& shape);  // a view when possible, else a copy
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor select(const Tensor& x, int64_t dim, int64_t index);  // drops dim
Tensor expand(const Tensor& x, const Shape& shape);  // broadcast to shape (stride 0), -1 keeps
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1);

// ---- copies and casts -----------------------------------------------------------------------
// x on `device` (x itself, detached, when already there): a contiguous copy with x's dtype.
// Host <-> CUDA copies are synchronous with respect to the host.
Tensor to_device(const Tensor& x, Device device);
Tensor contiguous(const Tensor& x);  // x itself when already contiguous
Tensor clone(const Tensor& x);
Tensor to_dtype(const Tensor& x, DType dtype);  // x itself when dtype matches
// x is a permutation of a contiguous tensor (contiguous, or a transposed weight, say): its
// elements fill numel() consecutive places from raw_data(); to_dtype keeps such a layout.
bool is_dense(const Tensor& x);
// src broadcast to dst's shape and cast to its dtype; src and dst may be on different devices.
void copy_(Tensor& dst, const Tensor& src);
void fill_(Tensor& dst, double value);
// dst += alpha * src (same shape and dtype). dst is contiguous, or, when alpha is 1, any view
// that does not overlap itself (stride 0) or src.
void add_(Tensor& dst, const Tensor& src, double alpha = 1.0);
void scale_(Tensor& dst, double alpha);  // dst *= alpha

// ---- elementwise ------------------------------------------------------------------------------
// Binary ops broadcast (NumPy rules); both floating inputs of different dtypes promote to f32.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& x, double s);
Tensor mul_scalar(const Tensor& x, double s);
Tensor pow_scalar(const Tensor& x, double p);
Tensor eq(const Tensor& a, const Tensor& b);  // bool result
Tensor gt(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);

using hfrun::UnaryOp;
const char* unary_op_name(UnaryOp op);
Tensor unary(UnaryOp op, const Tensor& x);
// d/dx for the op given upstream gy, the input x and the output y (some formulas use y).
Tensor unary_backward(UnaryOp op, const Tensor& gy, const Tensor& x, const Tensor& y);
inline Tensor neg(const Tensor& x) {
  return unary(UnaryOp::kNeg, x);
}
inline Tensor exp(const Tensor& x) {
  return unary(UnaryOp::kExp, x);
}
inline Tensor log(const Tensor& x) {
  return unary(UnaryOp::kLog, x);
}
inline Tensor tanh(const Tensor& x) {
  return unary(UnaryOp::kTanh, x);
}
inline Tensor sqrt(const Tensor& x) {
  return unary(UnaryOp::kSqrt, x);
}
inline Tensor relu(const Tensor& x) {
  return unary(UnaryOp::kRelu, x);
}
inline Tensor silu(const Tensor& x) {
  return unary(UnaryOp::kSilu, x);
}
inline Tensor sigmoid(const Tensor& x) {
  return unary(UnaryOp::kSigmoid, x);
}
inline Tensor gelu(const Tensor& x, bool tanh_approx = false) {
  return unary(tanh_approx ? UnaryOp::kGeluTanh : UnaryOp::kGelu, x);
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);     // cond bool/u8, broadcasts
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);  // mask broadcasts to x

// ---- reductions -------------------------------------------------------------------------------
// dims empty = all dims. f32 accumulation for floating inputs.
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Max over one dim: values and the (first) argmax as i64.
struct MaxResult {
  Tensor values;
  Tensor indices;
};
MaxResult max(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor max_all(const Tensor& x);
// Sums a broadcast gradient back to `shape` (the inverse of broadcasting `shape` to g's shape).
Tensor sum_to(const Tensor& g, const Shape& shape);

// ---- matmul (oneDNN on CPU) -------------------------------------------------------------------
// a [..., M, K] @ b [..., K, N] (+ bias [N]) -> [..., M, N]. Batch dims broadcast; a rank-2 b is
// shared by every batch. Transposed operands are plain transposed views (no copy): oneDNN reads
// the strides. bf16/f16 inputs accumulate in f32; the result is out_dtype (default: a's dtype).
Tensor matmul(const Tensor& a, const Tensor& b, const Tensor& bias = Tensor(),
              std::optional<DType> out_dtype = std::nullopt);
// out += a @ b for 2-D a [M, K], b [K, N] into a contiguous f32 out [M, N] (a weight gradient
// accumulated into its buffer: one GEMM that adds, where the backend has one), or a bf16 one
// from bf16 operands (rounded once from the f32 sum where the GEMM adds).
void matmul_add_(Tensor& out, const Tensor& a, const Tensor& b);
// out = a @ b into an existing contiguous f32 out [M, N] (same operands as matmul_add_): a
// weight gradient written over a buffer that holds none yet.
void matmul_into_(Tensor& out, const Tensor& a, const Tensor& b);
// A linear layer followed by GPT-2's tanh GELU, for 2-D a [M, K] and b [K, N]: pre = a @ b +
// bias and out = gelu_tanh(pre), both out_dtype (pre is what the GELU's backward reads). One
// GEMM with cuBLASLt's GELU epilogue on CUDA; the CPU composes matmul and unary.
struct MatmulGeluResult {
  Tensor out, pre;
};
MatmulGeluResult matmul_gelu(const Tensor& a, const Tensor& b, const Tensor& bias = Tensor(),
                             std::optional<DType> out_dtype = std::nullopt);

// ---- normalisation, softmax, losses -----------------------------------------------------------
Tensor softmax(const Tensor& x, int64_t dim);
Tensor softmax_backward(const Tensor& gy, const Tensor& y, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
Tensor log_softmax_backward(const Tensor& gy, const Tensor& y, int64_t dim);

// Over the last dim. mean/rstd are f32 [rows] saved for the backward.
struct LayerNormResult {
  Tensor y, mean, rstd;
};
// Rotary position embedding, rotate-half form (HF Llama), with cos and sin [T, D] of x's dtype:
// x * cos + rotate_half(x) * sin, or with backward (x the output's gradient) x * cos -
// rotate_half(x * sin), rotate_half([a, b]) = [-b, a]. In one pass where the backend has a
// kernel (Backend::rotary), else composed; the same bits either way.
Tensor rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, bool backward);
// SwiGLU's gated product silu(gate) * up (Llama's MLP; gate and up of one shape and dtype),
// and its gradients {g_gate, g_up} from the output's gradient g: in one pass where the backend
// has the kernels (Backend::swiglu), else composed (silu, mul and their backwards); the same
// bits either way. The backward needs only gate and up (silu(gate) is recomputed).
Tensor swiglu(const Tensor& gate, const Tensor& up);
std::pair<Tensor, Tensor> swiglu_backward(const Tensor& g, const Tensor& gate, const Tensor& up);
LayerNormResult layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);
struct LayerNormGrads {
  Tensor gx, gweight, gbias;
};
LayerNormGrads layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight,
                                   const Tensor& mean, const Tensor& rstd, bool need_gbias);

struct RmsNormResult {
  Tensor y, rstd;
};
RmsNormResult rms_norm(const Tensor& x, const Tensor& weight, double eps);
struct RmsNormGrads {
  Tensor gx, gweight;
};
RmsNormGrads rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight,
                               const Tensor& rstd);

// weight [V, C], ids (i32/i64, any shape) -> [..ids, C]; ids outside [0, V) are an error.
Tensor embedding(const Tensor& weight, const Tensor& ids);
Tensor embedding_backward(const Tensor& gy, const Tensor& ids, int64_t num_rows);
// gweight += embedding_backward(gy, ids, rows of gweight), with the same bits, touching only
// the rows the ids name (gweight contiguous, of gy's dtype).
void embedding_backward_add_(Tensor& gweight, const Tensor& gy, const Tensor& ids);

// Mean token cross-entropy of logits [N, V] against targets [N] (i32/i64); targets equal to
// ignore_index contribute nothing and are not counted. Returns the f32 scalar loss and the
// per-row logsumexp [N] that the backward reuses (no [N, V] softmax is stored).
struct CrossEntropyResult {
  Tensor loss, lse;
};
CrossEntropyResult cross_entropy(const Tensor& logits, const Tensor& targets,
                                 int64_t ignore_index = -100);
// With overwrite_logits the gradient is written over a contiguous logits' storage, which the
// caller must no longer need (autograd's cross_entropy, when its saved logits are unshared: no
// second [N, V] tensor at the start of backward).
Tensor cross_entropy_backward(const Tensor& gloss, const Tensor& logits, const Tensor& targets,
                              const Tensor& lse, int64_t ignore_index = -100,
                              bool overwrite_logits = false);

// Cross-entropy over logits that come a block at a time and are never whole (the output layer's
// GEMM a block of the vocabulary's columns and of the rows at a time, recomputed in the
// backward: autograd::linear_cross_entropy). The losses are cross_entropy's up to the order of
// their sums; the gradients cross_entropy_backward's arithmetic.
struct CrossEntropyBlocks {
  Tensor state;    // f32 [N, 3] per row (Backend::cross_entropy_fold's)
  Tensor targets;  // i32/i64 [N], contiguous
  int64_t vocab = 0, ignore_index = -100;
  int64_t count = 0;  // rows whose target counts
};
// Whether `device`'s backend has the kernels, and whether it takes them by default for `logits`
// logits (N x V) of a head whose GEMMs run in `gemm_dtype`.
bool cross_entropy_blocks(Device device);
bool prefers_cross_entropy_blocks(Device device, DType gemm_dtype, int64_t logits);
// Checks targets [N] against [0, vocab) and ignore_index, as cross_entropy does.
CrossEntropyBlocks cross_entropy_begin(const Tensor& targets, int64_t vocab,
                                       int64_t ignore_index = -100);
// Folds logits f32 [rows, n] (contiguous): rows [row0, row0 + rows), columns [col0, col0 + n).
void cross_entropy_fold_(CrossEntropyBlocks& s, const Tensor& logits, int64_t row0, int64_t col0);
// loss and lse [N] once every column of every row is folded.
CrossEntropyResult cross_entropy_finish(const CrossEntropyBlocks& s);
// The gradient of the logits block (as fold_'s) into out [rows, n] (contiguous, f32 or 16-bit;
// logits' own storage when f32), for the loss's gradient gloss and finish's lse.
void cross_entropy_block_backward_(Tensor& out, const Tensor& gloss, const CrossEntropyBlocks& s,
                                   const Tensor& lse, const Tensor& logits, int64_t row0,
                                   int64_t col0);

// Causal (or full) scaled dot-product attention: q [B, H, T, D], k [B, Hkv, S, D], v [B, Hkv, S,
// Dv] with Hkv dividing H (grouped-query attention: query head h reads KV head h / (H / Hkv);
// K and V are never repeated); when causal, query i sees keys j <= i + (S - T). key_lengths, when
// defined, is an integer [B] tensor on q's device (right padding, HF's attention_mask as
// lengths): the queries of batch b see only keys j < key_lengths[b] as well. A query that sees
// no key gets an output of 0 (and no gradient). Where the device's backend has a fused kernel
// for the inputs (CPU: f32, and bf16 where oneDNN computes it; CUDA: bf16/f16, head size 16, 32,
// 64 or 128, no sliding window, no dropout) it runs flash-style and keeps only lse [B, H, T] (f32
// row log-sum-exp) for the backward, and out is a [B, H, T, D] view of a [B, T, H, D] buffer (so
// transposing it back to [B, T, H*D] is free); otherwise it composes matmul and softmax and
// keeps probs [B, H, T, S] (f32). With keep_for_backward (the caller
// will run attention_backward) the composed path makes q, k, v dense once (a strided view, such
// as heads split out of one projection, is copied) and returns them as q, k, v: pass the whole
// result to the backward, and those q, k, v in place of the inputs (equal values; the
// backward's GEMMs then copy nothing). Without it the GEMMs read the inputs as they take them
// (a KV cache's narrowed prefix is not copied at every decoding step). window > 0 (causal
// only): a sliding window, query i sees keys i + (S - T) - window < j <= i + (S - T) (HF's
// sliding_window: at most `window` keys, itself included). dropout (p > 0, training): the
// probabilities are dropped with ops::dropout's mask over their [B, H, T, S] element index before
// the product with v (HF's attention dropout); probs keeps them undropped, and the backward
// regenerates the mask.
struct AttentionResult {
  Tensor out, probs, lse;
  Tensor key_lengths;   // i32 [B] as the kernels read it (undefined without padding)
  Tensor q, k, v;       // composed, kept for the backward: the dense operands
  int64_t window = 0;   // the sliding window in effect (0: none, or one that masks no key)
  DropoutMask dropout;  // the probabilities' dropout
};
AttentionResult attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                          double scale, const Tensor& key_lengths = Tensor(),
                          bool keep_for_backward = false, int64_t window = 0,
                          const DropoutMask& dropout = {});
struct AttentionGrads {
  Tensor gq, gk, gv;
};
// The key lengths are the forward's (forward.key_lengths).
AttentionGrads attention_backward(const Tensor& gout, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const AttentionResult& forward, bool causal,
                                  double scale);
// Whether attention() may use fused kernels (default on; HFRUN_FUSED_ATTENTION=0 in the
// environment starts a process with them off). Returns the previous setting.
bool set_fused_attention(bool on);
// Whether attention() on the CPU takes the fused kernel (keeping lse, not probs) for heads of
// this dtype and size without a window (dropout or not: the CPU kernel drops too): what a memory
// estimate needs to know.
bool cpu_attention_fused(DType dtype, int64_t head_dim);

// Inverted dropout with a counter-based mask: element i is kept iff hash(seed, i) >= p, so the
// mask is reproducible for any thread count and the backward regenerates it from the seed.
Tensor dropout(const Tensor& x, double p, uint64_t seed);
Tensor dropout_backward(const Tensor& gy, double p, uint64_t seed);

// ---- joining ---------------------------------------------------------------------------------
Tensor cat(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim);  // views

}  // namespace hfrun::ops
