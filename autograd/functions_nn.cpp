// Differentiable layers: layer_norm, rms_norm, embedding, cross_entropy, dropout. Each backward
// lambda captures only what its formula reads (tensor/ops/nn.cpp states the formulas' dtypes).
#include "autograd/functions.h"
#include "autograd/node.h"

namespace hfrun {

using autograd::gradient_sink;
using autograd::needs_grad;
using autograd::record;
using Grads = std::vector<Tensor>;

namespace {

Tensor detached_or_undefined(const Tensor& t) {
  return t.defined() ? t.detach() : Tensor();
}

// SplitMix64 finaliser: a bijective 64-bit mix, so distinct (seed, offset) pairs give
// unrelated Philox keys.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

DropoutMask draw_dropout_mask(int64_t numel, double p, Generator& gen) {
  HF_CHECK(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1), got ", p);
  // Reserve the counters this mask uses so the generator's offset stays a resumable count, and
  // key the mask by (seed, offset): successive calls get independent masks, and a generator
  // restored with set_state(seed, offset) replays them.
  const uint64_t offset = gen.advance(static_cast<uint64_t>((numel + 3) / 4));
  return {p, mix64(gen.seed() ^ mix64(offset + 0x9e3779b97f4a7c15ULL))};
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  // Contiguous once here, so the ops call and the saved input share one buffer.
  Tensor xc = ops::contiguous(x);
  ops::LayerNormResult r = ops::layer_norm(xc, weight, bias, eps);
  if (!needs_grad({&x, &weight, &bias})) return r.y;
  Tensor w = detached_or_undefined(weight);
  const bool need_gbias = bias.defined() && bias.requires_grad();
  const DType bias_dtype = bias.defined() ? bias.dtype() : x.dtype();
  return record(
      "layer_norm", {x, weight, bias}, r.y,
      [xc, w, mean = r.mean, rstd = r.rstd, need_gbias, bias_dtype](const Tensor& g) -> Grads {
        ops::LayerNormGrads d = ops::layer_norm_backward(g, xc, w, mean, rstd, need_gbias);
        // ops returns gbias in the weight's dtype (x's without one); the bias may differ.
        Tensor gb = d.gbias.defined() ? ops::to_dtype(d.gbias, bias_dtype) : Tensor();
        return {d.gx, d.gweight, gb};
      });
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  Tensor xc = ops::contiguous(x);
  ops::RmsNormResult r = ops::rms_norm(xc, weight, eps);
  if (!needs_grad({&x, &weight})) return r.y;
  Tensor w = detached_or_undefined(weight);
  return record("rms_norm", {x, weight}, r.y, [xc, w, rstd = r.rstd](const Tensor& g) -> Grads {
    ops::RmsNormGrads d = ops::rms_norm_backward(g, xc, w, rstd);
    return {d.gx, d.gweight};
  });
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  Tensor y = ops::embedding(weight, ids);
  if (!needs_grad({&weight})) return y;
  const int64_t rows = weight.sizes()[0];
  const DType dtype = weight.dtype();
  Tensor saved_ids = ops::contiguous(ids);
  const AutogradMeta* meta = weight.autograd_meta();
  if (weight.is_leaf() && meta != nullptr && meta->row_gradient_handler) {
    // The rows go to the handler (a data-parallel strategy synchronising them on their own);
    // without the edge, the leaf's other producers need not wait for this lookup.
    const int64_t C = weight.size(1);
    Tensor out =
        record("embedding", {weight}, y,
               [saved_ids, C, to = meta->row_gradient_handler](const Tensor& g) -> Grads {
                 to(ops::reshape(ops::contiguous(g), {-1, C}), ops::reshape(saved_ids, {-1}));
                 return {Tensor()};
               });
    out.autograd_meta()->grad_fn->next()[0] = nullptr;
    return out;
  }
  return record("embedding", {weight}, y, [saved_ids, rows, dtype](const Tensor& g) -> Grads {
    // A tied weight already holds the lm_head's dense gradient: add only the rows the ids
    // name into it, instead of a dense [rows, C] gradient summed with it.
    Tensor sink = g.dtype() == dtype
                      ? gradient_sink(0, {rows, g.size(-1)}, dtype, g.device(), nullptr)
                      : Tensor();
    if (sink.defined()) {
      ops::embedding_backward_add_(sink, g, saved_ids);
      return {Tensor()};
    }
    return {ops::to_dtype(ops::embedding_backward(g, saved_ids, rows), dtype)};
  });
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  HF_CHECK(logits.defined() && targets.defined() && logits.dim() >= 1 &&
               targets.dim() == logits.dim() - 1,
           "cross_entropy: expected logits [..., V] and targets [...], got ",
           logits.defined() ? logits.str() : "(undefined)", " and ",
           targets.defined() ? targets.str() : "(undefined)");
  for (int64_t d = 0; d < targets.dim(); ++d) {
    HF_CHECK(targets.sizes()[d] == logits.sizes()[d], "cross_entropy: targets ", targets.str(),
             " do not match the leading dims of logits ", logits.str());
  }
  const int64_t V = logits.sizes().back();
  Tensor flat_logits = ops::reshape(logits, {-1, V}).detach();
  Tensor flat_targets = ops::contiguous(ops::reshape(targets, {-1}));
  ops::CrossEntropyResult r = ops::cross_entropy(flat_logits, flat_targets, ignore_index);
  if (!needs_grad({&logits})) return r.loss;
  // Saves the [N, V] logits and the [N] logsumexp; the softmax is recomputed in the backward,
  // whose gradient overwrites the saved logits when nothing else holds them (the usual case: the
  // model's output is dropped after the loss), so the largest tensor of a step is not doubled.
  Tensor saved_logits = ops::contiguous(flat_logits);
  Shape shape = logits.sizes();
  return record(
      "cross_entropy", {logits}, r.loss,
      [saved_logits, flat_targets, lse = r.lse, ignore_index, shape](const Tensor& g) -> Grads {
        const bool overwrite = saved_logits.is_uniquely_owned();
        Tensor gl = ops::cross_entropy_backward(g, saved_logits, flat_targets, lse, ignore_index,
                                                overwrite);
        return {ops::view(gl, shape)};
      });
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  HF_CHECK(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1), got ", p);
  if (!training || p == 0.0) return x;
  const uint64_t key = draw_dropout_mask(x.numel(), p, gen).key;
  Tensor y = ops::dropout(x, p, key);
  // The backward regenerates the mask from the key: no mask tensor is kept.
  return record("dropout", {x}, y,
                [p, key](const Tensor& g) -> Grads { return {ops::dropout_backward(g, p, key)}; });
}

}  // namespace hfrun
