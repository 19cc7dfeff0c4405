// View ops: new shape/strides/offset over the same storage.
#include <algorithm>
#include <numeric>

#include "tensor/ops.h"

namespace hfrun::ops {
namespace {

// Resolves a single -1 in `shape` against numel.
Shape infer_shape(const Shape& shape, int64_t numel, const char* op, const Tensor& x) {
  Shape out = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      HF_CHECK(infer < 0, op, ": only one dimension can be -1 in ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      HF_CHECK(out[i] >= 0, op, ": invalid dimension ", out[i], " in ", shape_str(shape));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    HF_CHECK(known != 0 && numel % known == 0, op, ": cannot reshape ", x.str(), " to ",
             shape_str(shape));
    out[infer] = numel / known;
  }
  HF_CHECK(shape_numel(out) == numel, op, ": cannot reshape ", x.str(), " (", numel,
           " elements) to ", shape_str(shape));
  return out;
}

// Strides for viewing x as `shape` without copying, or empty when impossible (PyTorch's
// computeStride: each group of old dims that maps to new dims must be contiguous in itself).
Shape view_strides(const Tensor& x, const Shape& shape) {
  const Shape& old_sz = x.sizes();
  const Shape& old_st = x.strides();
  if (x.numel() == 0 || x.dim() == 0) return contiguous_strides(shape);
  Shape new_st(shape.size());
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base_stride = old_st.empty() ? 1 : old_st.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_sz.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_sz[d];
    if (d == 0 || (old_sz[d - 1] != 1 && old_st[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        new_st[view_d] = view_numel * chunk_base_stride;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return {};
      if (d > 0) {
        chunk_base_stride = old_st[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return {};
  return new_st;
}

}  // namespace

Tensor view(const Tensor& x, const Shape& shape) {
  Shape s = infer_shape(shape, x.numel(), "view", x);
  Shape st = view_strides(x, s);
  HF_CHECK(!st.empty() || s.empty(), "view: ", x.str(), " with strides ", shape_str(x.strides()),
           " cannot be viewed as ", shape_str(s), " without a copy; use reshape");
  return make_view(x, s, st, x.offset());
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  Shape s = infer_shape(shape, x.numel(), "reshape", x);
  Shape st = view_strides(x, s);
  if (!st.empty() || s.empty()) return make_view(x, s, st.empty() ? Shape{} : st, x.offset());
  return view(clone(x), s);
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  d0 = wrap_dim(d0, x.dim(), "transpose");
  d1 = wrap_dim(d1, x.dim(), "transpose");
  if (x.dim() == 0) return x.detach();  // dims 0/-1 of a scalar: nothing to swap
  Shape sz = x.sizes(), st = x.strides();
  std::swap(sz[d0], sz[d1]);
  std::swap(st[d0], st[d1]);
  return make_view(x, sz, st, x.offset());
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  HF_CHECK(static_cast<int64_t>(dims.size()) == x.dim(), "permute: ", dims.size(),
           " dims given for ", x.str());
  Shape sz(dims.size()), st(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], x.dim(), "permute");
    HF_CHECK(!seen[d], "permute: dim ", d, " repeated for ", x.str());
    seen[d] = true;
    sz[i] = x.sizes()[d];
    st[i] = x.strides()[d];
  }
  return make_view(x, sz, st, x.offset());
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  HF_CHECK(x.dim() > 0, "narrow: cannot narrow rank-0 tensor ", x.str());
  dim = wrap_dim(dim, x.dim(), "narrow");
  // length <= size - start: start + length could overflow and pass the check.
  HF_CHECK(start >= 0 && length >= 0 && start <= x.sizes()[dim] && length <= x.sizes()[dim] - start,
           "narrow: [", start, ", ", start, " + ", length, ") out of range for dim ", dim, " of ",
           x.str());
  Shape sz = x.sizes();
  sz[dim] = length;
  return make_view(x, sz, x.strides(), x.offset() + start * x.strides()[dim]);
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  HF_CHECK(x.dim() > 0, "select: cannot select from rank-0 tensor ", x.str());
  dim = wrap_dim(dim, x.dim(), "select");
  if (index < 0) index += x.sizes()[dim];
  HF_CHECK(index >= 0 && index < x.sizes()[dim], "select: index ", index, " out of range for dim ",
           dim, " of ", x.str());
  Shape sz = x.sizes(), st = x.strides();
  int64_t off = x.offset() + index * st[dim];
  sz.erase(sz.begin() + dim);
  st.erase(st.begin() + dim);
  return make_view(x, sz, st, off);
}

Tensor expand(const Tensor& x, const Shape& shape) {
  HF_CHECK(shape.size() >= x.sizes().size(), "expand: cannot expand ", x.str(), " to ",
           shape_str(shape), " (fewer dims)");
  const size_t lead = shape.size() - x.sizes().size();
  Shape sz(shape.size()), st(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      HF_CHECK(shape[i] >= 0, "expand: invalid size -1 for a new leading dim in ",
               shape_str(shape));
      sz[i] = shape[i];
      st[i] = 0;
      continue;
    }
    int64_t have = x.sizes()[i - lead];
    int64_t want = shape[i] == -1 ? have : shape[i];
    HF_CHECK(want >= 0 && (have == want || have == 1), "expand: cannot expand ", x.str(), " to ",
             shape_str(shape));
    sz[i] = want;
    st[i] = have == want ? x.strides()[i - lead] : 0;
  }
  return make_view(x, sz, st, x.offset());
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  dim = wrap_dim(dim, x.dim() + 1, "unsqueeze");
  Shape sz = x.sizes(), st = x.strides();
  int64_t s = dim < x.dim() ? sz[dim] * st[dim] : 1;
  sz.insert(sz.begin() + dim, 1);
  st.insert(st.begin() + dim, s);
  return make_view(x, sz, st, x.offset());
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  dim = wrap_dim(dim, x.dim(), "squeeze");
  if (x.dim() == 0 || x.sizes()[dim] != 1) return x.detach();
  Shape sz = x.sizes(), st = x.strides();
  sz.erase(sz.begin() + dim);
  st.erase(st.begin() + dim);
  return make_view(x, sz, st, x.offset());
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  if (x.dim() == 0) return reshape(x, {1});
  start_dim = wrap_dim(start_dim, x.dim(), "flatten");
  end_dim = wrap_dim(end_dim, x.dim(), "flatten");
  HF_CHECK(start_dim <= end_dim, "flatten: start_dim ", start_dim, " > end_dim ", end_dim);
  Shape sz;
  for (int64_t d = 0; d < start_dim; ++d) sz.push_back(x.sizes()[d]);
  int64_t m = 1;
  for (int64_t d = start_dim; d <= end_dim; ++d) m *= x.sizes()[d];
  sz.push_back(m);
  for (int64_t d = end_dim + 1; d < x.dim(); ++d) sz.push_back(x.sizes()[d]);
  return reshape(x, sz);
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  HF_CHECK(x.dim() > 0, "split: cannot split rank-0 tensor ", x.str());
  dim = wrap_dim(dim, x.dim(), "split");
  HF_CHECK(split_size > 0, "split: split_size must be positive, got ", split_size);
  std::vector<Tensor> parts;
  for (int64_t s = 0; s < x.sizes()[dim]; s += split_size) {
    parts.push_back(narrow(x, dim, s, std::min(split_size, x.sizes()[dim] - s)));
  }
  return parts;
}

}  // namespace hfrun::ops
