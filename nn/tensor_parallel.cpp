#include "nn/tensor_parallel.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::nn {

bool matches_plan_pattern(const std::string& pattern, const std::string& path) {
  size_t p = 0, q = 0;
  while (p <= pattern.size() && q <= path.size()) {
    const size_t pe = std::min(pattern.find('.', p), pattern.size());
    const size_t qe = std::min(path.find('.', q), path.size());
    const std::string_view want(pattern.data() + p, pe - p), got(path.data() + q, qe - q);
    if (want != "*" && want != got) return false;
    if (want == "*" && got.empty()) return false;
    if (pe == pattern.size() || qe == path.size()) return pe == pattern.size() && qe == path.size();
    p = pe + 1;
    q = qe + 1;
  }
  return false;
}

std::pair<int64_t, int64_t> tensor_parallel_range(int64_t n, int t, int size) {
  return {n * t / size, n * (t + 1) / size};
}

namespace {

int64_t block_size(const TensorParallelSplit& s) {
  const int64_t n = s.full_shape.at(static_cast<size_t>(s.dim));
  HF_CHECK(n % s.groups == 0, "tensor parallel: dimension ", s.dim, " of ", shape_str(s.full_shape),
           " is not ", s.groups, " equal blocks");
  return n / s.groups;
}

}  // namespace

Shape tensor_parallel_local_shape(const TensorParallelSplit& s, int t, int size) {
  if (!s.split()) return s.full_shape;
  const auto [lo, hi] = tensor_parallel_range(block_size(s), t, size);
  Shape local = s.full_shape;
  local[static_cast<size_t>(s.dim)] = (hi - lo) * s.groups;
  return local;
}

Tensor tensor_parallel_slice(const Tensor& full, const TensorParallelSplit& s, int t, int size) {
  if (!s.split()) return full;
  HF_CHECK(full.sizes() == s.full_shape, "tensor parallel: slicing ", full.str(), ", expected ",
           shape_str(s.full_shape));
  const int64_t n = block_size(s);
  const auto [lo, hi] = tensor_parallel_range(n, t, size);
  std::vector<Tensor> parts;
  for (int b = 0; b < s.groups; ++b) parts.push_back(ops::narrow(full, s.dim, b * n + lo, hi - lo));
  return ops::contiguous(ops::cat(parts, s.dim));
}

Tensor tensor_parallel_assemble(const std::vector<Tensor>& parts, const TensorParallelSplit& s) {
  HF_CHECK(!parts.empty(), "tensor parallel: no parts to assemble");
  if (!s.split()) return parts[0];
  const int size = static_cast<int>(parts.size());
  const int64_t n = block_size(s);
  std::vector<Tensor> pieces;
  for (int b = 0; b < s.groups; ++b) {
    for (int t = 0; t < size; ++t) {
      const auto [lo, hi] = tensor_parallel_range(n, t, size);
      HF_CHECK(parts[t].sizes() == tensor_parallel_local_shape(s, t, size),
               "tensor parallel: part ", t, " is ", parts[t].str(), ", expected ",
               shape_str(tensor_parallel_local_shape(s, t, size)));
      pieces.push_back(ops::narrow(parts[t], s.dim, b * (hi - lo), hi - lo));
    }
  }
  return ops::contiguous(ops::cat(pieces, s.dim));
}

Tensor copy_to_tensor_parallel(const Tensor& x, TensorParallelGroup& group) {
  TensorParallelGroup* g = &group;
  return autograd::record("CopyToTensorParallel", {x}, x,
                          [g](const Tensor& gy) -> std::vector<Tensor> {
                            Tensor sum = ops::clone(gy);  // contiguous, ours alone
                            g->allreduce_sum(sum);
                            return {sum};
                          });
}

Tensor reduce_from_tensor_parallel(const Tensor& x, TensorParallelGroup& group) {
  Tensor sum = ops::clone(x);
  group.allreduce_sum(sum);
  return autograd::record("ReduceFromTensorParallel", {x}, sum,
                          [](const Tensor& gy) -> std::vector<Tensor> { return {gy}; });
}

Tensor vocab_parallel_embedding(const Tensor& weight, const Tensor& ids, int64_t vocab_begin,
                                TensorParallelGroup& group) {
  const int64_t rows = weight.size(0);
  std::vector<int64_t> all = ids.to_int_vector();
  std::vector<int64_t> local(all.size());
  std::vector<float> mask(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    const bool mine = all[i] >= vocab_begin && all[i] < vocab_begin + rows;
    local[i] = mine ? all[i] - vocab_begin : 0;
    mask[i] = mine ? 1.0f : 0.0f;
  }
  Shape mask_shape = ids.sizes();
  mask_shape.push_back(1);
  const Device dev = weight.device();
  Tensor e = embedding(weight, ops::to_device(ops::from_ints(local, ids.sizes()), dev));
  e = mul(e, ops::to_device(ops::from_vector(mask, mask_shape), dev));
  return reduce_from_tensor_parallel(e, group);
}

Tensor vocab_parallel_cross_entropy(const Tensor& logits, const Tensor& targets,
                                    int64_t vocab_begin, TensorParallelGroup& group,
                                    int64_t ignore_index) {
  HF_CHECK(logits.dtype() == DType::kF32 && logits.dim() >= 1,
           "vocab_parallel_cross_entropy: ", "f32 logits required, got ", logits.str());
  const int64_t V = logits.size(logits.dim() - 1);
  const int64_t N = logits.numel() / std::max<int64_t>(V, 1);
  HF_CHECK(targets.numel() == N, "vocab_parallel_cross_entropy: targets ", targets.str(),
           " do not match logits ", logits.str());
  // Composed from ops, so it runs on the logits' device. Per token: the maximum, then the sum of
  // exp(l - max) and the target's logit, each over the whole vocabulary (the group), as one
  // fused cross-entropy computes them. Targets are read on the host (N ids).
  const Device dev = logits.device();
  Tensor x = ops::reshape(ops::contiguous(logits), {N, V});
  const std::vector<int64_t> tgt = targets.to_int_vector();
  // Per row: the target's column in this shard or -1, and where to read its logit (a row's own
  // first element when the target is elsewhere: read, then replaced by 0).
  std::vector<int64_t> local_target(N, -1), picked_at(N, 0);
  std::vector<float> keep(N, 0.0f);
  int64_t count = 0;
  for (int64_t i = 0; i < N; ++i) {
    picked_at[i] = i * V;
    if (tgt[i] == ignore_index) continue;
    ++count;
    keep[i] = 1.0f;
    const int64_t t = tgt[i] - vocab_begin;
    if (t >= 0 && t < V) {
      local_target[i] = t;
      picked_at[i] = i * V + t;
    }
  }
  const Tensor target_t = ops::to_device(ops::from_ints(local_target, {N, 1}), dev);
  const Tensor has_t = ops::gt(target_t, ops::scalar(-1.0, DType::kI64));  // [N, 1] bool
  Tensor mx = ops::contiguous(ops::max(x, 1, /*keepdim=*/true).values);    // [N, 1]
  group.allreduce_max(mx);
  Tensor sum_exp = ops::sum(ops::unary(ops::UnaryOp::kExp, ops::sub(x, mx)), {1});
  Tensor gathered = ops::embedding(ops::reshape(x, {N * V, 1}),
                                   ops::to_device(ops::from_ints(picked_at, {N}), dev));
  Tensor picked = ops::reshape(ops::where(has_t, gathered, ops::scalar(0.0)), {N});
  Tensor sums = ops::cat({sum_exp, picked}, 0);  // [2N]
  group.allreduce_sum(sums);
  const std::vector<float> s = sums.to_vector(), m = mx.to_vector();
  double total = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (tgt[i] == ignore_index) continue;
    total += static_cast<double>(std::log(s[i]) + m[i] - s[N + i]);
  }
  const double denom = static_cast<double>(std::max<int64_t>(count, 1));
  Tensor loss = ops::to_device(ops::scalar(count > 0 ? total / denom : std::nan("")), dev);
  const Tensor keep_t = ops::to_device(ops::from_vector(keep, {N, 1}), dev);
  const Shape shape = logits.sizes();
  // d loss / d l = (softmax(l) - onehot(target)) * scale on kept rows, 0 on ignored ones. The
  // one-hot compares column numbers with each row's target (no scatter); [N, V] temporaries are
  // dropped as soon as the next one exists.
  return autograd::record(
      "VocabParallelCrossEntropy", {logits}, loss,
      [x, mx, sums, keep_t, target_t, denom, N, V, shape](const Tensor& gl) {
        const double scale = gl.item() / denom;
        const Device d = x.device();
        Tensor g = ops::unary(ops::UnaryOp::kExp, ops::sub(x, mx));
        g = ops::div(g, ops::reshape(ops::narrow(sums, 0, 0, N), {N, 1}));
        const Tensor columns = ops::reshape(ops::to_device(ops::arange(V), d), {1, V});
        ops::add_(g, ops::to_dtype(ops::eq(columns, target_t), DType::kF32), -1.0);
        g = ops::mul(g, ops::mul_scalar(keep_t, scale));
        return std::vector<Tensor>{ops::reshape(g, shape)};
      });
}

}  // namespace hfrun::nn
