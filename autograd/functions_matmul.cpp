// Differentiable matmul, linear (HF Conv1D layout), softmax, log_softmax and scaled dot-product
// attention. Backward GEMMs read transposed views (oneDNN takes the strides), so no transpose
// is ever copied; gradients come back in each input's dtype and shape.
#include <cmath>
#include <utility>

#include "autograd/functions.h"
#include "autograd/node.h"

namespace hfrun {

using autograd::needs_grad;
using autograd::record;
using Grads = std::vector<Tensor>;

namespace {

Tensor mT(const Tensor& x) {
  return ops::transpose(x, -2, -1);
}

// Sum of g over every dim but the last: the gradient of a bias [N] added to [..., N].
Tensor bias_grad(const Tensor& g, DType dtype) {
  std::vector<int64_t> dims;
  for (int64_t d = 0; d + 1 < g.dim(); ++d) dims.push_back(d);
  return ops::to_dtype(dims.empty() ? g : ops::sum(g, dims), dtype);
}

}  // namespace

// y = a @ b (+ bias), y [batch..., M, N]:
//   ga = g @ b^T summed back to a's shape, gb = a^T @ g summed back to b's shape.
// A rank-2 b shared by every batch of a gets gb from one [K, B*M] x [B*M, N] GEMM instead of B
// GEMMs and a sum.
Tensor matmul(const Tensor& a, const Tensor& b, const Tensor& bias,
              std::optional<DType> out_dtype) {
  Tensor y = ops::matmul(a, b, bias, out_dtype);
  if (!needs_grad({&a, &b, &bias})) return y;
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  const bool gbias = bias.defined() && bias.requires_grad();
  const Shape a_shape = a.sizes(), b_shape = b.sizes();
  const DType in_dtype = a.dtype();
  const DType bias_dtype = bias.defined() ? bias.dtype() : DType::kF32;
  // Each operand is saved only when the other one's gradient needs it.
  Tensor saved_a = gb ? a.detach() : Tensor();
  Tensor saved_b = ga ? b.detach() : Tensor();
  return record("matmul", {a, b, bias}, y, [=](const Tensor& g_out) -> Grads {
    Tensor g = ops::to_dtype(g_out, in_dtype);
    Tensor grad_a, grad_b;
    if (ga) grad_a = ops::sum_to(ops::matmul(g, mT(saved_b), Tensor(), in_dtype), a_shape);
    if (gb) {
      if (b_shape.size() == 2 && a_shape.size() > 2) {
        const int64_t k = a_shape.back(), n = b_shape.back();
        grad_b = ops::matmul(mT(ops::reshape(saved_a, {-1, k})), ops::reshape(g, {-1, n}), Tensor(),
                             in_dtype);
      } else {
        grad_b = ops::sum_to(ops::matmul(mT(saved_a), g, Tensor(), in_dtype), b_shape);
      }
    }
    return {grad_a, grad_b, gbias ? bias_grad(g_out, bias_dtype) : Tensor()};
  });
}

// y = x @ W + bias with x [..., in] and W [in, out]: the weight itself (WeightLayout::kInOut) or
// its transpose (kOutIn, weight [out, in]). Leading dims are flattened so the forward and both
// backward GEMMs are single 2-D GEMMs:
//   gx = g @ W^T [rows, in], gbias = sum_rows(g), and the weight's gradient in its own layout:
//   x^T @ g [in, out] (kInOut) or g^T @ x [out, in] (kOutIn).
namespace {

thread_local WeightCastScope* t_cast_scope = nullptr;
thread_local InputCastScope* t_input_scope = nullptr;

// What linear's backward keeps: x as [rows, in] (for the weight gradient) and the weight as the
// GEMMs read it (for the input gradient), each only when that gradient is wanted.
struct LinearSaved {
  Tensor x2, w;
  Shape x_shape;
  // x's dtype (its gradient's) and the dtype the GEMMs read (x2's; x's compute-dtype copy
  // under mixed precision).
  DType x_dtype, gemm_dtype, w_dtype, bias_dtype;
  // The dtype the weight-gradient GEMM writes: the weight's, except that an f16 GEMM's is
  // rounded to f16 first, as autocast's (an overflow there is what loss scaling must see).
  DType gw_dtype;
  int64_t out;
  bool gx, gw, gbias;
  // The weight is [out, in] (WeightLayout::kOutIn), or an [in, out] view transposed from a
  // contiguous [out, in] tensor: either way its gradient is produced as [out, in], the GEMM's
  // natural layout for it (a strided gradient would be summed element by element downstream).
  bool grad_out_in;
  // Its gradient is the op's input's as produced (kOutIn), not transposed back to [in, out].
  bool out_in;
};

// `weight`: the op's input, in `layout`; `gemm_weight`: the [in, out] matrix the GEMMs read (a
// view of the weight, or of its compute-dtype copy).
LinearSaved save_linear(const Tensor& x, const Tensor& x2, const Tensor& weight,
                        WeightLayout layout, const Tensor& gemm_weight, const Tensor& bias) {
  LinearSaved s;
  s.gx = x.requires_grad();
  s.gw = weight.requires_grad();
  s.gbias = bias.defined() && bias.requires_grad();
  s.x2 = s.gw ? x2.detach() : Tensor();
  s.w = s.gx ? gemm_weight.detach() : Tensor();
  s.x_shape = x.sizes();
  s.x_dtype = x.dtype();
  s.gemm_dtype = x2.dtype();
  s.w_dtype = weight.dtype();
  s.gw_dtype = gemm_weight.dtype() == DType::kF16 ? DType::kF16 : s.w_dtype;
  s.bias_dtype = bias.defined() ? bias.dtype() : DType::kF32;
  s.out = gemm_weight.size(1);
  s.out_in = layout == WeightLayout::kOutIn;
  s.grad_out_in = s.out_in || (weight.size(0) > 1 && weight.size(1) > 1 && weight.stride(0) == 1 &&
                               weight.stride(1) == weight.size(0));
  return s;
}

// x's gradient g @ W^T in x's dtype. Where x is f32 and the GEMMs read its compute-dtype copy,
// the product is taken from the GEMM's f32 accumulator (not rounded to bf16 and widened again,
// as autocast's cast backward would) and, when another consumer of x left its gradient pending
// (q, k and v read one normed input; so do gate and up), added into it by the GEMM: no cast,
// no separate add. Returns the gradient, or an undefined tensor when it went into the sink.
//
// A bf16 x read by bf16 GEMMs (a LoRA layer's input, read by its base and by A) likewise has the
// GEMM add its gradient into one pending from another reader: rounded to bf16 once, from the
// f32 sum, where the engine would round the product and then the sum.
Tensor input_grad(const LinearSaved& s, const Tensor& g2) {
  const Tensor wt = mT(s.w);
  if (s.x_dtype == DType::kBF16 && s.gemm_dtype == DType::kBF16) {
    Tensor sink = autograd::gradient_sink(0, s.x_shape, DType::kBF16, g2.device(), nullptr);
    if (sink.defined()) {
      Tensor sink2 = ops::reshape(sink, {-1, wt.size(1)});
      ops::matmul_add_(sink2, g2, wt);
      return Tensor();
    }
  }
  if (s.x_dtype == DType::kF32 && s.gemm_dtype != DType::kF32) {
    bool overwrite = false;
    Tensor sink = autograd::gradient_sink(0, s.x_shape, DType::kF32, g2.device(), &overwrite);
    if (sink.defined()) {
      Tensor sink2 = ops::reshape(sink, {-1, wt.size(1)});
      if (overwrite) {
        ops::matmul_into_(sink2, g2, wt);
      } else {
        ops::matmul_add_(sink2, g2, wt);
      }
      return Tensor();
    }
  }
  return ops::view(ops::matmul(g2, wt, Tensor(), s.x_dtype), s.x_shape);
}

// Gradients of x, weight, bias from the gradient of the pre-activation output g_out, which is
// freed once read: under mixed precision the f32 gradient of a large output (lm_head's logits)
// is not kept beside its compute-dtype copy and the weight's f32 gradient.
Grads linear_grads(const LinearSaved& s, Tensor g_out) {
  Tensor grad_bias = s.gbias ? bias_grad(ops::reshape(g_out, {-1, s.out}), s.bias_dtype) : Tensor();
  Tensor g2 = ops::reshape(ops::to_dtype(g_out, s.gemm_dtype), {-1, s.out});
  g_out = Tensor();
  Tensor grad_x, grad_w;
  if (s.gx) grad_x = input_grad(s, g2);
  if (s.gw) {
    // An f32 weight whose gradient buffer is the sink (its leaf, reached by this layer only):
    // the GEMM adds the gradient into it (from bf16 operands under mixed precision, accumulated
    // in f32), or writes it there when the buffer was zeroed lazily, with no product tensor,
    // no cast and no separate add.
    bool overwrite = false;
    const int64_t in = s.x2.size(1);
    const Shape sink_shape = s.out_in ? Shape{s.out, in} : Shape{in, s.out};
    // The GEMM produces the gradient in the layout of the op's weight input (both [out, in], or
    // both [in, out]); a transposed view's gradient would need a transpose to reach the sink.
    const bool produced_as_input = s.out_in == s.grad_out_in;
    Tensor sink = produced_as_input && s.gw_dtype == DType::kF32 && s.x2.dtype() == g2.dtype()
                      ? autograd::gradient_sink(1, sink_shape, DType::kF32, g2.device(), &overwrite)
                      : Tensor();
    // [out, in] = g^T x, or [in, out] = x^T g.
    const Tensor a = s.grad_out_in ? mT(g2) : mT(s.x2);
    const Tensor b = s.grad_out_in ? s.x2 : g2;
    if (sink.defined()) {
      if (overwrite) {
        ops::matmul_into_(sink, a, b);
      } else {
        ops::matmul_add_(sink, a, b);
      }
    } else {
      grad_w = ops::matmul(a, b, Tensor(), s.gw_dtype);
      if (s.grad_out_in && !s.out_in) grad_w = mT(grad_w);
      if (s.gw_dtype != s.w_dtype) grad_w = ops::to_dtype(grad_w, s.w_dtype);
    }
  }
  return {grad_x, grad_w, grad_bias};
}

// x [..., in] @ weight [in, out] (+ bias) with the result in out_dtype, then the tanh GELU when
// `gelu`. With `compute` the GEMMs read the weight's copy in that dtype (mixed precision) and
// x_gemm, x in that dtype (x itself otherwise); the input gradient comes in x's dtype, the
// weight's in the weight's, straight from the GEMM's f32 accumulator; the bias gradient is
// summed from the out_dtype gradient.
// With `add_to` (not with gelu or a bias): the product is added into add_to's memory by one
// accumulating GEMM and the result is add_to + product (linear_add).
Tensor linear_impl(const Tensor& x, const Tensor& x_gemm, const Tensor& weight, WeightLayout layout,
                   const Tensor& bias, DType out_dtype, bool gelu, std::optional<DType> compute,
                   const Tensor& add_to = Tensor()) {
  HF_CHECK(x.defined() && weight.defined(), "linear: undefined input");
  const bool out_in = layout == WeightLayout::kOutIn;
  HF_CHECK(x.dim() >= 1 && weight.dim() == 2 && x.size(-1) == weight.size(out_in ? 1 : 0),
           "linear: x ", x.str(), " does not match weight ", weight.str(),
           out_in ? " ([out, in])" : " ([in, out])");
  const int64_t in = x.size(-1), out = weight.size(out_in ? 0 : 1);
  Tensor x2 = ops::reshape(x_gemm, {-1, in});
  Shape y_shape = x.sizes();
  y_shape.back() = out;
  // The [in, out] matrix the GEMMs read: the weight, or its compute-dtype copy, as it is or
  // transposed (a view).
  Tensor w = compute ? weight_in_dtype(weight, *compute) : weight;
  if (out_in) w = mT(w);
  if (add_to.defined()) {
    Tensor y2 = ops::view(add_to.detach(), {-1, out});
    ops::matmul_add_(y2, x2, w);
    Tensor y = ops::view(y2, y_shape);
    if (!needs_grad({&x, &weight, &add_to})) return y;
    const LinearSaved saved = save_linear(x, x2, weight, layout, w, Tensor());
    const bool g_sum = add_to.requires_grad();
    return record("linear_add", {x, weight, Tensor(), add_to}, y,
                  [saved, g_sum](Tensor g_out) -> Grads {
                    Tensor g_sum_in = g_sum ? g_out : Tensor();
                    Grads g = linear_grads(saved, std::move(g_out));
                    g.push_back(std::move(g_sum_in));
                    return g;
                  });
  }
  if (!gelu) {
    Tensor y = ops::view(ops::matmul(x2, w, bias, out_dtype), y_shape);
    if (!needs_grad({&x, &weight, &bias})) return y;
    const LinearSaved saved = save_linear(x, x2, weight, layout, w, bias);
    return record("linear", {x, weight, bias}, y,
                  [saved](Tensor g_out) -> Grads { return linear_grads(saved, std::move(g_out)); });
  }
  ops::MatmulGeluResult r = ops::matmul_gelu(x2, w, bias, out_dtype);
  Tensor y = ops::view(r.out, y_shape);
  if (!needs_grad({&x, &weight, &bias})) return y;
  const LinearSaved saved = save_linear(x, x2, weight, layout, w, bias);
  Tensor pre = r.pre, act = r.out;
  return record("linear_gelu", {x, weight, bias}, y, [saved, pre, act](Tensor g) -> Grads {
    Tensor g2 = ops::reshape(ops::to_dtype(g, pre.dtype()), pre.sizes());
    g = Tensor();
    Tensor g_pre = ops::unary_backward(ops::UnaryOp::kGeluTanh, g2, pre, act);
    g2 = Tensor();
    return linear_grads(saved, std::move(g_pre));
  });
}

// Mixed precision: the GEMMs read compute_dtype copies of x and weight, and the products
// accumulate in f32. Under bf16 the gradients of an f32 x and of the weight are taken from the
// f32 accumulators of their GEMMs (added into a pending gradient or the f32 leaf's buffer where
// that is the sink), not rounded to bf16 and widened again as autocast's are. Under f16 x's
// gradient flows back through its cast, rounded to f16 as autocast's (an overflow there is what
// loss scaling must see).
Tensor linear_any(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  std::optional<DType> compute_dtype, std::optional<DType> out_dtype, bool gelu,
                  WeightLayout layout, const Tensor& add_to = Tensor()) {
  const DType out = out_dtype.value_or(x.dtype());
  if (compute_dtype && *compute_dtype != x.dtype()) {
    if (x.dtype() == DType::kF32 && *compute_dtype == DType::kBF16) {
      return linear_impl(x, input_in_dtype(x, *compute_dtype), weight, layout, bias, out, gelu,
                         compute_dtype, add_to);
    }
    const Tensor xc = to_dtype(x, *compute_dtype);
    return linear_impl(xc, xc, weight, layout, bias, out, gelu, compute_dtype, add_to);
  }
  return linear_impl(x, x, weight, layout, bias, out, gelu, compute_dtype, add_to);
}

}  // namespace

WeightCastScope::WeightCastScope() : WeightCastScope(std::vector<WeightCopy>{}) {}

WeightCastScope::WeightCastScope(std::vector<WeightCopy> carried) : cache_(std::move(carried)) {
  HF_CHECK(t_cast_scope == nullptr, "WeightCastScope: scopes do not nest");
  t_cast_scope = this;
}

WeightCastScope::~WeightCastScope() {
  if (t_cast_scope == this) t_cast_scope = nullptr;
}

std::vector<WeightCopy> WeightCastScope::release() {
  if (t_cast_scope == this) t_cast_scope = nullptr;
  return std::move(cache_);
}

Tensor weight_in_dtype(const Tensor& weight, DType dtype) {
  if (weight.dtype() == dtype) return weight;
  WeightCastScope* scope = t_cast_scope;
  if (scope == nullptr) return ops::to_dtype(weight, dtype);
  // A model has tens to hundreds of weights: a linear scan finds one faster than it is cast.
  for (const WeightCopy& c : scope->cache_) {
    const Tensor& s = c.source;
    if (s.raw_data() == weight.raw_data() && s.dtype() == weight.dtype() &&
        c.copy.dtype() == dtype && s.sizes() == weight.sizes() && s.strides() == weight.strides() &&
        s.device() == weight.device()) {
      return c.copy;
    }
  }
  Tensor copy = ops::to_dtype(weight.detach(), dtype);
  scope->cache_.push_back({weight.detach(), copy});
  ++scope->casts_;
  return copy;
}

InputCastScope::InputCastScope(const Tensor& x) : x_(x), outer_(t_input_scope) {
  t_input_scope = this;
}

InputCastScope::~InputCastScope() {
  t_input_scope = outer_;
}

Tensor input_in_dtype(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  for (InputCastScope* s = t_input_scope; s != nullptr; s = s->outer_) {
    if (!s->x_.is_same(x)) continue;
    if (!s->copy_.defined() || s->copy_.dtype() != dtype) s->copy_ = ops::to_dtype(x, dtype);
    return s->copy_;
  }
  return ops::to_dtype(x, dtype);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias,
              std::optional<DType> compute_dtype, std::optional<DType> out_dtype,
              WeightLayout layout) {
  return linear_any(x, weight, bias, compute_dtype, out_dtype, false, layout);
}

Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias,
                   std::optional<DType> compute_dtype, std::optional<DType> out_dtype,
                   WeightLayout layout) {
  return linear_any(x, weight, bias, compute_dtype, out_dtype, true, layout);
}

Tensor linear_add(Tensor y, const Tensor& x, const Tensor& weight,
                  std::optional<DType> compute_dtype, WeightLayout layout) {
  HF_CHECK(y.defined() && x.defined() && weight.defined(), "linear_add: undefined input");
  const DType out = y.dtype();
  const DType gemm = compute_dtype.value_or(x.dtype());
  // In place only where nothing else can see y's memory change: its storage held by y alone
  // (no saved tensor of another op, no view), contiguous, and a destination the accumulating
  // GEMM takes (f32, or the GEMM's own bf16).
  const bool in_place = y.is_contiguous() && y.storage().use_count() == 1 &&
                        y.device() == x.device() && y.device() == weight.device() &&
                        (out == DType::kF32 || (out == DType::kBF16 && gemm == DType::kBF16));
  if (!in_place) return add(y, linear(x, weight, Tensor(), compute_dtype, out, layout));
  Shape want = x.sizes();
  want.back() = weight.size(layout == WeightLayout::kOutIn ? 0 : 1);
  HF_CHECK(y.sizes() == want, "linear_add: y ", y.str(), " does not match x ", x.str(),
           " and weight ", weight.str());
  return linear_any(x, weight, Tensor(), compute_dtype, out, false, layout, y);
}

Tensor softmax(const Tensor& x, int64_t dim) {
  Tensor y = ops::softmax(x, dim);
  return record("softmax", {x}, y,
                [y, dim](const Tensor& g) -> Grads { return {ops::softmax_backward(g, y, dim)}; });
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  Tensor y = ops::log_softmax(x, dim);
  return record("log_softmax", {x}, y, [y, dim](const Tensor& g) -> Grads {
    return {ops::log_softmax_backward(g, y, dim)};
  });
}

// Saves q, k, v (the composed path's dense copies where it made them, else the inputs as they
// are) and the probabilities, or out and lse (fused); the backward recomputes nothing else.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                    std::optional<double> scale, const Tensor& key_lengths,
                                    int64_t window, double dropout_p, Generator* dropout) {
  HF_CHECK(q.defined() && q.dim() == 4,
           "scaled_dot_product_attention: q must be [B, H, T, D], "
           "got ",
           q.defined() ? q.str() : std::string("undefined"));
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(3))));
  const bool grad = needs_grad({&q, &k, &v});
  DropoutMask drop;
  if (dropout_p > 0 && dropout != nullptr && k.defined() && k.dim() == 4) {
    drop = draw_dropout_mask(q.size(0) * q.size(1) * q.size(2) * k.size(2), dropout_p, *dropout);
  }
  ops::AttentionResult r = ops::attention(q, k, v, causal, s, key_lengths, grad, window, drop);
  if (!grad) return r.out;
  const bool gq = q.requires_grad(), gk = k.requires_grad(), gv = v.requires_grad();
  // The composed path's dense q, k, v where it made them (the views' storage, such as the qkv
  // projection, is then not kept for the backward), else the inputs.
  Tensor qd = (r.q.defined() ? r.q : q).detach(), kd = (r.k.defined() ? r.k : k).detach(),
         vd = (r.v.defined() ? r.v : v).detach();
  // What the backward needs of the forward: probs (composed) or out and lse (fused).
  ops::AttentionResult saved;
  saved.out = r.lse.defined() ? r.out.detach() : Tensor();
  saved.probs = r.probs;
  saved.lse = r.lse;
  saved.key_lengths = r.key_lengths;
  saved.window = r.window;
  saved.dropout = r.dropout;
  return record("scaled_dot_product_attention", {q, k, v}, r.out, [=](const Tensor& g) -> Grads {
    ops::AttentionGrads grads = ops::attention_backward(g, qd, kd, vd, saved, causal, s);
    return {gq ? grads.gq : Tensor(), gk ? grads.gk : Tensor(), gv ? grads.gv : Tensor()};
  });
}

}  // namespace hfrun
