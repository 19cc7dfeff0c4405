#include "models/tensor_parallel.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::nn {

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
  std::vector<float> local(all.size()), mask(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    const bool mine = all[i] >= vocab_begin && all[i] < vocab_begin + rows;
    local[i] = mine ? static_cast<float>(all[i] - vocab_begin) : 0.0f;
    mask[i] = mine ? 1.0f : 0.0f;
  }
  Shape mask_shape = ids.sizes();
  mask_shape.push_back(1);
  Tensor e = embedding(weight, ops::from_vector(local, ids.sizes(), DType::kI64));
  e = mul(e, ops::from_vector(mask, mask_shape));
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
  Tensor x = ops::contiguous(logits);
  const float* l = x.data<float>();
  const std::vector<int64_t> tgt = targets.to_int_vector();
  // Per token: the maximum, then the sum of exp(l - max) and the target's logit, each over
  // the whole vocabulary (the group), as one fused cross-entropy computes them.
  // Rows are independent: one OpenMP pool (the one oneDNN and our kernels share) splits them.
  Tensor mx = ops::empty({N});
  float* m = mx.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; ++i) {
    float v = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < V; ++j) v = std::max(v, l[i * V + j]);
    m[i] = v;
  }
  group.allreduce_max(mx);
  Tensor sums = ops::empty({2 * N});
  float* s = sums.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; ++i) {
    float acc = 0;
    for (int64_t j = 0; j < V; ++j) acc += std::exp(l[i * V + j] - m[i]);
    s[i] = acc;
    const int64_t t = tgt[i] - vocab_begin;
    s[N + i] = (tgt[i] != ignore_index && t >= 0 && t < V) ? l[i * V + t] : 0.0f;
  }
  const int64_t count = static_cast<int64_t>(
      std::count_if(tgt.begin(), tgt.end(), [&](int64_t t) { return t != ignore_index; }));
  group.allreduce_sum(sums);
  double total = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (tgt[i] == ignore_index) continue;
    total += static_cast<double>(std::log(s[i]) + m[i] - s[N + i]);
  }
  const double denom = static_cast<double>(std::max<int64_t>(count, 1));
  Tensor loss = ops::scalar(count > 0 ? total / denom : std::nan(""));
  return autograd::record(
      "VocabParallelCrossEntropy", {logits}, loss,
      [x, mx, sums, tgt, vocab_begin, ignore_index, N, V, denom](const Tensor& gl) {
        const float scale = static_cast<float>(gl.item() / denom);
        Tensor g = ops::empty(x.sizes());
        float* gd = g.data<float>();
        const float* l = x.data<float>();
        const float* m = mx.data<float>();
        const float* s = sums.data<float>();
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < N; ++i) {
          const bool skip = tgt[i] == ignore_index;
          const int64_t t = tgt[i] - vocab_begin;
          for (int64_t j = 0; j < V; ++j) {
            const float p = std::exp(l[i * V + j] - m[i]) / s[i];
            gd[i * V + j] = skip ? 0.0f : (p - (j == t ? 1.0f : 0.0f)) * scale;
          }
        }
        return std::vector<Tensor>{g};
      });
}

}  // namespace hfrun::nn
