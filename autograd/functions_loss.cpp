// linear_cross_entropy: an output layer and its cross-entropy without the [N, V] logits. The
// forward multiplies a block of rows by a block of the vocabulary at a time and folds each f32
// block into the rows' running max and sum (online log-sum-exp); the backward multiplies the
// block again, turns it into its gradient in the GEMM's dtype and feeds that straight into the
// two gradient GEMMs (the input's accumulated over the vocabulary's blocks in f32, the weight's
// written or added into its buffer's rows). Nothing larger than a block is ever held.
#include <algorithm>
#include <cstdlib>
#include <string>
#include <utility>

#include "autograd/functions.h"
#include "autograd/node.h"

namespace hfrun {

using autograd::needs_grad;
using autograd::record;
using Grads = std::vector<Tensor>;

namespace {

// A block's rows and, by default, its columns: an f32 block of about 4 MB (1024 of 50257
// columns for 1024 rows), where the AMX GEMM of a bf16 head runs at twice the rate of the whole
// product's (see CpuBackend::prefers_cross_entropy_blocks). Measured in the backward of a
// 4 x 256 bf16 step (SmolLM-shaped Llama, HFRUN_PROFILE=shapes): the input gradient's
// accumulating GEMMs took 48 ms with 8 MB blocks, 34 ms with 4 or 2 MB; the rest the same.
constexpr int64_t kRowBlock = 2048;
constexpr int64_t kBlockBytes = int64_t{4} << 20;
constexpr int64_t kMinColumns = 256;

struct Blocking {
  int64_t rows, cols;
};

Blocking blocking(int64_t N, int64_t V, int64_t rows, int64_t cols) {
  Blocking b;
  b.rows = std::min(N, rows > 0 ? rows : kRowBlock);
  if (cols <= 0) {
    cols = kBlockBytes / (4 * std::max<int64_t>(b.rows, 1));
    cols = std::max(kMinColumns, cols / 64 * 64);
  }
  b.cols = std::min(V, cols);
  return b;
}

Tensor mT(const Tensor& x) {
  return ops::transpose(x, -2, -1);
}

// What the forward and the backward multiply: x2 [N, C] and w [V, C] in the GEMM's dtype, the
// bias [V] (or undefined), and the f32 buffer a block of logits is written into.
struct Head {
  Tensor x2, w, bias;
  Blocking block;
  Tensor buffer;  // f32, block.rows * block.cols

  // The f32 logits of rows [r0, r0 + rows) and columns [c0, c0 + n).
  Tensor logits(int64_t r0, int64_t rows, int64_t c0, int64_t n) {
    const Tensor a = ops::narrow(x2, 0, r0, rows), b = mT(ops::narrow(w, 0, c0, n));
    if (bias.defined()) return ops::matmul(a, b, ops::narrow(bias, 0, c0, n), DType::kF32);
    if (!buffer.defined()) buffer = ops::empty({block.rows * block.cols}, DType::kF32, x2.device());
    Tensor out = ops::view(ops::narrow(buffer, 0, 0, rows * n), {rows, n});
    ops::matmul_into_(out, a, b);
    return out;
  }
};

struct Saved {
  Head head;
  ops::CrossEntropyBlocks blocks;
  Tensor lse;
  Shape x_shape;
  DType x_dtype, w_dtype, bias_dtype;
  bool gx, gw, gbias;
};

Grads backward(Saved& s, const Tensor& g_out) {
  Head& h = s.head;
  const int64_t N = h.x2.size(0), C = h.x2.size(1), V = h.w.size(0);
  const Device dev = h.x2.device();
  // The loss's gradient as every block's kernel reads it (f32 on the device), made once.
  const Tensor gloss = ops::contiguous(ops::to_dtype(ops::to_device(g_out, dev), DType::kF32));
  const DType gemm = h.x2.dtype();
  // The input's gradient accumulates over the vocabulary's blocks in f32 and is rounded once, as
  // one GEMM over the whole vocabulary rounds it.
  Tensor gx = s.gx ? ops::empty({N, C}, DType::kF32, dev) : Tensor();
  // The weight's: into its buffer where that is the sink, else into an f32 [V, C] of its own.
  bool overwrite = true, sunk = false;
  Tensor gw;
  if (s.gw) {
    if (s.w_dtype == DType::kF32) {
      gw = autograd::gradient_sink(1, {V, C}, DType::kF32, dev, &overwrite);
      sunk = gw.defined();
    }
    if (!sunk) {
      gw = ops::empty({V, C}, DType::kF32, dev);
      overwrite = true;
    }
  }
  Tensor gbias = s.gbias ? ops::zeros({V}, DType::kF32, dev) : Tensor();
  // The block's gradient in the GEMM's dtype (f32: over the logits themselves).
  Tensor gbuf =
      gemm != DType::kF32 ? ops::empty({h.block.rows * h.block.cols}, gemm, dev) : Tensor();
  for (int64_t r0 = 0; r0 < N; r0 += h.block.rows) {
    const int64_t rows = std::min(h.block.rows, N - r0);
    const Tensor x_rows = ops::narrow(h.x2, 0, r0, rows);
    Tensor gx_rows = s.gx ? ops::narrow(gx, 0, r0, rows) : Tensor();
    for (int64_t c0 = 0; c0 < V; c0 += h.block.cols) {
      const int64_t n = std::min(h.block.cols, V - c0);
      Tensor l = h.logits(r0, rows, c0, n);
      Tensor g = gemm == DType::kF32 || s.gbias
                     ? l
                     : ops::view(ops::narrow(gbuf, 0, 0, rows * n), {rows, n});
      ops::cross_entropy_block_backward_(g, gloss, s.blocks, s.lse, l, r0, c0);
      if (s.gbias) {
        // The bias's gradient sums the f32 gradient over the rows, before any rounding.
        Tensor part = ops::narrow(gbias, 0, c0, n);
        ops::add_(part, ops::sum(g, {0}));
        if (gemm != DType::kF32) {
          Tensor low = ops::view(ops::narrow(gbuf, 0, 0, rows * n), {rows, n});
          ops::copy_(low, g);
          g = low;
        }
      }
      if (s.gx) {
        const Tensor b = ops::narrow(h.w, 0, c0, n);
        if (c0 == 0) {
          ops::matmul_into_(gx_rows, g, b);
        } else {
          ops::matmul_add_(gx_rows, g, b);
        }
      }
      if (s.gw) {
        Tensor rows_of_w = ops::narrow(gw, 0, c0, n);
        if (overwrite && r0 == 0) {
          ops::matmul_into_(rows_of_w, mT(g), x_rows);
        } else {
          ops::matmul_add_(rows_of_w, mT(g), x_rows);
        }
      }
    }
  }
  // No rows: no block wrote the weight's gradient, which is zero.
  if (s.gw && N == 0 && overwrite) ops::fill_(gw, 0.0);
  Tensor grad_x = s.gx ? ops::view(ops::to_dtype(gx, s.x_dtype), s.x_shape) : Tensor();
  h.buffer = Tensor();
  Tensor grad_w = s.gw && !sunk ? ops::to_dtype(gw, s.w_dtype) : Tensor();
  return {grad_x, grad_w, s.gbias ? ops::to_dtype(gbias, s.bias_dtype) : Tensor()};
}

}  // namespace

bool fuses_linear_cross_entropy(Device device, DType gemm_dtype, int64_t logits) {
  if (gemm_dtype == DType::kF16 || !ops::cross_entropy_blocks(device)) return false;
  if (const char* e = std::getenv("HFRUN_FUSED_LOSS"); e != nullptr && *e != '\0') {
    return std::string(e) != "0";
  }
  return ops::prefers_cross_entropy_blocks(device, gemm_dtype, logits);
}

Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& bias,
                            const Tensor& targets, int64_t ignore_index,
                            std::optional<DType> compute_dtype, int64_t block_rows,
                            int64_t block_columns) {
  const char* op = "linear_cross_entropy";
  HF_CHECK(x.defined() && weight.defined() && targets.defined(), op, ": undefined input");
  HF_CHECK(x.dim() >= 1 && weight.dim() == 2 && x.size(-1) == weight.size(1), op, ": x ", x.str(),
           " does not match weight ", weight.str(), " ([V, in])");
  HF_CHECK(targets.dim() == x.dim() - 1, op, ": targets ", targets.str(), " do not match x ",
           x.str());
  for (int64_t d = 0; d < targets.dim(); ++d) {
    HF_CHECK(targets.size(d) == x.size(d), op, ": targets ", targets.str(),
             " do not match the leading dims of x ", x.str());
  }
  const int64_t V = weight.size(0), C = weight.size(1);
  HF_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == V), op, ": bias ",
           bias.defined() ? bias.str() : std::string(), " must be [", V, "]");
  // The GEMMs' operands: x in the compute dtype, the weight's compute-dtype copy. An f32 x under
  // bf16 is cast here and gets its gradient in f32 from the blocks' f32 sum, as linear's input
  // does; other pairs cast x by a differentiable cast.
  const bool cast_here =
      compute_dtype && *compute_dtype == DType::kBF16 && x.dtype() == DType::kF32;
  if (compute_dtype && *compute_dtype != x.dtype() && !cast_here) {
    return linear_cross_entropy(to_dtype(x, *compute_dtype), weight, bias, targets, ignore_index,
                                compute_dtype, block_rows, block_columns);
  }
  Saved s;
  Head& h = s.head;
  const Tensor x_gemm = cast_here ? input_in_dtype(x, *compute_dtype) : x;
  h.x2 = ops::contiguous(ops::reshape(x_gemm, {-1, C})).detach();
  h.w = ops::contiguous(compute_dtype ? weight_in_dtype(weight, *compute_dtype) : weight).detach();
  HF_CHECK(h.w.dtype() == h.x2.dtype(), op, ": x ", x.str(), " and weight ", weight.str(),
           " need one compute dtype");
  // f16 GEMMs: linear rounds the weight's gradient to f16 (autocast's, where loss scaling sees
  // an overflow); the blocks accumulate it in f32.
  HF_CHECK(h.x2.dtype() != DType::kF16, op, ": f16 GEMMs are not supported (compose linear and ",
           "cross_entropy)");
  h.bias = bias.defined() ? ops::to_dtype(bias, DType::kF32).detach() : Tensor();
  const int64_t N = h.x2.size(0);
  h.block = blocking(N, V, block_rows, block_columns);
  s.blocks = ops::cross_entropy_begin(ops::reshape(targets, {-1}), V, ignore_index);
  for (int64_t r0 = 0; r0 < N; r0 += h.block.rows) {
    const int64_t rows = std::min(h.block.rows, N - r0);
    for (int64_t c0 = 0; c0 < V; c0 += h.block.cols) {
      const int64_t n = std::min(h.block.cols, V - c0);
      ops::cross_entropy_fold_(s.blocks, h.logits(r0, rows, c0, n), r0, c0);
    }
  }
  h.buffer = Tensor();  // not kept until the backward
  ops::CrossEntropyResult r = ops::cross_entropy_finish(s.blocks);
  if (!needs_grad({&x, &weight, &bias})) return r.loss;
  s.lse = r.lse;
  s.x_shape = x.sizes();
  s.x_dtype = x.dtype();
  s.w_dtype = weight.dtype();
  s.bias_dtype = bias.defined() ? bias.dtype() : DType::kF32;
  s.gx = x.requires_grad();
  s.gw = weight.requires_grad();
  s.gbias = bias.defined() && bias.requires_grad();
  return record(op, {x, weight, bias}, r.loss,
                [s = std::move(s)](const Tensor& g) mutable -> Grads { return backward(s, g); });
}

}  // namespace hfrun
