// Softmax, log-softmax (any dim) and scaled dot-product attention: the backend's fused kernel
// where it has one for the inputs, else composed from matmul and the backend's masked softmax
// (keeping the [B, H, T, S] probabilities for the backward).
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tensor/backend.h"
#include "tensor/ops.h"

namespace hfrun::ops {
namespace {

// Sizes of x viewed as [outer, n, inner] around dim.
struct Rows {
  int64_t outer = 1, n = 1, inner = 1;
};
Rows rows_around(const Shape& s, int64_t dim) {
  Rows r;
  for (int64_t d = 0; d < dim; ++d) r.outer *= s[d];
  r.n = s[dim];
  for (size_t d = dim + 1; d < s.size(); ++d) r.inner *= s[d];
  return r;
}

Tensor softmax_impl(const Tensor& x, int64_t dim, bool log, const char* name) {
  HF_CHECK(x.defined(), name, ": undefined input");
  HF_CHECK(is_floating(x.dtype()), name, ": expected a floating tensor, got ", x.str());
  HF_CHECK(x.dim() > 0, name, ": expected at least one dim, got ", x.str());
  dim = wrap_dim(dim, x.dim(), name);
  Tensor xc = contiguous(x);
  Tensor y = empty_like(xc);
  Rows r = rows_around(x.sizes(), dim);
  backend_for(x.device()).softmax(xc, r.outer, r.n, r.inner, log, y);
  return y;
}

Tensor softmax_backward_impl(const Tensor& gy, const Tensor& y, int64_t dim, bool log,
                             const char* name) {
  HF_CHECK(gy.defined() && y.defined(), name, ": undefined input");
  HF_CHECK(is_floating(y.dtype()), name, ": expected a floating output, got ", y.str());
  HF_CHECK(gy.sizes() == y.sizes(), name, ": gradient ", gy.str(), " does not match output ",
           y.str());
  HF_CHECK(y.dim() > 0, name, ": expected at least one dim, got ", y.str());
  dim = wrap_dim(dim, y.dim(), name);
  Tensor yc = contiguous(y);
  Tensor gc = contiguous(to_dtype(gy, y.dtype()));
  Tensor gx = empty_like(yc);
  Rows r = rows_around(y.sizes(), dim);
  backend_for(y.device()).softmax_backward(gc, yc, r.outer, r.n, r.inner, log, gx);
  return gx;
}

std::string qkv_str(const Tensor& q, const Tensor& k, const Tensor& v) {
  return detail::concat(" (q ", q.str(), ", k ", k.str(), ", v ", v.str(), ")");
}

// q [B, H, T, D], k [B, Hkv, S, D], v [B, Hkv, S, Dv]: same B, dtype and device; Hkv divides H
// (grouped-query attention: query head h reads KV head h / (H / Hkv)).
void check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const char* name) {
  HF_CHECK(q.defined() && k.defined() && v.defined(), name, ": undefined input");
  HF_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, name, ": q, k, v must be [B, H, T, D]",
           qkv_str(q, k, v));
  HF_CHECK(q.size(0) == k.size(0) && q.size(0) == v.size(0), name, ": batch dims differ",
           qkv_str(q, k, v));
  HF_CHECK(k.size(1) == v.size(1) && k.size(1) > 0 && q.size(1) % k.size(1) == 0, name,
           ": k and v need the same number of heads, dividing q's", qkv_str(q, k, v));
  HF_CHECK(q.size(3) == k.size(3), name, ": q and k head sizes differ", qkv_str(q, k, v));
  HF_CHECK(k.size(2) == v.size(2), name, ": k and v lengths differ", qkv_str(q, k, v));
  HF_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype() && is_floating(q.dtype()), name,
           ": q, k, v need one floating dtype", qkv_str(q, k, v));
  HF_CHECK(q.device() == k.device() && q.device() == v.device(), name,
           ": q, k, v on different devices", qkv_str(q, k, v));
}

// key_lengths as the kernels read them: i32 [B] on q's device (undefined stays undefined).
Tensor key_lengths_for(const Tensor& q, const Tensor& k, const Tensor& key_lengths) {
  if (!key_lengths.defined()) return {};
  HF_CHECK(key_lengths.dim() == 1 && key_lengths.size(0) == q.size(0) &&
               !is_floating(key_lengths.dtype()) && key_lengths.device() == q.device(),
           "attention: key_lengths must be an integer [B] tensor on q's device, got ",
           key_lengths.str(), qkv_str(q, k, k));
  Tensor lengths = contiguous(to_dtype(key_lengths, DType::kI32));
  if (q.device().is_cpu()) {
    const int32_t* p = lengths.data<int32_t>();
    for (int64_t b = 0; b < lengths.numel(); ++b) {
      HF_CHECK(p[b] >= 0 && p[b] <= k.size(2), "attention: key_lengths[", b, "] = ", p[b],
               " is outside [0, ", k.size(2), "]", qkv_str(q, k, k));
    }
  }
  return lengths;
}

std::atomic<bool>& fused_attention_on() {
  static std::atomic<bool> on{[] {
    const char* e = std::getenv("HFRUN_FUSED_ATTENTION");
    return !(e && std::strcmp(e, "0") == 0);
  }()};
  return on;
}

// Grouped-query attention without copying K or V: the `group` query heads that share a KV head
// become one [group * T, D] matrix per KV head ([B, H, T, D] -> [B, Hkv, group * T, D]; a view
// when x is laid out [B, H, T, D], else a copy of x), so every product is a batched GEMM against
// the KV head itself.
Tensor by_kv_head(const Tensor& x, int64_t kv_heads) {
  if (x.size(1) == kv_heads) return x;
  return reshape(x, {x.size(0), kv_heads, x.size(1) / kv_heads * x.size(2), x.size(3)});
}

// [B, H, rows, D] as a view of a fresh [B, rows, H, D] buffer.
Tensor heads_major(int64_t b, int64_t h, int64_t rows, int64_t d, DType dt, Device dev) {
  return transpose(empty({b, rows, h, d}, dt, dev), 1, 2);
}

// The composed path's operands as dense tensors: inputs that are strided views are copied, all
// into one buffer (the projection they were typically split from was one block too, and a
// caching allocator then sees the block sizes it saw before: three separate copies left f32
// GPT-2 at 4 x 256 holding 108 MB more cached memory, with equal live memory). Each copy
// starts 64-byte aligned; an input given twice (q = k) is copied once.
std::array<Tensor, 3> dense_operands(const Tensor& q, const Tensor& k, const Tensor& v) {
  const std::array<const Tensor*, 3> in = {&q, &k, &v};
  const int64_t align = std::max<int64_t>(1, 64 / static_cast<int64_t>(q.element_size()));
  const auto copied = [&](size_t i) { return !in[i]->is_contiguous() && in[i]->numel() > 0; };
  const auto same_as = [&](size_t i) {  // an earlier input that is this one, or i
    size_t j = 0;
    while (j < i && !in[j]->is_same(*in[i])) ++j;
    return j;
  };
  std::array<int64_t, 3> start{};
  int64_t total = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    if (!copied(i) || same_as(i) != i) continue;
    start[i] = total;
    total += (in[i]->numel() + align - 1) / align * align;
  }
  Tensor buffer = total > 0 ? empty({total}, q.dtype(), q.device()) : Tensor();
  std::array<Tensor, 3> out;
  for (size_t i = 0; i < in.size(); ++i) {
    const Tensor& t = *in[i];
    if (!copied(i)) {
      out[i] = t;  // dense already, or empty
    } else if (const size_t j = same_as(i); j != i) {
      out[i] = out[j];
    } else {
      out[i] = view(narrow(buffer, 0, start[i], t.numel()), t.sizes());
      copy_(out[i], t);
    }
  }
  return out;
}

}  // namespace

bool set_fused_attention(bool on) {
  return fused_attention_on().exchange(on);
}

bool cpu_attention_fused(DType dtype, int64_t head_dim) {
  if (!fused_attention_on().load() || head_dim <= 0) return false;
  const Tensor x = empty({1, 1, 1, head_dim}, dtype, Device::cpu());
  return backend_for(Device::cpu()).fused_attention_supported(x, x, x, 0, {});
}

Tensor softmax(const Tensor& x, int64_t dim) {
  return softmax_impl(x, dim, false, "softmax");
}
Tensor log_softmax(const Tensor& x, int64_t dim) {
  return softmax_impl(x, dim, true, "log_softmax");
}
Tensor softmax_backward(const Tensor& gy, const Tensor& y, int64_t dim) {
  return softmax_backward_impl(gy, y, dim, false, "softmax_backward");
}
Tensor log_softmax_backward(const Tensor& gy, const Tensor& y, int64_t dim) {
  return softmax_backward_impl(gy, y, dim, true, "log_softmax_backward");
}

// Fused: the backend's kernel (out laid out [B, T, H, Dv] underneath, lse [B, H, T]).
// Composed: scores = q @ k^T [B, H, T, S] (f32 accumulation and result), probs = softmax(scale *
// scores) with the causal mask, out = probs @ v [B, H, T, Dv] in q's dtype. Kept for the
// backward, q, k and v are made dense once (q, k, v split out of a [B, T, 3C] projection are
// strided views): oneDNN's brgemm kernels take batched operands only dense, and k^T, v^T as
// transposed views of dense k, v need no transposing copies. The backward reads the same dense
// tensors, so the six GEMMs of forward and backward copy nothing (they copied q, k, v, k^T and
// v^T on their own, some twice).
AttentionResult attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                          double scale, const Tensor& key_lengths, bool keep_for_backward,
                          int64_t window, const DropoutMask& dropout) {
  check_attention_inputs(q, k, v, "attention");
  HF_CHECK(window >= 0 && (window == 0 || causal), "attention: a sliding window (", window,
           ") needs causal attention and a positive size");
  HF_CHECK(dropout.p >= 0 && dropout.p < 1, "attention: dropout p must be in [0, 1), got ",
           dropout.p);
  const int64_t b = q.size(0), h = q.size(1), t = q.size(2), s = k.size(2);
  Backend& be = backend_for(q.device());
  Tensor lengths = key_lengths_for(q, k, key_lengths);
  // The earliest query sees keys from (S - T) + 1 - window on, the last from S - window: the
  // window masks something only when it is shorter than S.
  if (window >= s) window = 0;
  if (fused_attention_on().load() && q.numel() > 0 && k.numel() > 0 &&
      be.fused_attention_supported(q, k, v, window, dropout)) {
    AttentionResult r;
    r.out = heads_major(b, h, t, v.size(3), q.dtype(), q.device());
    r.lse = empty({b, h, t}, DType::kF32, q.device());
    be.fused_attention(q, k, v, causal, scale, lengths, window, dropout, r.out, r.lse);
    r.key_lengths = lengths;
    r.window = window;
    r.dropout = dropout;
    return r;
  }
  // Scores [B, Hkv, group * T, S] are [B, H, T, S] in memory.
  const int64_t hkv = k.size(1);
  const auto [qd, kd, vd] =
      keep_for_backward ? dense_operands(q, k, v) : std::array<Tensor, 3>{q, k, v};
  Tensor scores = matmul(by_kv_head(qd, hkv), transpose(kd, 2, 3), Tensor(), DType::kF32);
  Tensor probs = empty({b, h, t, s}, DType::kF32, q.device());
  if (scores.numel() > 0) {
    Tensor probs_3d = view(probs, {b * h, t, s});
    be.scaled_masked_softmax(view(scores, {b * h, t, s}), scale, causal, window, lengths, probs_3d);
  }
  const Tensor kept = dropout.p > 0 ? ops::dropout(probs, dropout.p, dropout.key) : probs;
  Tensor out = matmul(to_dtype(by_kv_head(kept, hkv), v.dtype()), vd, Tensor(), q.dtype());
  AttentionResult r{
      view(out, {b, h, t, v.size(3)}), probs, Tensor(), lengths, {}, {}, {}, window, dropout};
  if (keep_for_backward) {
    r.q = qd;
    r.k = kd;
    r.v = vd;
  }
  return r;
}

// Fused: the backend recomputes the probabilities from q, k and lse. Composed, with P = probs,
// dO = gout and the pre-scale scores X (P = softmax(scale * X)):
//   dV = P^T @ dO,  dP = dO @ v^T,  dX = scale * P * (dP - rowsum(dP * P)),
//   dQ = dX @ k,    dK = dX^T @ q.
// Masked positions (causal or padding) have P = 0, so they get no gradient.
AttentionGrads attention_backward(const Tensor& gout, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const AttentionResult& forward, bool causal,
                                  double scale) {
  check_attention_inputs(q, k, v, "attention_backward");
  const Shape want_out = {q.size(0), q.size(1), q.size(2), v.size(3)};
  HF_CHECK(gout.defined() && gout.sizes() == want_out, "attention_backward: gradient ",
           gout.defined() ? gout.str() : std::string("undefined"), " must be ", shape_str(want_out),
           qkv_str(q, k, v));
  const DType dt = q.dtype();
  Tensor g = to_dtype(gout, dt);  // the fused path keeps it a view when its kernel takes it
  AttentionGrads grads;
  if (forward.lse.defined()) {
    const Shape want_lse = {q.size(0), q.size(1), q.size(2)};
    HF_CHECK(
        forward.lse.sizes() == want_lse && forward.out.defined() && forward.out.sizes() == want_out,
        "attention_backward: the fused forward's out/lse do not match", qkv_str(q, k, v));
    Backend& be = backend_for(q.device());
    if (!be.fused_attention_supported(g, k, v, forward.window, forward.dropout)) g = contiguous(g);
    HF_CHECK(be.fused_attention_supported(g, k, v, forward.window, forward.dropout),
             "attention_backward: the fused kernel no longer accepts these inputs",
             qkv_str(q, k, v));
    const int64_t b = q.size(0), h = q.size(1), hkv = k.size(1);
    grads.gq = heads_major(b, h, q.size(2), q.size(3), dt, q.device());
    grads.gk = heads_major(b, hkv, k.size(2), k.size(3), dt, q.device());
    grads.gv = heads_major(b, hkv, v.size(2), v.size(3), dt, q.device());
    be.fused_attention_backward(g, q, k, v, forward.out, forward.lse, causal, scale,
                                forward.key_lengths, forward.window, forward.dropout, grads.gq,
                                grads.gk, grads.gv);
    return grads;
  }
  const Tensor& probs = forward.probs;
  const Shape want_probs = {q.size(0), q.size(1), q.size(2), k.size(2)};
  HF_CHECK(probs.defined() && probs.sizes() == want_probs, "attention_backward: probs ",
           probs.defined() ? probs.str() : std::string("undefined"), " must be ",
           shape_str(want_probs), qkv_str(q, k, v));
  // Per KV head, over its group's rows ([B, Hkv, group * T, .]): dV and dK sum the group.
  // Dense operands, as the forward's (q, k, v are normally its dense ones already; gout is a
  // strided view when the output was transposed back to [B, T, H * Dv]).
  const int64_t hkv = k.size(1);
  const auto [qd, kd, vd] = dense_operands(q, k, v);
  // With dropout, dV reads the dropped probabilities and the softmax's backward the gradient of
  // the undropped ones: the same mask applied to dP.
  const DropoutMask& drop = forward.dropout;
  const Tensor kept = drop.p > 0 ? ops::dropout(probs, drop.p, drop.key) : probs;
  Tensor p = to_dtype(by_kv_head(kept, hkv), dt);
  Tensor g5 = by_kv_head(contiguous(g), hkv);
  grads.gv = matmul(transpose(p, 2, 3), g5, Tensor(), dt);
  Tensor gp = matmul(g5, transpose(vd, 2, 3), Tensor(), DType::kF32);
  if (drop.p > 0) gp = ops::dropout_backward(gp, drop.p, drop.key);
  // scale * softmax_backward(gp, probs) in f32 (as probs), rounded to q's dtype, in one pass.
  Tensor gs = empty(gp.sizes(), dt, q.device());
  backend_for(q.device())
      .attention_scores_backward(gp, contiguous(to_dtype(by_kv_head(probs, hkv), DType::kF32)),
                                 k.size(2), scale, gs);
  grads.gq = view(matmul(gs, kd, Tensor(), dt), q.sizes());
  grads.gk = matmul(transpose(gs, 2, 3), by_kv_head(qd, hkv), Tensor(), dt);
  return grads;
}

}  // namespace hfrun::ops
