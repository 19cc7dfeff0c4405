// Finite-difference gradient checks for matmul, linear, softmax, log_softmax and scaled
// dot-product attention, on broadcast, transposed and non-contiguous inputs.
#include <cmath>
#include <optional>
#include <string>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "tensor/profiler.h"
#include "test_util.h"

namespace hfrun {
namespace {

using autograd::gradcheck;
using testing::randn;
using testing::tensor_near;
using testing::tensors_near;

// A leaf that is a non-contiguous view: the transpose of a fresh [shape[1], shape[0]] tensor.
Tensor transposed_leaf(const Shape& shape, uint64_t seed) {
  Tensor t = ops::transpose(randn({shape[1], shape[0]}, seed), 0, 1);
  t.set_requires_grad(true);
  return t;
}

TEST(GradMatmul, TwoD) {
  Tensor a = randn({3, 4}, 1, true), b = randn({4, 5}, 2, true);
  EXPECT_GRADCHECK([](const auto& x) { return matmul(x[0], x[1]); }, a, b);
}

TEST(GradMatmul, Batched) {
  Tensor a = randn({2, 3, 4}, 3, true), b = randn({2, 4, 2}, 4, true);
  EXPECT_GRADCHECK([](const auto& x) { return matmul(x[0], x[1]); }, a, b);
}

TEST(GradMatmul, BroadcastBatchSumsGradientsBack) {
  // Rank-2 b shared by a batched a (gb from one flattened GEMM), and the reverse.
  Tensor a = randn({2, 3, 4}, 5, true), b = randn({4, 2}, 6, true);
  EXPECT_GRADCHECK([](const auto& x) { return matmul(x[0], x[1]); }, a, b);
  Tensor a2 = randn({3, 4}, 7, true), b3 = randn({2, 4, 2}, 8, true);
  EXPECT_GRADCHECK([](const auto& x) { return matmul(x[0], x[1]); }, a2, b3);
  // Size-1 batch dims on both sides: [2, 1, 3, 4] x [1, 2, 4, 2].
  Tensor a4 = randn({2, 1, 3, 4}, 9, true), b4 = randn({1, 2, 4, 2}, 10, true);
  EXPECT_GRADCHECK([](const auto& x) { return matmul(x[0], x[1]); }, a4, b4);
}

TEST(GradMatmul, TransposedAndNonContiguousInputs) {
  Tensor at = transposed_leaf({3, 4}, 11), bt = transposed_leaf({4, 5}, 12);
  ASSERT_FALSE(at.is_contiguous());
  EXPECT_GRADCHECK([](const auto& x) { return matmul(x[0], x[1]); }, at, bt);
  // A differentiable transpose inside the graph, and a narrowed (strided) operand.
  Tensor a = randn({4, 3}, 13, true), wide = randn({4, 7}, 14, true);
  EXPECT_GRADCHECK(
      [](const auto& x) { return matmul(transpose(x[0], 0, 1), narrow(x[1], 1, 2, 5)); }, a, wide);
}

TEST(GradMatmul, Bias) {
  Tensor a = randn({2, 3, 4}, 15, true), b = randn({4, 5}, 16, true), bias = randn({5}, 17, true);
  EXPECT_GRADCHECK([](const auto& x) { return matmul(x[0], x[1], x[2]); }, a, b, bias);
}

TEST(GradMatmul, Bf16GradientsComeBackInBf16) {
  Tensor a = ops::to_dtype(randn({3, 4}, 18), DType::kBF16).set_requires_grad(true);
  Tensor b = ops::to_dtype(randn({4, 2}, 19), DType::kBF16).set_requires_grad(true);
  Tensor y = matmul(a, b, Tensor(), DType::kF32);
  EXPECT_EQ(y.dtype(), DType::kF32);
  autograd::backward(sum(y));
  ASSERT_TRUE(a.grad().defined() && b.grad().defined());
  EXPECT_EQ(a.grad().dtype(), DType::kBF16);
  EXPECT_EQ(b.grad().dtype(), DType::kBF16);
  // d sum(a @ b) / da[i, k] = sum_j b[k, j].
  std::vector<float> bv = b.to_vector(), want;
  for (int i = 0; i < 3; ++i) {
    for (int k = 0; k < 4; ++k) want.push_back(bv[k * 2] + bv[k * 2 + 1]);
  }
  EXPECT_TRUE(tensor_near(a.grad(), want, 2e-2, 1e-2));
}

TEST(GradLinear, WithBiasOn3DInput) {
  Tensor x = randn({2, 3, 4}, 20, true), w = randn({4, 5}, 21, true), bias = randn({5}, 22, true);
  EXPECT_GRADCHECK([](const auto& in) { return linear(in[0], in[1], in[2]); }, x, w, bias);
  EXPECT_GRADCHECK([](const auto& in) { return linear(in[0], in[1]); }, x, w);
}

TEST(GradLinear, NonContiguousInput) {
  Tensor base = randn({3, 2, 4}, 23, true);
  EXPECT_GRADCHECK([](const auto& in) { return linear(transpose(in[0], 0, 1), in[1], in[2]); },
                   base, randn({4, 3}, 24, true), randn({3}, 25, true));
}

// A tied lm_head: the weight is the transpose of a contiguous [out, in] table (the embedding).
// Its gradient arrives contiguous in the table's layout.
TEST(GradLinear, TransposedWeightGradientInTheTablesLayout) {
  EXPECT_GRADCHECK([](const auto& in) { return linear(in[0], transpose(in[1], 0, 1)); },
                   randn({2, 3, 4}, 29, true), randn({5, 4}, 30, true));
  Tensor table = randn({5, 4}, 31, true), x = randn({2, 3, 4}, 32);
  autograd::backward(sum(linear(x, transpose(table, 0, 1))));
  EXPECT_TRUE(table.grad().is_contiguous());
  // d sum(x @ table^T) / d table[o, i] = sum over rows of x[r, i].
  std::vector<float> xv = x.to_vector(), want;
  for (int64_t o = 0; o < 5; ++o) {
    for (int64_t i = 0; i < 4; ++i) {
      double acc = 0;
      for (int64_t r = 0; r < 6; ++r) acc += xv[r * 4 + i];
      want.push_back(static_cast<float>(acc));
    }
  }
  EXPECT_TRUE(tensor_near(table.grad(), want, 1e-5, 1e-5));
}

// torch.nn.Linear's layout: weight [out, in] is the op's input (no transpose node between).
// Values and gradients are bitwise those of the [in, out] transposed view, with and without bf16
// compute and for linear_gelu; the weight's gradient comes back [out, in] and contiguous, and a
// weight reached by this op only gets it written into its gradient buffer in place (the sink),
// with no separate copy or add.
TEST(GradLinear, OutInWeightIsTheTransposedViewsMathWithItsGradientInPlace) {
  const WeightLayout out_in = WeightLayout::kOutIn;
  EXPECT_GRADCHECK(
      [&](const auto& in) {
        return linear(in[0], in[1], in[2], std::nullopt, std::nullopt, out_in);
      },
      randn({2, 3, 4}, 33, true), randn({5, 4}, 34, true), randn({5}, 35, true));
  for (std::optional<DType> compute :
       {std::optional<DType>(), std::optional<DType>(DType::kBF16)}) {
    for (bool gelu : {false, true}) {
      SCOPED_TRACE(std::string(compute ? "bf16" : "f32") + (gelu ? " gelu" : ""));
      Tensor x = randn({2, 3, 6}, 36, true), w = randn({4, 6}, 37, true), b = randn({4}, 38, true);
      Tensor x2 = ops::clone(x.detach()), w2 = ops::clone(w.detach()), b2 = ops::clone(b.detach());
      for (Tensor* t : {&x2, &w2, &b2}) t->set_requires_grad(true);
      const Tensor g = randn({2, 3, 4}, 39);
      const auto apply = [&](const Tensor& in, const Tensor& weight, const Tensor& bias,
                             WeightLayout layout) {
        return gelu ? linear_gelu(in, weight, bias, compute, DType::kF32, layout)
                    : linear(in, weight, bias, compute, DType::kF32, layout);
      };
      const Tensor y = apply(x, w, b, out_in);
      const Tensor y2 = apply(x2, transpose(w2, 0, 1), b2, WeightLayout::kInOut);
      EXPECT_EQ(y.to_vector(), y2.to_vector());
      autograd::backward(y, g);
      autograd::backward(y2, g);
      EXPECT_EQ(w.grad().sizes(), w.sizes());
      EXPECT_TRUE(w.grad().is_contiguous());
      EXPECT_EQ(w.grad().to_vector(), w2.grad().to_vector());
      EXPECT_EQ(x.grad().to_vector(), x2.grad().to_vector());
      EXPECT_EQ(b.grad().to_vector(), b2.grad().to_vector());

      // Again, into the buffer zeroed lazily: written over in place, then added to in place.
      const void* buffer = w.grad().raw_data();
      const std::vector<float> once = w.grad().to_vector();
      w.zero_grad_lazily();
      profiler::reset();
      profiler::set_enabled(true);
      autograd::backward(apply(x.detach(), w, b.detach(), out_in), g);
      profiler::set_enabled(false);
      const auto ops_run = profiler::snapshot();
      EXPECT_EQ(ops_run.count("op:copy"), 0u) << "the gradient was copied into its buffer";
      EXPECT_EQ(ops_run.count("op:add_"), 0u);
      EXPECT_EQ(w.grad().raw_data(), buffer);
      EXPECT_EQ(w.grad().to_vector(), once);
      autograd::backward(apply(x.detach(), w, b.detach(), out_in), g);
      EXPECT_EQ(w.grad().raw_data(), buffer);
      std::vector<float> twice = once;
      for (float& v : twice) v *= 2;
      EXPECT_TRUE(tensor_near(w.grad(), twice, 1e-6, 1e-6));
    }
  }
  try {
    linear(randn({2, 5}, 1), randn({4, 6}, 2), Tensor(), std::nullopt, std::nullopt, out_in);
    ADD_FAILURE() << "a weight of the wrong shape was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("([out, in])"), std::string::npos) << e.what();
  }
}

TEST(GradLinear, LinearGeluEqualsGeluOfLinear) {
  Tensor x = randn({2, 3, 4}, 40, true), w = randn({4, 5}, 41, true), bias = randn({5}, 42, true);
  EXPECT_GRADCHECK([](const auto& in) { return linear_gelu(in[0], in[1], in[2]); }, x, w, bias);
  EXPECT_GRADCHECK([](const auto& in) { return linear_gelu(in[0], in[1]); }, x, w);
  // The same values and gradients as the composition (the CPU composes it exactly so).
  Tensor fused = linear_gelu(x, w, bias);
  Tensor composed = gelu(linear(x, w, bias), /*tanh_approx=*/true);
  EXPECT_EQ(fused.to_vector(), composed.to_vector());
  // Mixed precision: bf16 output (what the model feeds the next bf16 GEMM), f32 master grads.
  Tensor y16 = linear_gelu(x, w, bias, DType::kBF16, DType::kBF16);
  EXPECT_EQ(y16.dtype(), DType::kBF16);
  EXPECT_TRUE(tensors_near(to_dtype(y16, DType::kF32), composed, 0.05, 0.02));
  autograd::backward(sum(to_dtype(y16, DType::kF32)));
  EXPECT_EQ(w.grad().dtype(), DType::kF32);
  EXPECT_EQ(bias.grad().dtype(), DType::kF32);
}

TEST(GradLinear, WeightGradientIsXTransposeTimesG) {
  const int64_t rows = 6, in = 4, out = 3;
  Tensor x = randn({2, 3, in}, 26), w = randn({in, out}, 27, true), g = randn({2, 3, out}, 28);
  Tensor y = linear(x, w);
  autograd::backward(y, g);
  std::vector<float> xv = x.to_vector(), gv = g.to_vector(), want(in * out);
  for (int64_t i = 0; i < in; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (int64_t r = 0; r < rows; ++r)
        acc += static_cast<double>(xv[r * in + i]) * gv[r * out + o];
      want[i * out + o] = static_cast<float>(acc);
    }
  }
  EXPECT_TRUE(tensor_near(w.grad(), want, 1e-5, 1e-5));
  EXPECT_FALSE(x.grad().defined());  // x did not require grad
}

TEST(GradSoftmax, SeveralDims) {
  Tensor x = randn({2, 3, 4}, 29, true);
  for (int64_t dim : {0, 1, 2, -1}) {
    auto r = gradcheck([dim](const auto& in) { return softmax(in[0], dim); }, {x});
    EXPECT_TRUE(r.ok) << "softmax dim " << dim << ": " << r.message;
    auto lr = gradcheck([dim](const auto& in) { return log_softmax(in[0], dim); }, {x});
    EXPECT_TRUE(lr.ok) << "log_softmax dim " << dim << ": " << lr.message;
  }
}

TEST(GradSoftmax, NonContiguousInput) {
  Tensor x = transposed_leaf({5, 3}, 30);
  EXPECT_GRADCHECK([](const auto& in) { return softmax(in[0], 1); }, x);
  EXPECT_GRADCHECK([](const auto& in) { return log_softmax(in[0], 0); }, x);
}

TEST(GradAttention, CausalAndFull) {
  Tensor q = randn({1, 2, 3, 4}, 31, true), k = randn({1, 2, 3, 4}, 32, true);
  Tensor v = randn({1, 2, 3, 4}, 33, true);
  for (bool causal : {true, false}) {
    auto r = gradcheck(
        [causal](const auto& in) {
          return scaled_dot_product_attention(in[0], in[1], in[2], causal);
        },
        {q, k, v});
    EXPECT_TRUE(r.ok) << "causal " << causal << ": " << r.message;
  }
}

TEST(GradAttention, GroupedQueryHeads) {
  // 4 query heads over 2 KV heads, causal with S > T and full; and the same as attention over K,
  // V repeated per query head (HF's repeat_kv), whose K, V gradients sum over each group.
  Tensor q = randn({2, 4, 3, 4}, 38, true), k = randn({2, 2, 5, 4}, 39, true);
  Tensor v = randn({2, 2, 5, 3}, 40, true);
  for (bool causal : {true, false}) {
    auto r = gradcheck(
        [causal](const auto& in) {
          return scaled_dot_product_attention(in[0], in[1], in[2], causal);
        },
        {q, k, v});
    EXPECT_TRUE(r.ok) << "causal " << causal << ": " << r.message;
  }
  auto repeat = [](const Tensor& x) {  // [B, 2, S, D] -> [B, 4, S, D], heads 0,0,1,1
    return reshape(expand(unsqueeze(x, 2), {x.size(0), 2, 2, x.size(2), x.size(3)}),
                   {x.size(0), 4, x.size(2), x.size(3)});
  };
  // Fresh leaves (gradcheck may have left gradients on the ones above).
  Tensor q1 = randn({2, 4, 3, 4}, 38, true), k1 = randn({2, 2, 5, 4}, 39, true);
  Tensor v1 = randn({2, 2, 5, 3}, 40, true);
  Tensor q2 = randn({2, 4, 3, 4}, 38, true), k2 = randn({2, 2, 5, 4}, 39, true);
  Tensor v2 = randn({2, 2, 5, 3}, 40, true);
  Tensor w = randn({2, 4, 3, 3}, 41);
  Tensor y1 = scaled_dot_product_attention(q1, k1, v1, true);
  Tensor y2 = scaled_dot_product_attention(q2, repeat(k2), repeat(v2), true);
  EXPECT_TRUE(testing::tensors_near(y1, y2, 1e-6, 1e-6));
  autograd::backward(sum(mul(y1, w)));
  autograd::backward(sum(mul(y2, w)));
  EXPECT_TRUE(testing::tensors_near(q1.grad(), q2.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(testing::tensors_near(k1.grad(), k2.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(testing::tensors_near(v1.grad(), v2.grad(), 1e-5, 1e-5));
  // Heads that do not divide are refused.
  EXPECT_THROW(scaled_dot_product_attention(randn({1, 3, 2, 4}, 42), randn({1, 2, 2, 4}, 43),
                                            randn({1, 2, 2, 4}, 44), true),
               Error);
}

// Padding masked by key lengths: the padded keys get no gradient and the rest pass gradcheck,
// with grouped-query heads, causal and full.
TEST(GradAttention, KeyLengths) {
  Tensor q = randn({3, 4, 3, 4}, 45, true), k = randn({3, 2, 4, 4}, 46, true);
  Tensor v = randn({3, 2, 4, 3}, 47, true);
  const Tensor lengths = ops::from_ints({4, 2, 1}, {3});
  for (bool causal : {true, false}) {
    auto r = gradcheck(
        [causal, lengths](const auto& in) {
          return scaled_dot_product_attention(in[0], in[1], in[2], causal, std::nullopt, lengths);
        },
        {q, k, v});
    EXPECT_TRUE(r.ok) << "causal " << causal << ": " << r.message;
  }
  Tensor k2 = randn({3, 2, 4, 4}, 46, true), v2 = randn({3, 2, 4, 3}, 47, true);
  autograd::backward(sum(
      scaled_dot_product_attention(randn({3, 4, 3, 4}, 45), k2, v2, false, std::nullopt, lengths)));
  std::vector<float> gk = k2.grad().to_vector(), gv = v2.grad().to_vector();
  for (int64_t h = 0; h < 2; ++h) {  // batch 1: keys 2, 3 are padding
    for (int64_t j = 2; j < 4; ++j) {
      for (int64_t d = 0; d < 3; ++d) {
        EXPECT_EQ(gk[static_cast<size_t>((((1 * 2 + h) * 4) + j) * 4 + d)], 0.0f);
        EXPECT_EQ(gv[static_cast<size_t>((((1 * 2 + h) * 4) + j) * 3 + d)], 0.0f);
      }
    }
  }
}

// Attention dropout: the same values and gradients as dropping the composed softmax's
// probabilities with dropout() from the same generator state (the mask over their [B, H, T, S]
// element index), on the fused kernel and the composed path; and gradcheck under a fixed mask.
TEST(GradAttention, DropoutIsDropoutOfTheProbabilities) {
  const int64_t B = 2, H = 3, T = 37, D = 8;
  const double p = 0.3, scale = 0.35;
  for (bool fused : {true, false}) {
    const bool was = ops::set_fused_attention(fused);
    for (bool causal : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "fused " << fused << " causal " << causal);
      const Tensor lengths = causal ? Tensor() : ops::from_ints({T, 20}, {B});
      Tensor q = randn({B, H, T, D}, 70, true), k = randn({B, H, T, D}, 71, true);
      Tensor v = randn({B, H, T, D}, 72, true);
      Generator g1(5), g2(5);
      Tensor y = scaled_dot_product_attention(q, k, v, causal, scale, lengths, 0, p, &g1);
      const Tensor gy = randn({B, H, T, D}, 73);
      autograd::backward(sum(mul(y, gy)));
      const std::vector<Tensor> got = {y.detach(), q.grad(), k.grad(), v.grad()};

      Tensor q2 = randn({B, H, T, D}, 70, true), k2 = randn({B, H, T, D}, 71, true);
      Tensor v2 = randn({B, H, T, D}, 72, true);
      Tensor scores = mul_scalar(matmul(q2, transpose(k2, 2, 3)), scale);
      const Tensor pos = ops::arange(T);
      if (causal) {
        scores = masked_fill(scores, ops::gt(ops::reshape(pos, {1, T}), ops::reshape(pos, {T, 1})),
                             -INFINITY);
      } else {  // batch 1 sees keys [0, 20)
        std::vector<int64_t> ends;
        for (int64_t j = 1; j <= T; ++j) ends.push_back(j);
        const Tensor key_end = ops::from_ints(ends, {1, T});
        const Tensor pad = ops::gt(key_end, ops::reshape(lengths, {B, 1}));
        scores = masked_fill(scores, ops::reshape(pad, {B, 1, 1, T}), -INFINITY);
      }
      Tensor y2 = matmul(dropout(softmax(scores, -1), p, true, g2), v2);
      autograd::backward(sum(mul(y2, gy)));
      const std::vector<Tensor> want = {y2.detach(), q2.grad(), k2.grad(), v2.grad()};
      EXPECT_EQ(g1.offset(), g2.offset());
      const char* names[] = {"out", "gq", "gk", "gv"};
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_TRUE(tensor_near(got[i], want[i].to_vector(), 1e-5, 1e-4)) << names[i];
      }
      // Some probabilities were dropped, and not all: out differs from attention without dropout.
      const Tensor plain =
          scaled_dot_product_attention(q.detach(), k.detach(), v.detach(), causal, scale, lengths);
      EXPECT_FALSE(tensor_near(got[0], plain.to_vector(), 1e-3, 1e-3));
    }
    Tensor q = randn({1, 2, 6, 4}, 80, true), k = randn({1, 2, 6, 4}, 81, true);
    Tensor v = randn({1, 2, 6, 4}, 82, true);
    EXPECT_GRADCHECK(
        [](const auto& in) {
          Generator g(9);  // the same mask at every evaluation
          return scaled_dot_product_attention(in[0], in[1], in[2], true, std::nullopt, Tensor(), 0,
                                              0.4, &g);
        },
        q, k, v);
    ops::set_fused_attention(was);
  }
}

TEST(GradAttention, SplitQkvViews) {
  // q, k, v as a GPT-2 block makes them: split a [B, T, 3C] projection, view as heads, transpose.
  const int64_t B = 1, T = 3, H = 2, D = 2, C = H * D;
  Tensor qkv = randn({B, T, 3 * C}, 34, true);
  auto f = [=](const std::vector<Tensor>& in) {
    std::vector<Tensor> parts = split(in[0], C, 2);
    auto heads = [&](const Tensor& t) { return transpose(view(t, {B, T, H, D}), 1, 2); };
    return scaled_dot_product_attention(heads(parts[0]), heads(parts[1]), heads(parts[2]), true);
  };
  EXPECT_GRADCHECK(f, qkv);
}

TEST(GradAttention, OnlyRequestedInputsGetGradients) {
  Tensor q = randn({1, 1, 2, 3}, 35, true), k = randn({1, 1, 2, 3}, 36),
         v = randn({1, 1, 2, 3}, 37);
  autograd::backward(sum(scaled_dot_product_attention(q, k, v, true)));
  EXPECT_TRUE(q.grad().defined());
  EXPECT_EQ(q.grad().sizes(), q.sizes());
  EXPECT_FALSE(k.grad().defined());
  EXPECT_FALSE(v.grad().defined());
}

TEST(GradLinear, Bf16ComputeKeepsF32MasterGradients) {
  // Mixed precision: bf16 GEMMs, f32 inputs, outputs and gradients, close to the f32 result.
  Tensor x = randn({6, 16}, 31, true), w = randn({16, 8}, 32, true), b = randn({8}, 33, true);
  Tensor y32 = linear(x, w, b);
  Tensor y16 = linear(x, w, b, DType::kBF16);
  EXPECT_EQ(y16.dtype(), DType::kF32);
  EXPECT_TRUE(tensors_near(y16, y32, 0.05, 0.02));
  autograd::backward(sum(mul(y16, y16)));
  EXPECT_EQ(w.grad().dtype(), DType::kF32);
  EXPECT_EQ(x.grad().dtype(), DType::kF32);
  Tensor gw16 = w.grad(), gx16 = x.grad(), gb16 = b.grad();
  w.set_grad(Tensor());
  x.set_grad(Tensor());
  b.set_grad(Tensor());
  autograd::backward(sum(mul(y32, y32)));
  EXPECT_TRUE(tensors_near(gw16, w.grad(), 0.3, 0.03));
  EXPECT_TRUE(tensors_near(gx16, x.grad(), 0.3, 0.03));
  EXPECT_TRUE(tensors_near(gb16, b.grad(), 0.3, 0.03));
}

// Mixed precision: the weight gradient is the f32 product of the bf16 operands (x and g rounded
// to bf16), taken from the GEMM's accumulator, not rounded to bf16 and widened again; the
// second backward adds it into the weight's gradient buffer (the sink) in place.
TEST(GradLinear, Bf16WeightGradientKeepsTheF32Accumulator) {
  Tensor x = randn({12, 16}, 51), w = randn({16, 8}, 52, true), g = randn({12, 8}, 53);
  const auto bf16 = [](const Tensor& t) {
    return to_dtype(to_dtype(t, DType::kBF16), DType::kF32);
  };
  std::vector<float> xv = bf16(x).to_vector(), gv = bf16(g).to_vector(), want(16 * 8);
  for (int64_t i = 0; i < 16; ++i) {
    for (int64_t o = 0; o < 8; ++o) {
      double acc = 0;
      for (int64_t r = 0; r < 12; ++r) acc += double(xv[r * 16 + i]) * gv[r * 8 + o];
      want[i * 8 + o] = static_cast<float>(acc);
    }
  }
  autograd::backward(linear(x, w, Tensor(), DType::kBF16), g);
  ASSERT_EQ(w.grad().dtype(), DType::kF32);
  EXPECT_TRUE(tensor_near(w.grad(), want, 1e-5, 1e-5));
  int unrounded = 0;
  for (float v : w.grad().to_vector()) unrounded += v != bf16_to_f32(f32_to_bf16(v));
  EXPECT_GT(unrounded, 0) << "the weight gradient was rounded to bf16";
  const void* buffer = w.grad().raw_data();
  autograd::backward(linear(x, w, Tensor(), DType::kBF16), g);
  EXPECT_EQ(w.grad().raw_data(), buffer) << "the second gradient did not go into the buffer";
  for (float& v : want) v *= 2;
  EXPECT_TRUE(tensor_near(w.grad(), want, 1e-5, 1e-5));
}

// Mixed precision: an f32 input's gradient is the f32 product of the bf16 operands, taken from
// the GEMM's accumulator (not rounded to bf16 and widened again), and the linears reading one
// input (q, k and v; gate and up) sum their products into one f32 gradient.
TEST(GradLinear, Bf16InputGradientKeepsTheF32AccumulatorAcrossReaders) {
  Tensor x = randn({12, 16}, 61, true);
  const std::vector<Tensor> ws = {randn({8, 16}, 62, true), randn({16, 4}, 63, true),
                                  randn({5, 16}, 64, true)};
  const std::vector<WeightLayout> layouts = {WeightLayout::kOutIn, WeightLayout::kInOut,
                                             WeightLayout::kOutIn};
  const std::vector<Tensor> gs = {randn({12, 8}, 65), randn({12, 4}, 66), randn({12, 5}, 67)};
  const auto bf16 = [](const Tensor& t) {
    return to_dtype(to_dtype(t, DType::kBF16), DType::kF32).to_vector();
  };
  // d(loss)/dx = 3 * sum_i bf16(g_i) @ bf16(W_i)^T, summed in double.
  std::vector<double> want(12 * 16, 0.0);
  for (size_t i = 0; i < ws.size(); ++i) {
    const bool out_in = layouts[i] == WeightLayout::kOutIn;
    const int64_t out = gs[i].size(1);
    const std::vector<float> wv = bf16(ws[i]), gv = bf16(gs[i]);
    for (int64_t r = 0; r < 12; ++r) {
      for (int64_t c = 0; c < 16; ++c) {
        double acc = 0;
        for (int64_t o = 0; o < out; ++o) {
          acc += double(gv[r * out + o]) * wv[out_in ? o * 16 + c : c * out + o];
        }
        want[r * 16 + c] += 3 * acc;
      }
    }
  }
  // x's producer is a node, so the second and third readers find the first one's gradient
  // pending and add into it.
  const Tensor h = mul_scalar(x, 3.0);
  Tensor loss;
  for (size_t i = 0; i < ws.size(); ++i) {
    Tensor y = linear(h, ws[i], Tensor(), DType::kBF16, std::nullopt, layouts[i]);
    ASSERT_EQ(y.dtype(), DType::kF32);
    Tensor term = sum(mul(y, gs[i]));
    loss = loss.defined() ? add(loss, term) : term;
  }
  autograd::backward(loss);
  ASSERT_EQ(x.grad().dtype(), DType::kF32);
  std::vector<float> wantf(want.begin(), want.end());
  EXPECT_TRUE(tensor_near(x.grad(), wantf, 1e-5, 1e-5));
  int unrounded = 0;
  for (float v : x.grad().to_vector()) unrounded += v != bf16_to_f32(f32_to_bf16(v));
  EXPECT_GT(unrounded, 0) << "the input gradient was rounded to bf16";
}

// linear_add(y, x, W) = y + linear(x, W) with y's gradient the output's: f32 and bf16 GEMMs,
// both weight layouts. A y held only by the call is written in place (the output is its memory);
// a y someone else still holds is left as it was, the sum going to new memory.
TEST(GradLinear, LinearAddAddsIntoTheBaseOutput) {
  for (const std::optional<DType> compute : {std::optional<DType>(), std::optional(DType::kBF16)}) {
    for (const WeightLayout layout : {WeightLayout::kOutIn, WeightLayout::kInOut}) {
      for (const bool held : {false, true}) {
        SCOPED_TRACE(std::string(compute ? "bf16" : "f32") + (held ? ", y held" : "") +
                     (layout == WeightLayout::kOutIn ? ", [out, in]" : ", [in, out]"));
        Tensor x = randn({2, 5, 16}, 81, true);
        Tensor w =
            layout == WeightLayout::kOutIn ? randn({24, 16}, 82, true) : randn({16, 24}, 82, true);
        Tensor base_w = randn({24, 16}, 83, true);
        Tensor g = randn({2, 5, 24}, 84);
        // The composition, for the values and gradients.
        Tensor y_ref = linear(x, base_w, Tensor(), compute, DType::kF32, WeightLayout::kOutIn);
        Tensor want = add(y_ref, linear(x, w, Tensor(), compute, DType::kF32, layout));
        autograd::backward(sum(mul(want, g)));
        const Tensor want_gx = x.grad(), want_gw = w.grad(), want_gb = base_w.grad();
        x.set_grad(Tensor());
        w.set_grad(Tensor());
        base_w.set_grad(Tensor());

        Tensor y = linear(x, base_w, Tensor(), compute, DType::kF32, WeightLayout::kOutIn);
        const Tensor keep = held ? y.detach() : Tensor();
        const std::vector<float> y_before = y.to_vector();
        const void* y_data = y.raw_data();
        Tensor got = linear_add(std::move(y), x, w, compute, layout);
        EXPECT_EQ(got.raw_data() == y_data, !held);
        if (held) {
          EXPECT_EQ(keep.to_vector(), y_before);
        }
        const double tol = compute ? 2e-2 : 1e-5;
        EXPECT_TRUE(tensors_near(got, want.detach(), tol, tol));
        autograd::backward(sum(mul(got, g)));
        EXPECT_TRUE(tensors_near(x.grad(), want_gx, tol, tol));
        EXPECT_TRUE(tensors_near(w.grad(), want_gw, tol, tol));
        EXPECT_TRUE(tensors_near(base_w.grad(), want_gb, tol, tol));
      }
    }
  }
}

// bf16 output of bf16 GEMMs (LoRA's term into a bf16 projection): the sum y + x W^T, computed
// here in double from the bf16 inputs, within bf16 rounding.
TEST(GradLinear, LinearAddIntoBf16GivesTheSum) {
  const Tensor x = to_dtype(randn({6, 32}, 91), DType::kBF16);
  const Tensor w = to_dtype(randn({40, 32}, 92), DType::kBF16);
  const Tensor y0 = to_dtype(randn({6, 40}, 93), DType::kBF16);
  const std::vector<float> xv = to_dtype(x, DType::kF32).to_vector(),
                           wv = to_dtype(w, DType::kF32).to_vector(),
                           yv = to_dtype(y0, DType::kF32).to_vector();
  Tensor y = ops::clone(y0);
  Tensor got = linear_add(std::move(y), x, w, DType::kBF16, WeightLayout::kOutIn);
  ASSERT_EQ(got.dtype(), DType::kBF16);
  const std::vector<float> gv = to_dtype(got, DType::kF32).to_vector();
  int off = 0;
  for (int64_t r = 0; r < 6; ++r) {
    for (int64_t c = 0; c < 40; ++c) {
      double acc = yv[r * 40 + c];
      for (int64_t k = 0; k < 32; ++k) acc += double(xv[r * 32 + k]) * wv[c * 32 + k];
      const float want = bf16_to_f32(f32_to_bf16(static_cast<float>(acc)));
      // The f32 accumulation order may move the last bit of the sum before its rounding.
      off += std::abs(gv[r * 40 + c] - want) > std::abs(want) * 1e-2f + 1e-6f;
    }
  }
  EXPECT_EQ(off, 0);
}

// A bf16 tensor read by two bf16 linears (a LoRA layer's input: its base and A): the second
// reader's input-gradient GEMM adds into the first one's pending gradient; the sum is the
// composition's within bf16 rounding.
TEST(GradLinear, Bf16InputReadByTwoLinearsSumsItsGradients) {
  Tensor x = randn({12, 16}, 101, true);
  Tensor w1 = randn({8, 16}, 102, true), w2 = randn({3, 16}, 103, true);
  const Tensor g1 = randn({12, 8}, 104), g2 = randn({12, 3}, 105);
  Tensor xb = to_dtype(mul_scalar(x, 2.0), DType::kBF16);  // a node, so a gradient is pending
  Tensor y1 = linear(xb, w1, Tensor(), DType::kBF16, DType::kF32, WeightLayout::kOutIn);
  Tensor y2 = linear(xb, w2, Tensor(), DType::kBF16, DType::kF32, WeightLayout::kOutIn);
  Tensor loss = add(sum(mul(y1, g1)), sum(mul(y2, g2)));
  profiler::reset();
  profiler::set_enabled(true);
  autograd::backward(loss);
  profiler::set_enabled(false);
  const auto ops_run = profiler::snapshot();
  EXPECT_EQ(ops_run.count("op:axpy"), 0u) << "the engine summed the two gradients";
  EXPECT_GE(ops_run.count("op:matmul_add"), 1u);
  const auto bf16 = [](const Tensor& t) {
    return to_dtype(to_dtype(t, DType::kBF16), DType::kF32).to_vector();
  };
  const std::vector<float> w1v = bf16(w1), w2v = bf16(w2), g1v = bf16(g1), g2v = bf16(g2);
  std::vector<float> want(12 * 16);
  for (int64_t r = 0; r < 12; ++r) {
    for (int64_t c = 0; c < 16; ++c) {
      double acc = 0;
      for (int64_t o = 0; o < 8; ++o) acc += double(g1v[r * 8 + o]) * w1v[o * 16 + c];
      for (int64_t o = 0; o < 3; ++o) acc += double(g2v[r * 3 + o]) * w2v[o * 16 + c];
      want[r * 16 + c] = static_cast<float>(2 * acc);
    }
  }
  EXPECT_TRUE(tensor_near(x.grad(), want, 2e-2, 1e-2));
}

}  // namespace
}  // namespace hfrun
