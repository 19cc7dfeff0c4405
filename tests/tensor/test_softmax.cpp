// softmax / log_softmax over any dim, their backward formulas, the causal masked softmax and
// attention forward/backward, against naive double-precision loops.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "tensor/backend.h"
#include "tensor/profiler.h"
#include "tensor/threads.h"
#include "test_util.h"

namespace hfrun {
namespace {

using testing::randn;
using testing::tensor_near;

// Softmax (or log-softmax) of x along dim in double.
std::vector<float> naive_softmax(const Tensor& x, int64_t dim, bool log) {
  std::vector<float> v = x.to_vector(), out(v.size());
  const Shape& s = x.sizes();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= s[d];
  for (size_t d = dim + 1; d < s.size(); ++d) inner *= s[d];
  const int64_t n = s[dim];
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < inner; ++j) {
      auto at = [&](int64_t i) { return (o * n + i) * inner + j; };
      double m = -INFINITY, sum = 0;
      for (int64_t i = 0; i < n; ++i) m = std::max(m, static_cast<double>(v[at(i)]));
      for (int64_t i = 0; i < n; ++i) sum += std::exp(v[at(i)] - m);
      for (int64_t i = 0; i < n; ++i) {
        out[at(i)] =
            static_cast<float>(log ? v[at(i)] - m - std::log(sum) : std::exp(v[at(i)] - m) / sum);
      }
    }
  }
  return out;
}

// Attention over q, k, v [B, H, T, D] (k, v with S positions) in double; batch b's keys from
// lengths[b] on are masked (HF's additive mask) and a row that sees no key is 0.
std::vector<float> naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                   double scale, const std::vector<int>& lengths = {}) {
  const int64_t BH = q.size(0) * q.size(1), T = q.size(2), S = k.size(2), D = q.size(3);
  const int64_t H = q.size(1);
  std::vector<float> qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
  std::vector<float> out(BH * T * D);
  std::vector<double> p(S);
  for (int64_t b = 0; b < BH; ++b) {
    for (int64_t i = 0; i < T; ++i) {
      double m = -INFINITY, sum = 0;
      for (int64_t j = 0; j < S; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += qv[(b * T + i) * D + d] * kv[(b * S + j) * D + d];
        const bool padding = !lengths.empty() && j >= lengths[static_cast<size_t>(b / H)];
        p[j] = ((causal && j > i + (S - T)) || padding) ? -INFINITY : dot * scale;
        m = std::max(m, p[j]);
      }
      for (int64_t j = 0; j < S; ++j) sum += (p[j] = m == -INFINITY ? 0.0 : std::exp(p[j] - m));
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t j = 0; j < S; ++j) {
          if (sum > 0) acc += p[j] / sum * vv[(b * S + j) * D + d];
        }
        out[(b * T + i) * D + d] = static_cast<float>(acc);
      }
    }
  }
  return out;
}

TEST(Softmax, LastDimMatchesNaiveAndSumsToOne) {
  Tensor x = randn({6, 37}, 1);  // 37: a vector body plus a tail
  Tensor y = ops::softmax(x, -1);
  EXPECT_TRUE(tensor_near(y, naive_softmax(x, 1, false), 1e-6, 1e-5));
  EXPECT_TRUE(tensor_near(ops::sum(y, {1}), std::vector<float>(6, 1.0f), 1e-5, 0));
}

TEST(Softmax, EveryDimOfA3DTensor) {
  // dim 0 and 1 run the strided kernel; inner 70 > one 64-column task.
  Tensor x = randn({3, 5, 70}, 2);
  for (int64_t dim = 0; dim < 3; ++dim) {
    EXPECT_TRUE(tensor_near(ops::softmax(x, dim), naive_softmax(x, dim, false), 1e-6, 1e-5))
        << "dim " << dim;
    EXPECT_TRUE(tensor_near(ops::log_softmax(x, dim), naive_softmax(x, dim, true), 1e-5, 1e-5))
        << "dim " << dim;
  }
}

TEST(Softmax, NonContiguousInput) {
  Tensor x = ops::transpose(randn({8, 4}, 3), 0, 1);  // [4, 8]
  EXPECT_TRUE(
      tensor_near(ops::softmax(x, 1), naive_softmax(ops::contiguous(x), 1, false), 1e-6, 1e-5));
}

TEST(Softmax, LargeValuesAreStable) {
  Tensor x = ops::from_vector({1000.f, 1001.f, 1002.f, -1000.f, 5e4f, 5e4f, 0.f, -5e4f}, {2, 4});
  Tensor y = ops::softmax(x, 1);
  EXPECT_TRUE(tensor_near(y, naive_softmax(x, 1, false), 1e-6, 1e-5));
  for (float v : y.to_vector()) EXPECT_TRUE(std::isfinite(v));
  Tensor ly = ops::log_softmax(x, 1);
  EXPECT_TRUE(tensor_near(ly, naive_softmax(x, 1, true), 1e-3, 1e-6));
  // -inf entries (a caller's own mask) get exactly zero probability.
  const float inf = std::numeric_limits<float>::infinity();
  Tensor masked = ops::from_vector({0.f, -inf, 1.f, -inf}, {4});
  EXPECT_TRUE(tensor_near(ops::softmax(masked, 0), naive_softmax(masked, 0, false), 1e-6, 1e-6));
  EXPECT_EQ(ops::softmax(masked, 0).to_vector()[1], 0.0f);
}

TEST(Softmax, Bf16UsesF32Math) {
  Tensor x = ops::to_dtype(randn({4, 50}, 4), DType::kBF16);
  Tensor y = ops::softmax(x, 1);
  EXPECT_EQ(y.dtype(), DType::kBF16);
  EXPECT_TRUE(tensor_near(y, naive_softmax(x, 1, false), 2e-3, 1e-2));
  EXPECT_TRUE(tensor_near(ops::log_softmax(x, 0), naive_softmax(x, 0, true), 2e-2, 1e-2));
}

TEST(Softmax, BackwardFormulas) {
  Tensor x = randn({3, 4, 6}, 5), gy = randn({3, 4, 6}, 6);
  for (int64_t dim : {1, 2}) {
    // softmax: gx = y * (gy - sum(gy * y)); log_softmax: gx = gy - exp(y) * sum(gy).
    Tensor y = ops::softmax(x, dim);
    Tensor dot = ops::sum(ops::mul(gy, y), {dim}, true);
    Tensor want = ops::mul(y, ops::sub(gy, dot));
    EXPECT_TRUE(tensor_near(ops::softmax_backward(gy, y, dim), want.to_vector(), 1e-5, 1e-4));
    Tensor ly = ops::log_softmax(x, dim);
    Tensor lwant = ops::sub(gy, ops::mul(ops::exp(ly), ops::sum(gy, {dim}, true)));
    EXPECT_TRUE(tensor_near(ops::log_softmax_backward(gy, ly, dim), lwant.to_vector(), 1e-5, 1e-4));
  }
}

TEST(Softmax, CausalMaskedSoftmax) {
  const int64_t BH = 2, T = 4, S = 6;  // queries are the last T of S positions
  Tensor scores = randn({BH, T, S}, 7);
  Tensor probs = ops::empty({BH, T, S});
  backend_for(Device::cpu()).scaled_masked_softmax(scores, 0.5, true, 0, Tensor(), probs);
  std::vector<float> sv = scores.to_vector(), pv = probs.to_vector();
  for (int64_t b = 0; b < BH; ++b) {
    for (int64_t i = 0; i < T; ++i) {
      const int64_t visible = i + (S - T) + 1;
      double m = -INFINITY, sum = 0, total = 0;
      for (int64_t j = 0; j < visible; ++j) m = std::max(m, 0.5 * sv[(b * T + i) * S + j]);
      for (int64_t j = 0; j < visible; ++j) sum += std::exp(0.5 * sv[(b * T + i) * S + j] - m);
      for (int64_t j = 0; j < S; ++j) {
        const float got = pv[(b * T + i) * S + j];
        total += got;
        if (j >= visible) {
          EXPECT_EQ(got, 0.0f) << "row " << i << " col " << j;
        } else {
          EXPECT_NEAR(got, std::exp(0.5 * sv[(b * T + i) * S + j] - m) / sum, 1e-6);
        }
      }
      EXPECT_NEAR(total, 1.0, 1e-5);
    }
  }
  // Square and not causal: a plain scaled softmax.
  Tensor sq = randn({1, 3, 3}, 8), full = ops::empty({1, 3, 3});
  backend_for(Device::cpu()).scaled_masked_softmax(sq, 2.0, false, 0, Tensor(), full);
  EXPECT_TRUE(tensor_near(full, naive_softmax(ops::mul_scalar(sq, 2.0), 2, false), 1e-6, 1e-5));
}

// A sliding window (HF's sliding_window W): query i of the last T of S positions sees keys
// i + (S - T) - W < j <= i + (S - T), and padding (key lengths) as well; W >= S masks nothing.
TEST(Softmax, SlidingWindowMaskedSoftmax) {
  const int64_t B = 2, H = 2, T = 5, S = 7, W = 2;
  Tensor scores = randn({B * H, T, S}, 17);
  // Batch 1's keys end at 3: its last queries' windows (keys 4-5, 5-6) hold none of them.
  Tensor lengths = ops::from_ints({7, 3}, {B}, DType::kI32);
  Backend& be = backend_for(Device::cpu());
  std::vector<float> sv = scores.to_vector();
  for (bool padded : {false, true}) {
    Tensor probs = ops::empty({B * H, T, S});
    be.scaled_masked_softmax(scores, 0.5, true, W, padded ? lengths : Tensor(), probs);
    std::vector<float> pv = probs.to_vector();
    for (int64_t r = 0; r < B * H; ++r) {
      const int64_t len = padded ? (r / H == 0 ? 7 : 3) : S;
      for (int64_t i = 0; i < T; ++i) {
        const int64_t pos = i + (S - T);
        auto seen = [&](int64_t j) { return j <= pos && j > pos - W && j < len; };
        double m = -INFINITY, sum = 0;
        for (int64_t j = 0; j < S; ++j) {
          if (seen(j)) m = std::max(m, 0.5 * sv[(r * T + i) * S + j]);
        }
        for (int64_t j = 0; j < S; ++j) {
          if (seen(j)) sum += std::exp(0.5 * sv[(r * T + i) * S + j] - m);
        }
        for (int64_t j = 0; j < S; ++j) {
          const float got = pv[(r * T + i) * S + j];
          if (!seen(j)) {
            EXPECT_EQ(got, 0.0f) << "row " << r << "/" << i << " col " << j;
          } else {
            EXPECT_NEAR(got, std::exp(0.5 * sv[(r * T + i) * S + j] - m) / sum, 1e-6);
          }
        }
      }
    }
  }
  // A window as long as the keys changes nothing, bit for bit.
  Tensor a = ops::empty({B * H, T, S}), b = ops::empty({B * H, T, S});
  be.scaled_masked_softmax(scores, 0.5, true, 0, Tensor(), a);
  be.scaled_masked_softmax(scores, 0.5, true, S, Tensor(), b);
  EXPECT_EQ(a.to_vector(), b.to_vector());
}

// Same bytes (a -0 against a 0 or two NaNs are told apart as they are stored).
bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.sizes() == b.sizes() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// The fused score gradient is the default's softmax_backward, scale and copy, bit for bit, in
// every output dtype; rows with masked (zero) probabilities included.
TEST(Softmax, AttentionScoresBackwardIsTheComposedPasses) {
  const int64_t n = 37;
  Tensor scores = ops::mul_scalar(randn({2, 6, n}, 12), 3.0);
  Tensor probs = ops::empty({2, 6, n});
  Backend& be = backend_for(Device::cpu());
  be.scaled_masked_softmax(scores, 0.5, true, 0, Tensor(), probs);
  Tensor gp = randn({2, 6, n}, 13);
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    Tensor fused = ops::empty({2, 6, n}, dt), composed = ops::empty({2, 6, n}, dt);
    be.attention_scores_backward(gp, probs, n, 0.125, fused);
    be.Backend::attention_scores_backward(gp, probs, n, 0.125, composed);
    EXPECT_TRUE(same_bytes(fused, composed)) << dtype_name(dt);
    // And the formula: scale * P * (dP - rowsum(dP * P)).
    Tensor dot = ops::sum(ops::mul(gp, probs), {2}, true);
    Tensor want = ops::mul_scalar(ops::mul(probs, ops::sub(gp, dot)), 0.125);
    EXPECT_TRUE(tensor_near(ops::to_dtype(fused, DType::kF32), want.to_vector(), 1e-2, 1e-2));
  }
}

// Sets whether ops::attention may take the backend's fused kernel, for a scope.
class FusedAttention {
 public:
  explicit FusedAttention(bool on) : before_(ops::set_fused_attention(on)) {}
  ~FusedAttention() { ops::set_fused_attention(before_); }
  FusedAttention(const FusedAttention&) = delete;
  FusedAttention& operator=(const FusedAttention&) = delete;

 private:
  bool before_;
};

// Both CPU paths: the composed one keeps the probabilities, the fused one (f32 and bf16) only
// the rows' log-sum-exps.
TEST(Attention, ForwardMatchesNaiveOnSplitViews) {
  const int64_t B = 2, T = 5, H = 3, D = 4, C = H * D;
  Tensor qkv = randn({B, T, 3 * C}, 9);
  auto head = [&](int64_t i) {
    return ops::transpose(ops::view(ops::narrow(qkv, 2, i * C, C), {B, T, H, D}), 1, 2);
  };
  Tensor q = head(0), k = head(1), v = head(2);
  for (bool fused : {false, true}) {
    FusedAttention mode(fused);
    for (bool causal : {true, false}) {
      ops::AttentionResult r = ops::attention(q, k, v, causal, 0.5);
      EXPECT_EQ(r.out.sizes(), (Shape{B, H, T, D}));
      EXPECT_TRUE(tensor_near(r.out, naive_attention(q, k, v, causal, 0.5), 1e-5, 1e-4))
          << "causal " << causal << " fused " << fused;
      if (fused) {
        EXPECT_FALSE(r.probs.defined());
        EXPECT_EQ(r.lse.sizes(), (Shape{B, H, T}));
      } else {
        EXPECT_EQ(r.probs.sizes(), (Shape{B, H, T, T}));
        if (causal) {
          EXPECT_EQ(r.probs.to_vector()[1], 0.0f);  // query 0 cannot see key 1
        }
      }
    }
  }
}

// Right padding as key lengths (HF's attention_mask): full and causal, grouped-query heads, a
// batch with no padding and one whose only key is the first; a length of 0 gives zeros.
TEST(Attention, KeyLengthsMaskPadding) {
  const int64_t B = 3, H = 4, Hkv = 2, T = 5, D = 4;
  Tensor q = randn({B, H, T, D}, 50), k = randn({B, Hkv, T, D}, 51), v = randn({B, Hkv, T, D}, 52);
  auto repeat = [&](const Tensor& x) {  // the naive loop reads one KV head per query head
    return ops::contiguous(
        ops::reshape(ops::expand(ops::unsqueeze(x, 2), {B, Hkv, H / Hkv, T, D}), {B, H, T, D}));
  };
  for (const std::vector<int>& lengths : {std::vector<int>{5, 3, 1}, std::vector<int>{2, 5, 0}}) {
    for (bool causal : {false, true}) {
      Tensor kl = ops::from_ints(std::vector<int64_t>(lengths.begin(), lengths.end()), {B});
      for (bool fused : {true, false}) {
        FusedAttention mode(fused);
        ops::AttentionResult r = ops::attention(q, k, v, causal, 0.5, kl);
        EXPECT_TRUE(tensor_near(
            r.out, naive_attention(q, repeat(k), repeat(v), causal, 0.5, lengths), 1e-5, 1e-4))
            << "causal " << causal << " lengths " << lengths[0] << "," << lengths[1] << " fused "
            << fused;
      }
      // Masked keys have probability 0 exactly.
      FusedAttention composed(false);
      ops::AttentionResult r = ops::attention(q, k, v, causal, 0.5, kl);
      std::vector<float> pv = r.probs.to_vector();
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t j = lengths[static_cast<size_t>(b)]; j < T; ++j) {
          EXPECT_EQ(pv[static_cast<size_t>(((b * H + 1) * T + 2) * T + j)], 0.0f);
        }
      }
    }
  }
  // Lengths outside [0, S] and the wrong shape are refused.
  EXPECT_THROW(ops::attention(q, k, v, false, 0.5, ops::from_ints({1, 6, 2}, {B})), Error);
  EXPECT_THROW(ops::attention(q, k, v, false, 0.5, ops::from_ints({1, 2}, {2})), Error);
}

// Kept for the backward, heads split out of one projection (strided views) are copied dense
// once, in the forward; the backward given those copies makes none, and its gradients are the
// views' bit for bit. Not kept (inference), nothing is returned and the outputs are equal.
TEST(Attention, StridedHeadsAreCopiedOnceForForwardAndBackward) {
  FusedAttention composed(false);
  const int64_t B = 2, T = 6, H = 3, D = 8, C = H * D;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor qkv = ops::to_dtype(randn({B, T, 3 * C}, 14), dt);
    auto head = [&](int64_t i) {
      return ops::transpose(ops::view(ops::narrow(qkv, 2, i * C, C), {B, T, H, D}), 1, 2);
    };
    const Tensor q = head(0), k = head(1), v = head(2);
    const Tensor gout = ops::to_dtype(randn({B, H, T, D}, 15), dt);
    profiler::reset();
    profiler::set_enabled(true);
    const ops::AttentionResult r = ops::attention(q, k, v, true, 0.25, Tensor(), true);
    profiler::set_enabled(false);
    auto counts = profiler::snapshot();
    const ops::AttentionResult plain = ops::attention(q, k, v, true, 0.25);
    EXPECT_FALSE(plain.q.defined() || plain.k.defined() || plain.v.defined());
    EXPECT_TRUE(same_bytes(plain.probs, r.probs));
    EXPECT_EQ(counts["op:copy strided"].calls, 3);
    for (const Tensor* t : {&r.q, &r.k, &r.v}) ASSERT_TRUE(t->defined() && t->is_contiguous());
    EXPECT_TRUE(same_bytes(r.q, ops::contiguous(q)));
    EXPECT_TRUE(same_bytes(r.v, ops::contiguous(v)));
    profiler::reset();
    profiler::set_enabled(true);
    const ops::AttentionGrads dense = ops::attention_backward(gout, r.q, r.k, r.v, r, true, 0.25);
    profiler::set_enabled(false);
    counts = profiler::snapshot();
    EXPECT_EQ(counts.count("op:copy strided"), 0u);
    EXPECT_EQ(counts.count("op:copy"), 0u);
    const ops::AttentionGrads views = ops::attention_backward(gout, q, k, v, r, true, 0.25);
    EXPECT_TRUE(same_bytes(dense.gq, views.gq));
    EXPECT_TRUE(same_bytes(dense.gk, views.gk));
    EXPECT_TRUE(same_bytes(dense.gv, views.gv));
  }
  // No query or no batch (strided, empty views): nothing to copy, and nothing thrown.
  for (const Shape& shape : {Shape{2, 0, 72}, Shape{0, 6, 72}}) {
    Tensor qkv = ops::empty(shape);
    const int64_t B = shape[0], T = shape[1];
    auto head = [&](int64_t i) {
      return ops::transpose(ops::view(ops::narrow(qkv, 2, i * 24, 24), {B, T, 3, 8}), 1, 2);
    };
    const ops::AttentionResult r =
        ops::attention(head(0), head(1), head(2), true, 0.25, Tensor(), true);
    EXPECT_EQ(r.out.sizes(), (Shape{B, 3, T, 8}));
    const ops::AttentionGrads g =
        ops::attention_backward(ops::zeros({B, 3, T, 8}), r.q, r.k, r.v, r, true, 0.25);
    EXPECT_EQ(g.gk.sizes(), (Shape{B, 3, T, 8}));
  }
  // One strided tensor as q, k and v is copied once.
  Tensor x = ops::transpose(randn({2, 6, 3, 8}, 16), 1, 2);
  profiler::reset();
  profiler::set_enabled(true);
  const ops::AttentionResult r = ops::attention(x, x, x, false, 0.25, Tensor(), true);
  profiler::set_enabled(false);
  EXPECT_EQ(profiler::snapshot()["op:copy strided"].calls, 1);
  EXPECT_TRUE(r.q.is_same(r.k) && r.q.is_same(r.v));
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  // dL/dq for L = sum(out * R), checked numerically on a few elements of each input.
  const int64_t B = 1, H = 2, T = 3, D = 4;
  Tensor q = randn({B, H, T, D}, 10), k = randn({B, H, T, D}, 11), v = randn({B, H, T, D}, 12);
  Tensor r = randn({B, H, T, D}, 13);
  const double scale = 0.5;
  for (bool fused : {false, true}) {
    SCOPED_TRACE(fused ? "fused" : "composed");
    FusedAttention mode(fused);
    ops::AttentionResult fwd = ops::attention(q, k, v, true, scale);
    ops::AttentionGrads g = ops::attention_backward(r, q, k, v, fwd, true, scale);
    auto loss = [&] {
      std::vector<float> o = ops::attention(q, k, v, true, scale).out.to_vector(),
                         rv = r.to_vector();
      double acc = 0;
      for (size_t i = 0; i < o.size(); ++i) acc += static_cast<double>(o[i]) * rv[i];
      return acc;
    };
    const Tensor* inputs[] = {&q, &k, &v};
    const Tensor* grads[] = {&g.gq, &g.gk, &g.gv};
    for (int which = 0; which < 3; ++which) {
      std::vector<float> analytic = grads[which]->to_vector();
      float* data = inputs[which]->data<float>();
      for (int64_t e : {0, 5, 13, 22}) {
        const float orig = data[e];
        data[e] = orig + 1e-2f;
        const double plus = loss();
        data[e] = orig - 1e-2f;
        const double minus = loss();
        data[e] = orig;
        EXPECT_NEAR(analytic[e], (plus - minus) / 2e-2, 2e-3) << "input " << which << " elem " << e;
      }
    }
  }
}

// The CPU's fused kernel against the composed path, forward and backward, where their work
// differs: query blocks (128 rows) and key ranges (multiples of 32) cut mid-sequence, the last
// T of S positions (a KV cache), grouped-query heads, padding (a batch that sees no key at all)
// and sliding windows, on heads split out of one projection (strided) and on dense ones.
TEST(Attention, CpuFusedKernelMatchesTheComposedPath) {
  struct Case {
    int64_t b, h, hkv, t, s, d;
    bool causal;
    int64_t window;
    std::vector<int64_t> lengths;  // empty: no padding
    bool split;                    // q, k, v strided views of one [B, T, 3, H, D] tensor
  };
  const std::vector<Case> cases = {
      {2, 4, 4, 300, 300, 16, true, 0, {}, true},
      {2, 4, 2, 300, 300, 16, false, 0, {}, false},
      {1, 6, 2, 200, 200, 8, true, 0, {}, false},
      {2, 2, 1, 3, 261, 16, true, 0, {}, false},  // decoding 3 tokens after 258
      {3, 4, 2, 150, 150, 16, true, 0, {150, 37, 0}, false},
      {3, 2, 2, 140, 140, 8, false, 0, {1, 140, 65}, true},
      {2, 4, 2, 290, 290, 16, true, 40, {}, true},  // a window shorter than a block
      {2, 2, 2, 270, 270, 8, true, 150, {270, 100}, false},
      {1, 2, 1, 5, 200, 8, true, 33, {}, false},  // decoding with a window
  };
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(::testing::Message()
                   << dtype_name(dt) << " B" << c.b << " H" << c.h << "/" << c.hkv << " T" << c.t
                   << " S" << c.s << " causal " << c.causal << " window " << c.window << " padded "
                   << !c.lengths.empty() << " split " << c.split << " dropout "
                   << ((&c - cases.data()) % 3 != 2));
      const uint64_t seed = static_cast<uint64_t>(c.t * 7 + c.s + c.h);
      Tensor q, k, v;
      if (c.split) {  // self-attention: T = S
        Tensor qkv = ops::to_dtype(randn({c.b, c.t, c.h + 2 * c.hkv, c.d}, seed), dt);
        q = ops::transpose(ops::narrow(qkv, 2, 0, c.h), 1, 2);
        k = ops::transpose(ops::narrow(qkv, 2, c.h, c.hkv), 1, 2);
        v = ops::transpose(ops::narrow(qkv, 2, c.h + c.hkv, c.hkv), 1, 2);
      } else {
        q = ops::to_dtype(randn({c.b, c.h, c.t, c.d}, seed), dt);
        k = ops::to_dtype(randn({c.b, c.hkv, c.s, c.d}, seed + 1), dt);
        v = ops::to_dtype(randn({c.b, c.hkv, c.s, c.d}, seed + 2), dt);
      }
      const Tensor gout = ops::to_dtype(randn({c.b, c.h, c.t, c.d}, seed + 3), dt);
      const Tensor kl = c.lengths.empty() ? Tensor() : ops::from_ints(c.lengths, {c.b});
      const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
      // Two cases in three with attention dropout (the fused kernel draws the mask row by row).
      const bool dropped = (&c - cases.data()) % 3 != 2;
      const DropoutMask drop{dropped ? 0.25 : 0.0, seed * 31};
      auto run = [&](bool fused) {
        FusedAttention mode(fused);
        ops::AttentionResult r = ops::attention(q, k, v, c.causal, scale, kl, true, c.window, drop);
        EXPECT_EQ(r.lse.defined(), fused);
        const Tensor& qd = r.q.defined() ? r.q : q;
        const Tensor& kd = r.k.defined() ? r.k : k;
        const Tensor& vd = r.v.defined() ? r.v : v;
        ops::AttentionGrads g = ops::attention_backward(gout, qd, kd, vd, r, c.causal, scale);
        return std::vector<Tensor>{r.out, g.gq, g.gk, g.gv};
      };
      const std::vector<Tensor> fused = run(true), composed = run(false);
      const double tol = dt == DType::kF32 ? 2e-5 : 2e-2;
      const char* names[] = {"out", "gq", "gk", "gv"};
      for (size_t i = 0; i < fused.size(); ++i) {
        EXPECT_EQ(fused[i].sizes(), composed[i].sizes()) << names[i];
        EXPECT_TRUE(tensor_near(fused[i], composed[i].to_vector(), tol, tol)) << names[i];
      }
      if (!c.lengths.empty() && c.lengths.back() == 0) {
        // The batch that sees no key: output 0 and no gradient, exactly.
        const int64_t last = c.b - 1;
        for (const Tensor& x : {fused[0], fused[1]}) {
          EXPECT_EQ(ops::narrow(x, 0, last, 1).to_vector(),
                    std::vector<float>(static_cast<size_t>(x.numel() / c.b), 0.0f));
        }
      }
    }
  }
}

// The fused kernel splits its work by heads, never inside a product: one thread and two give
// the same bytes.
TEST(Attention, CpuFusedKernelIsTheSameOnAnyThreadCount) {
  Tensor q = ops::to_dtype(randn({2, 4, 200, 16}, 60), DType::kBF16);
  Tensor k = ops::to_dtype(randn({2, 2, 200, 16}, 61), DType::kBF16);
  Tensor v = ops::to_dtype(randn({2, 2, 200, 16}, 62), DType::kBF16);
  Tensor gout = ops::to_dtype(randn({2, 4, 200, 16}, 63), DType::kBF16);
  FusedAttention mode(true);
  auto run = [&](int threads) {
    const int before = num_threads();
    set_num_threads(threads);
    ops::AttentionResult r = ops::attention(q, k, v, true, 0.25, Tensor(), true, 70);
    ops::AttentionGrads g = ops::attention_backward(gout, q, k, v, r, true, 0.25);
    set_num_threads(before);
    return std::vector<Tensor>{r.out, r.lse, g.gq, g.gk, g.gv};
  };
  const std::vector<Tensor> one = run(1), two = run(2);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(same_bytes(one[i], two[i])) << i;
}

TEST(Attention, ErrorsNameTheShapes) {
  Tensor q = randn({1, 2, 3, 4}, 14), k = randn({1, 2, 3, 5}, 15);
  try {
    ops::attention(q, k, k, true, 1.0);
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("attention"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("f32[1, 2, 3, 4]"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("f32[1, 2, 3, 5]"), std::string::npos) << e.message();
  }
  EXPECT_THROW(
      ops::attention(randn({2, 3, 4}, 16), randn({2, 3, 4}, 17), randn({2, 3, 4}, 18), true, 1.0),
      Error);
  EXPECT_THROW(ops::softmax(ops::from_ints({1, 2}, {2}), 0), Error);
  EXPECT_THROW(ops::softmax(randn({2, 3}, 19), 2), Error);
}

}  // namespace
}  // namespace hfrun
