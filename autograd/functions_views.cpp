// Differentiable views, copies and casts.
#include "autograd/functions.h"
#include "autograd/node.h"

namespace hfrun {

using autograd::record;
using Grads = std::vector<Tensor>;

Tensor view(const Tensor& x, const Shape& shape) {
  Shape in = x.sizes();
  return record("view", {x}, ops::view(x, shape),
                [in](const Tensor& g) -> Grads { return {ops::reshape(g, in)}; });
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  Shape in = x.sizes();
  return record("reshape", {x}, ops::reshape(x, shape),
                [in](const Tensor& g) -> Grads { return {ops::reshape(g, in)}; });
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  return record("transpose", {x}, ops::transpose(x, d0, d1),
                [d0, d1](const Tensor& g) -> Grads { return {ops::transpose(g, d0, d1)}; });
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  Tensor y = ops::permute(x, dims);
  std::vector<int64_t> inverse(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    inverse[(dims[i] + x.dim()) % x.dim()] = static_cast<int64_t>(i);
  }
  return record("permute", {x}, y,
                [inverse](const Tensor& g) -> Grads { return {ops::permute(g, inverse)}; });
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  Shape in = x.sizes();
  DType dt = x.dtype();
  Device dev = x.device();
  return record("narrow", {x}, ops::narrow(x, dim, start, length),
                [in, dt, dev, dim, start, length](const Tensor& g) -> Grads {
                  // x's gradient is g inside the slice and zero elsewhere. Where a gradient of
                  // x is already pending (q, k and v cut from one projection: the first slice's
                  // backward left it), g is added into its slice there, instead of forming a
                  // second zero-padded x-sized tensor for the engine to add.
                  if (g.dtype() == dt) {
                    Tensor sink = autograd::gradient_sink(0, in, dt, dev, nullptr);
                    if (sink.defined() && !g.shares_storage_with(sink)) {
                      Tensor part = ops::narrow(sink, dim, start, length);
                      ops::add_(part, g);
                      return {Tensor()};
                    }
                  }
                  Tensor gx = ops::empty(in, dt, dev);
                  const int64_t end = start + length;
                  const int64_t size = in[wrap_dim(dim, static_cast<int64_t>(in.size()), "narrow")];
                  if (start > 0) {
                    Tensor before = ops::narrow(gx, dim, 0, start);
                    ops::fill_(before, 0.0);
                  }
                  if (end < size) {
                    Tensor after = ops::narrow(gx, dim, end, size - end);
                    ops::fill_(after, 0.0);
                  }
                  Tensor part = ops::narrow(gx, dim, start, length);
                  ops::copy_(part, g);
                  return {gx};
                });
}

Tensor expand(const Tensor& x, const Shape& shape) {
  Shape in = x.sizes();
  return record("expand", {x}, ops::expand(x, shape),
                [in](const Tensor& g) -> Grads { return {ops::sum_to(g, in)}; });
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  Shape in = x.sizes();
  return record("unsqueeze", {x}, ops::unsqueeze(x, dim),
                [in](const Tensor& g) -> Grads { return {ops::reshape(g, in)}; });
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  Shape in = x.sizes();
  return record("squeeze", {x}, ops::squeeze(x, dim),
                [in](const Tensor& g) -> Grads { return {ops::reshape(g, in)}; });
}

Tensor contiguous(const Tensor& x) {
  return record("contiguous", {x}, ops::contiguous(x),
                [](const Tensor& g) -> Grads { return {g}; });
}

Tensor to_dtype(const Tensor& x, DType dtype) {
  DType in = x.dtype();
  return record("to_dtype", {x}, ops::to_dtype(x, dtype),
                [in](const Tensor& g) -> Grads { return {ops::to_dtype(g, in)}; });
}

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  Tensor y = ops::cat(xs, dim);
  int64_t d = wrap_dim(dim, y.dim(), "cat");
  std::vector<int64_t> lengths;
  for (const Tensor& x : xs) lengths.push_back(x.sizes()[d]);
  return record("cat", xs, y, [lengths, d](const Tensor& g) -> Grads {
    Grads out;
    int64_t start = 0;
    for (int64_t len : lengths) {
      out.push_back(ops::narrow(g, d, start, len));
      start += len;
    }
    return out;
  });
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  HF_CHECK(x.dim() > 0, "split: cannot split rank-0 tensor ", x.str());
  int64_t d = wrap_dim(dim, x.dim(), "split");
  HF_CHECK(split_size > 0, "split: split_size must be positive, got ", split_size);
  std::vector<Tensor> parts;
  for (int64_t s = 0; s < x.sizes()[d]; s += split_size) {
    parts.push_back(narrow(x, d, s, std::min(split_size, x.sizes()[d] - s)));
  }
  return parts;
}

}  // namespace hfrun
