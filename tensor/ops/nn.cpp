// Normalisation, embedding, cross-entropy, dropout and cat: argument checks, dtype choices and
// allocation here; the arithmetic is the backend's (tensor/backend.h).
//
// Dtypes: activations (x, logits, gy) are f32, bf16 or f16 and results keep their dtype;
// statistics (mean, rstd, lse, loss) are f32. A norm weight/bias is x's dtype or f32; the
// backend always receives it as f32 [C] (ones/zeros when absent; a cast of C elements), and its
// gradient is computed in f32 and returned in the parameter's own dtype.
#include <limits>
#include <optional>
#include <string>

#include "tensor/backend.h"
#include "tensor/ops.h"

namespace hfrun::ops {
namespace {

// x as a contiguous floating tensor with a non-empty last dim (the normalised/class dim).
Tensor last_dim_input(const Tensor& x, const char* op, const char* what) {
  HF_CHECK(x.defined(), op, ": ", what, " is undefined");
  HF_CHECK(is_floating(x.dtype()), op, ": ", what, " must be f32, bf16 or f16, got ", x.str());
  HF_CHECK(x.dim() >= 1 && x.sizes().back() > 0, op, ": ", what, " ", x.str(),
           " needs a non-empty last dim");
  return contiguous(x);
}

// A [C] parameter of x's dtype or f32 (or undefined), as the f32 [C] the backend reads.
Tensor param_f32(const Tensor& p, const Tensor& x, double absent_value, const char* op,
                 const char* what) {
  const int64_t C = x.sizes().back();
  if (!p.defined()) return full({C}, absent_value, DType::kF32, x.device());
  HF_CHECK(p.dim() == 1 && p.sizes()[0] == C, op, ": ", what, " ", p.str(), " must be [", C,
           "] for input ", x.str());
  HF_CHECK(p.dtype() == x.dtype() || p.dtype() == DType::kF32, op, ": ", what, " ", p.str(),
           " must be f32 or the input's dtype (input ", x.str(), ")");
  HF_CHECK(p.device() == x.device(), op, ": ", what, " ", p.str(), " is on ", p.device().str(),
           ", input ", x.str(), " on ", x.device().str());
  return contiguous(to_dtype(p, DType::kF32));
}

int64_t rows_of(const Tensor& x) {
  return x.numel() / x.sizes().back();
}

// A saved f32 statistic with one value per row, on the input's device.
Tensor row_stat(const Tensor& s, int64_t rows, Device device, const char* op, const char* what) {
  HF_CHECK(s.defined() && s.dtype() == DType::kF32 && s.numel() == rows, op, ": ", what, " ",
           s.defined() ? s.str() : std::string("(undefined)"), " must be f32 with ", rows,
           " elements");
  HF_CHECK(s.device() == device, op, ": ", what, " ", s.str(), " is on ", s.device().str(),
           ", the input on ", device.str());
  return contiguous(s);
}

// gy checked against x's shape and brought to x's dtype (the kernels read both as one type).
Tensor grad_like(const Tensor& gy, const Tensor& x, const char* op) {
  HF_CHECK(gy.defined() && gy.sizes() == x.sizes(), op, ": gradient ",
           gy.defined() ? gy.str() : std::string("(undefined)"), " does not match input ", x.str());
  HF_CHECK(gy.device() == x.device(), op, ": gradient ", gy.str(), " and input ", x.str(),
           " on different devices");
  return contiguous(to_dtype(gy, x.dtype()));
}

Tensor index_input(const Tensor& ids, const char* op, const char* what) {
  HF_CHECK(ids.defined(), op, ": ", what, " is undefined");
  HF_CHECK(ids.dtype() == DType::kI32 || ids.dtype() == DType::kI64, op, ": ", what,
           " must be i32 or i64, got ", ids.str());
  return contiguous(ids);
}

// First position whose index is outside [0, limit) and not `allowed`, or -1.
template <typename I>
int64_t first_bad_index(const I* p, int64_t n, int64_t limit, std::optional<int64_t> allowed) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = p[i];
    if ((v < 0 || v >= limit) && v != allowed) return i;
  }
  return -1;
}

// Throws naming the first out-of-range index and its position. Device ids are copied to the
// host for the check (token ids are small next to the activations; the device kernels also skip
// an out-of-range id rather than read outside the table).
void check_indices(const Tensor& ids_in, int64_t limit, std::optional<int64_t> allowed,
                   const char* op, const char* what, const char* where,
                   const std::string& context) {
  const Tensor ids = to_device(ids_in, Device::cpu());
  const int64_t n = ids.numel();
  int64_t bad, value;
  if (ids.dtype() == DType::kI32) {
    const int32_t* p = ids.data<int32_t>();
    bad = first_bad_index(p, n, limit, allowed);
    value = bad >= 0 ? p[bad] : 0;
  } else {
    const int64_t* p = ids.data<int64_t>();
    bad = first_bad_index(p, n, limit, allowed);
    value = bad >= 0 ? p[bad] : 0;
  }
  HF_CHECK(bad < 0, op, ": ", what, " ", value, " at ", where, " ", bad, " of ", ids_in.str(),
           " is outside [0, ", limit, ")", context);
}

void check_dropout_p(double p, const char* op) {
  HF_CHECK(p >= 0.0 && p < 1.0, op, ": p must be in [0, 1), got ", p);
}

Tensor rotate_half(const Tensor& x) {
  const int64_t last = x.dim() - 1, D = x.size(last);
  Tensor x1 = narrow(x, last, 0, D / 2), x2 = narrow(x, last, D / 2, D / 2);
  return cat({neg(x2), x1}, last);
}

}  // namespace

// ---- LayerNorm, RMSNorm over the last dim (rows = the product of the leading dims) ----------

LayerNormResult layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  Tensor xc = last_dim_input(x, "layer_norm", "input");
  Tensor w = param_f32(weight, xc, 1.0, "layer_norm", "weight");
  Tensor b = param_f32(bias, xc, 0.0, "layer_norm", "bias");
  HF_CHECK(eps >= 0, "layer_norm: eps must be >= 0, got ", eps);
  const int64_t rows = rows_of(xc);
  LayerNormResult r{empty_like(xc), empty({rows}, DType::kF32, x.device()),
                    empty({rows}, DType::kF32, x.device())};
  backend_for(x.device()).layer_norm(xc, w, b, eps, r.y, r.mean, r.rstd);
  return r;
}

LayerNormGrads layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight,
                                   const Tensor& mean, const Tensor& rstd, bool need_gbias) {
  const char* op = "layer_norm_backward";
  Tensor xc = last_dim_input(x, op, "input");
  Tensor gc = grad_like(gy, xc, op);
  Tensor w = param_f32(weight, xc, 1.0, op, "weight");
  const int64_t rows = rows_of(xc), C = xc.sizes().back();
  Tensor m = row_stat(mean, rows, x.device(), op, "mean");
  Tensor rs = row_stat(rstd, rows, x.device(), op, "rstd");
  LayerNormGrads g;
  g.gx = empty_like(xc);
  Tensor gw = weight.defined() ? empty({C}, DType::kF32, x.device()) : Tensor();
  Tensor gb = need_gbias ? empty({C}, DType::kF32, x.device()) : Tensor();
  backend_for(x.device()).layer_norm_backward(gc, xc, w, m, rs, g.gx, gw, gb);
  if (gw.defined()) g.gweight = to_dtype(gw, weight.dtype());
  // Without a bias tensor, gbias comes back in x's dtype (a bias would be x's dtype or f32).
  if (gb.defined()) g.gbias = to_dtype(gb, weight.defined() ? weight.dtype() : x.dtype());
  return g;
}

RmsNormResult rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  Tensor xc = last_dim_input(x, "rms_norm", "input");
  Tensor w = param_f32(weight, xc, 1.0, "rms_norm", "weight");
  HF_CHECK(eps >= 0, "rms_norm: eps must be >= 0, got ", eps);
  RmsNormResult r{empty_like(xc), empty({rows_of(xc)}, DType::kF32, x.device())};
  backend_for(x.device()).rms_norm(xc, w, eps, r.y, r.rstd);
  return r;
}

RmsNormGrads rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight,
                               const Tensor& rstd) {
  const char* op = "rms_norm_backward";
  Tensor xc = last_dim_input(x, op, "input");
  Tensor gc = grad_like(gy, xc, op);
  Tensor w = param_f32(weight, xc, 1.0, op, "weight");
  Tensor rs = row_stat(rstd, rows_of(xc), x.device(), op, "rstd");
  RmsNormGrads g;
  g.gx = empty_like(xc);
  Tensor gw = weight.defined() ? empty({xc.sizes().back()}, DType::kF32, x.device()) : Tensor();
  backend_for(x.device()).rms_norm_backward(gc, xc, w, rs, g.gx, gw);
  if (gw.defined()) g.gweight = to_dtype(gw, weight.dtype());
  return g;
}

// ---- embedding ------------------------------------------------------------------------------

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  HF_CHECK(weight.defined() && weight.dim() == 2, "embedding: weight must be [V, C], got ",
           weight.defined() ? weight.str() : std::string("(undefined)"));
  Tensor ic = index_input(ids, "embedding", "ids");
  HF_CHECK(ids.device() == weight.device(), "embedding: ids ", ids.str(), " on ",
           ids.device().str(), ", weight ", weight.str(), " on ", weight.device().str());
  const int64_t V = weight.sizes()[0];
  check_indices(ic, V, std::nullopt, "embedding", "id", "position",
                " (weight " + weight.str() + ")");
  Shape out_shape = ids.sizes();
  out_shape.push_back(weight.sizes()[1]);
  Tensor out = empty(out_shape, weight.dtype(), weight.device());
  backend_for(weight.device()).embedding(contiguous(weight), ic, out);
  return out;
}

namespace {

// The checked, contiguous ids of an embedding backward producing num_rows rows from gy.
Tensor embedding_backward_ids(const Tensor& gy, const Tensor& ids, int64_t num_rows) {
  Tensor ic = index_input(ids, "embedding_backward", "ids");
  HF_CHECK(gy.defined() && is_floating(gy.dtype()) && gy.dim() == ids.dim() + 1,
           "embedding_backward: gradient ", gy.defined() ? gy.str() : std::string("(undefined)"),
           " must be floating with shape [ids..., C] for ids ", ids.str());
  for (int64_t d = 0; d < ids.dim(); ++d) {
    HF_CHECK(gy.sizes()[d] == ids.sizes()[d], "embedding_backward: gradient ", gy.str(),
             " does not match ids ", ids.str());
  }
  HF_CHECK(num_rows >= 0, "embedding_backward: num_rows must be >= 0, got ", num_rows);
  HF_CHECK(gy.device() == ids.device(), "embedding_backward: gradient ", gy.str(), " on ",
           gy.device().str(), ", ids ", ids.str(), " on ", ids.device().str());
  check_indices(ic, num_rows, std::nullopt, "embedding_backward", "id", "position",
                " (num_rows " + std::to_string(num_rows) + ")");
  return ic;
}

}  // namespace

Tensor embedding_backward(const Tensor& gy, const Tensor& ids, int64_t num_rows) {
  Tensor ic = embedding_backward_ids(gy, ids, num_rows);
  Tensor gweight = empty({num_rows, gy.sizes().back()}, gy.dtype(), gy.device());
  backend_for(gy.device()).embedding_backward(contiguous(gy), ic, gweight);
  return gweight;
}

void embedding_backward_add_(Tensor& gweight, const Tensor& gy, const Tensor& ids) {
  HF_CHECK(gweight.defined() && gweight.dim() == 2 && gweight.is_contiguous(),
           "embedding_backward_add_: destination ",
           gweight.defined() ? gweight.str() : std::string("(undefined)"),
           " must be a contiguous [rows, C] tensor");
  Tensor ic = embedding_backward_ids(gy, ids, gweight.sizes()[0]);
  HF_CHECK(gy.dtype() == gweight.dtype() && gy.sizes().back() == gweight.sizes()[1] &&
               gy.device() == gweight.device(),
           "embedding_backward_add_: gradient ", gy.str(), " does not match the destination ",
           gweight.str(), " (dtype, columns, device)");
  backend_for(gy.device()).embedding_backward_add(contiguous(gy), ic, gweight);
}

// ---- cross-entropy --------------------------------------------------------------------------

CrossEntropyResult cross_entropy(const Tensor& logits, const Tensor& targets,
                                 int64_t ignore_index) {
  const char* op = "cross_entropy";
  Tensor lc = last_dim_input(logits, op, "logits");
  Tensor tc = index_input(targets, op, "targets");
  HF_CHECK(lc.dim() == 2 && tc.dim() == 1 && tc.sizes()[0] == lc.sizes()[0], op,
           ": expected logits [N, V] and targets [N], got ", logits.str(), " and ", targets.str());
  HF_CHECK(tc.device() == lc.device(), op, ": logits on ", lc.device().str(), ", targets on ",
           tc.device().str());
  check_indices(tc, lc.sizes()[1], ignore_index, op, "target", "row",
                " and is not ignore_index " + std::to_string(ignore_index));
  CrossEntropyResult r{empty({}, DType::kF32, lc.device()),
                       empty({lc.sizes()[0]}, DType::kF32, lc.device())};
  backend_for(lc.device()).cross_entropy(lc, tc, ignore_index, r.loss, r.lse);
  return r;
}

Tensor cross_entropy_backward(const Tensor& gloss, const Tensor& logits, const Tensor& targets,
                              const Tensor& lse, int64_t ignore_index, bool overwrite_logits) {
  const char* op = "cross_entropy_backward";
  Tensor lc = last_dim_input(logits, op, "logits");
  Tensor tc = index_input(targets, op, "targets");
  HF_CHECK(lc.dim() == 2 && tc.dim() == 1 && tc.sizes()[0] == lc.sizes()[0], op,
           ": expected logits [N, V] and targets [N], got ", logits.str(), " and ", targets.str());
  HF_CHECK(gloss.defined() && gloss.numel() == 1, op,
           ": gradient of the loss must have one "
           "element, got ",
           gloss.defined() ? gloss.str() : std::string("(undefined)"));
  check_indices(tc, lc.sizes()[1], ignore_index, op, "target", "row",
                " and is not ignore_index " + std::to_string(ignore_index));
  HF_CHECK(tc.device() == lc.device(), op, ": logits on ", lc.device().str(), ", targets on ",
           tc.device().str());
  Tensor lse_c = row_stat(lse, lc.sizes()[0], lc.device(), op, "lse");
  // The backend reads the loss gradient in device memory: a host scalar is moved there.
  Tensor g = contiguous(to_dtype(to_device(gloss, lc.device()), DType::kF32));
  // The backends read each logit before writing its gradient, so the two may share storage.
  Tensor glogits = overwrite_logits ? lc : empty_like(lc);
  backend_for(lc.device()).cross_entropy_backward(g, lc, tc, lse_c, ignore_index, glogits);
  return glogits;
}

// ---- blocked cross-entropy -------------------------------------------------------------------

bool cross_entropy_blocks(Device device) {
  return backend_for(device).cross_entropy_blocks();
}

bool prefers_cross_entropy_blocks(Device device, DType gemm_dtype, int64_t logits) {
  Backend& b = backend_for(device);
  return b.cross_entropy_blocks() && b.prefers_cross_entropy_blocks(gemm_dtype, logits);
}

CrossEntropyBlocks cross_entropy_begin(const Tensor& targets, int64_t vocab, int64_t ignore_index) {
  const char* op = "cross_entropy";
  CrossEntropyBlocks s;
  s.targets = index_input(targets, op, "targets");
  HF_CHECK(s.targets.dim() == 1, op, ": expected targets [N], got ", targets.str());
  HF_CHECK(vocab > 0, op, ": no classes");
  HF_CHECK(backend_for(s.targets.device()).cross_entropy_blocks(), op, ": the ",
           backend_for(s.targets.device()).name(), " backend has no blocked cross-entropy");
  check_indices(s.targets, vocab, ignore_index, op, "target", "row",
                " and is not ignore_index " + std::to_string(ignore_index));
  const int64_t N = s.targets.numel();
  for (int64_t t : s.targets.to_int_vector()) s.count += t != ignore_index;
  s.vocab = vocab;
  s.ignore_index = ignore_index;
  s.state = empty({N, 3}, DType::kF32, s.targets.device());
  // m = -inf, s = 0, the target's logit 0 (ignored rows keep it).
  Tensor max = narrow(s.state, 1, 0, 1), rest = narrow(s.state, 1, 1, 2);
  fill_(max, -std::numeric_limits<double>::infinity());
  fill_(rest, 0.0);
  return s;
}

namespace {

// A block's rows and columns checked against the state: logits f32 [rows, n], contiguous.
void check_block(const CrossEntropyBlocks& s, const Tensor& logits, int64_t row0, int64_t col0,
                 const char* op) {
  HF_CHECK(s.state.defined(), op, ": no cross_entropy_begin state");
  HF_CHECK(logits.defined() && logits.dim() == 2 && logits.dtype() == DType::kF32 &&
               logits.is_contiguous(),
           op, ": logits must be a contiguous f32 [rows, n] block, got ",
           logits.defined() ? logits.str() : std::string("(undefined)"));
  HF_CHECK(row0 >= 0 && row0 + logits.size(0) <= s.state.size(0) && col0 >= 0 &&
               col0 + logits.size(1) <= s.vocab,
           op, ": block ", logits.str(), " at row ", row0, ", column ", col0, " is outside [",
           s.state.size(0), ", ", s.vocab, "]");
  HF_CHECK(logits.device() == s.state.device(), op, ": logits on ", logits.device().str(),
           ", targets on ", s.state.device().str());
}

}  // namespace

void cross_entropy_fold_(CrossEntropyBlocks& s, const Tensor& logits, int64_t row0, int64_t col0) {
  check_block(s, logits, row0, col0, "cross_entropy_fold");
  const int64_t rows = logits.size(0);
  Tensor state = narrow(s.state, 0, row0, rows);
  backend_for(logits.device())
      .cross_entropy_fold(logits, col0, narrow(s.targets, 0, row0, rows), s.ignore_index, state);
}

CrossEntropyResult cross_entropy_finish(const CrossEntropyBlocks& s) {
  HF_CHECK(s.state.defined(), "cross_entropy_finish: no cross_entropy_begin state");
  const Device d = s.state.device();
  CrossEntropyResult r{empty({}, DType::kF32, d), empty({s.state.size(0)}, DType::kF32, d)};
  backend_for(d).cross_entropy_finish(s.state, s.targets, s.ignore_index, r.loss, r.lse);
  return r;
}

void cross_entropy_block_backward_(Tensor& out, const Tensor& gloss, const CrossEntropyBlocks& s,
                                   const Tensor& lse, const Tensor& logits, int64_t row0,
                                   int64_t col0) {
  const char* op = "cross_entropy_block_backward";
  check_block(s, logits, row0, col0, op);
  HF_CHECK(out.defined() && out.sizes() == logits.sizes() && out.is_contiguous() &&
               is_floating(out.dtype()) && out.device() == logits.device(),
           op, ": out must be a contiguous floating ", logits.str(), ", got ",
           out.defined() ? out.str() : std::string("(undefined)"));
  HF_CHECK(out.raw_data() == logits.raw_data() || out.storage() != logits.storage(), op,
           ": out shares the logits' storage without being them");
  HF_CHECK(out.dtype() == DType::kF32 || out.raw_data() != logits.raw_data(), op, ": a ",
           dtype_name(out.dtype()), " out cannot be written over f32 logits");
  HF_CHECK(gloss.defined() && gloss.numel() == 1, op,
           ": gradient of the loss must have one element, got ",
           gloss.defined() ? gloss.str() : std::string("(undefined)"));
  const int64_t rows = logits.size(0);
  const Tensor lse_rows =
      narrow(row_stat(lse, s.state.size(0), logits.device(), op, "lse"), 0, row0, rows);
  const Tensor g = contiguous(to_dtype(to_device(gloss, logits.device()), DType::kF32));
  backend_for(logits.device())
      .cross_entropy_block_backward(g, logits, col0, narrow(s.targets, 0, row0, rows), lse_rows,
                                    s.ignore_index, s.count, out);
}

// ---- dropout --------------------------------------------------------------------------------

Tensor dropout(const Tensor& x, double p, uint64_t seed) {
  check_dropout_p(p, "dropout");
  HF_CHECK(x.defined() && is_floating(x.dtype()), "dropout: expected a floating tensor, got ",
           x.defined() ? x.str() : std::string("(undefined)"));
  Tensor xc = contiguous(x);
  Tensor y = empty_like(xc);
  backend_for(x.device()).dropout(xc, p, seed, y);
  return y;
}

// The mask is a function of (seed, element index) only, so running the forward kernel on gy
// with the same seed gives exactly mask * gy / (1 - p).
Tensor dropout_backward(const Tensor& gy, double p, uint64_t seed) {
  check_dropout_p(p, "dropout_backward");
  HF_CHECK(gy.defined() && is_floating(gy.dtype()),
           "dropout_backward: expected a floating "
           "gradient, got ",
           gy.defined() ? gy.str() : std::string("(undefined)"));
  Tensor gc = contiguous(gy);
  Tensor gx = empty_like(gc);
  backend_for(gy.device()).dropout(gc, p, seed, gx);
  return gx;
}

// ---- cat ------------------------------------------------------------------------------------

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  HF_CHECK(!xs.empty(), "cat: no tensors to concatenate");
  for (size_t i = 0; i < xs.size(); ++i)
    HF_CHECK(xs[i].defined(), "cat: tensor ", i, " is undefined");
  const Tensor& first = xs[0];
  HF_CHECK(first.dim() > 0, "cat: cannot concatenate rank-0 tensor ", first.str());
  const int64_t d = wrap_dim(dim, first.dim(), "cat");
  Shape out_shape = first.sizes();
  out_shape[d] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    HF_CHECK(x.dtype() == first.dtype() && x.device() == first.device(), "cat: tensor ", i, " ",
             x.str(), " on ", x.device().str(), " does not match tensor 0 ", first.str(), " on ",
             first.device().str(), " (dtype and device must be equal)");
    bool same = x.dim() == first.dim();
    for (int64_t k = 0; same && k < x.dim(); ++k) same = k == d || x.sizes()[k] == first.sizes()[k];
    HF_CHECK(same, "cat: tensor ", i, " ", x.str(), " does not match tensor 0 ", first.str(),
             " in the dims other than ", d);
    out_shape[d] += x.sizes()[d];
  }
  Tensor out = empty(out_shape, first.dtype(), first.device());
  int64_t start = 0;
  for (const Tensor& x : xs) {
    Tensor part = narrow(out, d, start, x.sizes()[d]);
    copy_(part, x);
    start += x.sizes()[d];
  }
  return out;
}

Tensor rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, bool backward) {
  Tensor y = backend_for(x.device()).rotary(x, cos, sin, backward);
  if (y.defined()) return y;
  if (backward) return sub(mul(x, cos), rotate_half(mul(x, sin)));
  return add(mul(x, cos), mul(rotate_half(x), sin));
}

namespace {
void check_swiglu(const char* what, const Tensor& gate, const Tensor& up) {
  HF_CHECK(gate.defined() && up.defined(), what, ": undefined input");
  HF_CHECK(gate.sizes() == up.sizes() && gate.dtype() == up.dtype() &&
               gate.device() == up.device() && is_floating(gate.dtype()),
           what, ": gate ", gate.str(), " and up ", up.str(),
           " must be floating tensors of one shape, dtype and device");
}
}  // namespace

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  check_swiglu("swiglu", gate, up);
  Tensor y = backend_for(gate.device()).swiglu(gate, up);
  return y.defined() ? y : mul(silu(gate), up);
}

std::pair<Tensor, Tensor> swiglu_backward(const Tensor& g, const Tensor& gate, const Tensor& up) {
  check_swiglu("swiglu_backward", gate, up);
  HF_CHECK(g.defined() && g.sizes() == gate.sizes() && g.device() == gate.device(),
           "swiglu_backward: gradient ", g.defined() ? g.str() : std::string("undefined"),
           " does not match gate ", gate.str());
  if (g.dtype() == gate.dtype()) {
    auto grads = backend_for(gate.device()).swiglu_backward(g, gate, up);
    if (grads.first.defined()) return grads;
  }
  // As autograd's mul and silu nodes: the mul's gradients in g's and the operands' promoted
  // dtype, each cast to its operand's dtype, then silu's backward.
  const Tensor s = silu(gate);
  const Tensor g_s = to_dtype(mul(g, up), gate.dtype());
  Tensor g_up = to_dtype(mul(g, s), up.dtype());
  return {unary_backward(UnaryOp::kSilu, g_s, gate, s), std::move(g_up)};
}

}  // namespace hfrun::ops
