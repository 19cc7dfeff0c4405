// Reductions: sums over any set of dims are done one dim at a time on the [outer, n, inner]
// view, innermost first.
#include <algorithm>

#include "tensor/backend.h"
#include "tensor/ops.h"

namespace hfrun::ops {
namespace {

std::vector<int64_t> normalise_dims(const std::vector<int64_t>& dims, const Tensor& x,
                                    const char* op) {
  std::vector<int64_t> out;
  if (x.dim() == 0) {
    // A scalar's dims 0 and -1 are valid (wrap_dim) but there is nothing to reduce over.
    for (int64_t d : dims) wrap_dim(d, x.dim(), op);
    return out;
  }
  if (dims.empty()) {
    for (int64_t d = 0; d < x.dim(); ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) {
    int64_t w = wrap_dim(d, x.dim(), op);
    HF_CHECK(std::find(out.begin(), out.end(), w) == out.end(), op, ": dim ", d, " repeated for ",
             x.str());
    out.push_back(w);
  }
  std::sort(out.begin(), out.end());
  return out;
}

void outer_n_inner(const Shape& s, int64_t dim, int64_t& outer, int64_t& n, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= s[d];
  n = s[dim];
  for (size_t d = dim + 1; d < s.size(); ++d) inner *= s[d];
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  HF_CHECK(is_floating(x.dtype()), "sum: expected a floating tensor, got ", x.str());
  std::vector<int64_t> ds = normalise_dims(dims, x, "sum");
  Tensor cur = contiguous(x);
  Shape kept = x.sizes();
  for (auto it = ds.rbegin(); it != ds.rend(); ++it) {
    int64_t outer, n, inner;
    outer_n_inner(cur.sizes(), *it, outer, n, inner);
    Shape s = cur.sizes();
    s[*it] = 1;
    Tensor out = empty(s, x.dtype(), x.device());
    backend_for(x.device()).reduce_sum(cur, outer, n, inner, out);
    cur = out;
    kept[*it] = 1;
  }
  if (keepdim) return view(cur, kept);
  Shape squeezed;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (std::find(ds.begin(), ds.end(), d) == ds.end()) squeezed.push_back(x.sizes()[d]);
  }
  return view(cur, squeezed);
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  std::vector<int64_t> ds = normalise_dims(dims, x, "mean");
  int64_t count = 1;
  for (int64_t d : ds) count *= x.sizes()[d];
  HF_CHECK(count > 0, "mean: reducing ", x.str(), " over an empty dim");
  Tensor s = sum(x, dims, keepdim);
  scale_(s, 1.0 / static_cast<double>(count));
  return s;
}

MaxResult max(const Tensor& x, int64_t dim, bool keepdim) {
  HF_CHECK(is_floating(x.dtype()), "max: expected a floating tensor, got ", x.str());
  HF_CHECK(x.dim() > 0, "max: expected at least one dim, got ", x.str());
  dim = wrap_dim(dim, x.dim(), "max");
  HF_CHECK(x.sizes()[dim] > 0, "max: dim ", dim, " of ", x.str(), " is empty");
  Tensor xc = contiguous(x);
  int64_t outer, n, inner;
  outer_n_inner(x.sizes(), dim, outer, n, inner);
  Shape s = x.sizes();
  s[dim] = 1;
  MaxResult r{empty(s, x.dtype(), x.device()), empty(s, DType::kI64, x.device())};
  backend_for(x.device()).reduce_max(xc, outer, n, inner, r.values, r.indices);
  if (!keepdim) {
    r.values = squeeze(r.values, dim);
    r.indices = squeeze(r.indices, dim);
  }
  return r;
}

Tensor max_all(const Tensor& x) {
  HF_CHECK(x.numel() > 0, "max_all: empty tensor ", x.str());
  return max(reshape(x, {-1}), 0).values;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.sizes() == shape) return g;
  HF_CHECK(g.sizes().size() >= shape.size(), "sum_to: cannot reduce ", g.str(), " to ",
           shape_str(shape));
  const size_t lead = g.sizes().size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t i = 0; i < g.sizes().size(); ++i) {
    if (i < lead || (shape[i - lead] == 1 && g.sizes()[i] != 1))
      dims.push_back(static_cast<int64_t>(i));
  }
  Tensor s = dims.empty() ? g : sum(g, dims, true);
  return reshape(s, shape);
}

}  // namespace hfrun::ops
