// Norms, embedding, cross-entropy, dropout and cat against naive double-precision references.
#include <cmath>
#include <string>

#include "tensor/backend/cpu/philox.h"
#include "tensor/random.h"
#include "tensor/threads.h"
#include "test_util.h"

namespace hfrun {
namespace {

using testing::expect_error_naming;
using testing::randn;
using testing::tensor_near;
using testing::tensors_near;

// Row-wise LayerNorm (RMSNorm when `rms`) of x [rows, C] in double; w/b empty = absent.
std::vector<float> naive_norm(const std::vector<float>& x, int64_t C, const std::vector<float>& w,
                              const std::vector<float>& b, double eps, bool rms) {
  std::vector<float> y(x.size());
  for (size_t r = 0; r < x.size() / C; ++r) {
    const float* xr = x.data() + r * C;
    double mean = 0, var = 0;
    if (!rms) {
      for (int64_t c = 0; c < C; ++c) mean += xr[c];
      mean /= C;
    }
    for (int64_t c = 0; c < C; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    var /= C;
    for (int64_t c = 0; c < C; ++c) {
      double v = (xr[c] - mean) / std::sqrt(var + eps) * (w.empty() ? 1.0 : w[c]);
      y[r * C + c] = static_cast<float>(v + (b.empty() ? 0.0 : b[c]));
    }
  }
  return y;
}

// Mean NLL of log_softmax(logits [N, V]) over rows whose target is not `ignore`, in double.
double naive_cross_entropy(const std::vector<float>& logits, int64_t V,
                           const std::vector<int64_t>& targets, int64_t ignore) {
  double total = 0;
  int64_t count = 0;
  for (size_t r = 0; r < targets.size(); ++r) {
    if (targets[r] == ignore) continue;
    const float* row = logits.data() + r * V;
    double mx = row[0], s = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
    for (int64_t v = 0; v < V; ++v) s += std::exp(row[v] - mx);
    total += mx + std::log(s) - row[targets[r]];
    ++count;
  }
  return total / static_cast<double>(count);
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.sizes() == b.sizes() && a.to_vector() == b.to_vector();
}

TEST(NnOps, LayerNormMatchesNaiveDouble) {
  Tensor x = ops::add_scalar(randn({4, 7}, 1), 3.0);  // a non-zero mean
  Tensor w = randn({7}, 2), b = randn({7}, 3);
  ops::LayerNormResult r = ops::layer_norm(x, w, b, 1e-5);
  EXPECT_EQ(r.y.sizes(), x.sizes());
  EXPECT_TRUE(tensor_near(
      r.y, naive_norm(x.to_vector(), 7, w.to_vector(), b.to_vector(), 1e-5, false), 1e-5, 1e-4));
  // The saved statistics: mean and 1 / sqrt(var + eps) per row.
  std::vector<float> xv = x.to_vector();
  for (int64_t row = 0; row < 4; ++row) {
    double m = 0, v = 0;
    for (int c = 0; c < 7; ++c) m += xv[row * 7 + c] / 7.0;
    for (int c = 0; c < 7; ++c) v += (xv[row * 7 + c] - m) * (xv[row * 7 + c] - m) / 7.0;
    EXPECT_NEAR(r.mean.to_vector()[row], m, 1e-5);
    EXPECT_NEAR(r.rstd.to_vector()[row], 1.0 / std::sqrt(v + 1e-5), 1e-4);
  }
  // No weight/bias: plain normalisation. A 3-D non-contiguous input normalises its last dim.
  Tensor plain = ops::layer_norm(x, Tensor(), Tensor(), 1e-5).y;
  EXPECT_TRUE(tensor_near(plain, naive_norm(xv, 7, {}, {}, 1e-5, false), 1e-5, 1e-4));
  Tensor x3 = ops::transpose(randn({5, 2, 3}, 4), 0, 2);  // [3, 2, 5]
  Tensor y3 = ops::layer_norm(x3, Tensor(), Tensor(), 1e-5).y;
  EXPECT_EQ(y3.sizes(), (Shape{3, 2, 5}));
  EXPECT_TRUE(tensor_near(y3, naive_norm(ops::contiguous(x3).to_vector(), 5, {}, {}, 1e-5, false),
                          1e-5, 1e-4));
}

TEST(NnOps, LayerNormBf16InputWithF32OrBf16Params) {
  Tensor xb = ops::to_dtype(randn({3, 16}, 5), DType::kBF16);
  Tensor w = randn({16}, 6), b = randn({16}, 7);
  Tensor y = ops::layer_norm(xb, w, b, 1e-5).y;
  EXPECT_EQ(y.dtype(), DType::kBF16);
  // bf16 keeps 8 mantissa bits: relative error ~4e-3 on the output.
  EXPECT_TRUE(tensor_near(
      y, naive_norm(xb.to_vector(), 16, w.to_vector(), b.to_vector(), 1e-5, false), 2e-2, 1e-2));
  Tensor wb = ops::to_dtype(w, DType::kBF16), bb = ops::to_dtype(b, DType::kBF16);
  ops::LayerNormResult r = ops::layer_norm(xb, wb, bb, 1e-5);
  EXPECT_TRUE(
      tensor_near(r.y, naive_norm(xb.to_vector(), 16, wb.to_vector(), bb.to_vector(), 1e-5, false),
                  2e-2, 1e-2));
  // Gradients come back in each tensor's own dtype; gbias of an all-ones gy is the row count.
  ops::LayerNormGrads g =
      ops::layer_norm_backward(ops::ones({3, 16}, DType::kBF16), xb, wb, r.mean, r.rstd, true);
  EXPECT_EQ(g.gx.dtype(), DType::kBF16);
  EXPECT_EQ(g.gweight.dtype(), DType::kBF16);
  EXPECT_TRUE(tensor_near(g.gbias, std::vector<float>(16, 3.0f)));
}

TEST(NnOps, LayerNormBackwardColumnSumsOverManyRowBlocks) {
  // 300 rows span several row blocks of the deterministic gw/gb reduction.
  const int64_t rows = 300, C = 8;
  Tensor x = randn({rows, C}, 8), w = randn({C}, 9), gy = randn({rows, C}, 10);
  ops::LayerNormResult r = ops::layer_norm(x, w, Tensor(), 1e-5);
  ops::LayerNormGrads g = ops::layer_norm_backward(gy, x, w, r.mean, r.rstd, true);
  std::vector<float> xhat = naive_norm(x.to_vector(), C, {}, {}, 1e-5, false);
  std::vector<float> gv = gy.to_vector();
  std::vector<float> want_gw(C, 0.0f), want_gb(C, 0.0f);
  for (int64_t c = 0; c < C; ++c) {
    double sw = 0, sb = 0;
    for (int64_t i = 0; i < rows; ++i) {
      sw += static_cast<double>(gv[i * C + c]) * xhat[i * C + c];
      sb += gv[i * C + c];
    }
    want_gw[c] = static_cast<float>(sw);
    want_gb[c] = static_cast<float>(sb);
  }
  EXPECT_TRUE(tensor_near(g.gweight, want_gw, 1e-3, 1e-4));
  EXPECT_TRUE(tensor_near(g.gbias, want_gb, 1e-3, 1e-4));
  // y does not change when a constant is added to a row, so each row of gx sums to zero.
  ops::LayerNormGrads g1 = ops::layer_norm_backward(gy, x, Tensor(), r.mean, r.rstd, false);
  EXPECT_FALSE(g1.gweight.defined());
  EXPECT_FALSE(g1.gbias.defined());
  EXPECT_TRUE(tensor_near(ops::sum(g1.gx, {1}), std::vector<float>(rows, 0.0f), 1e-4));
}

TEST(NnOps, NormBackwardIsBitwiseIdenticalOnOneAndTwoThreads) {
  const int64_t rows = 4096, C = 24;  // above the parallel grain
  Tensor x = randn({rows, C}, 11), w = randn({C}, 12), gy = randn({rows, C}, 13);
  const int before = num_threads();
  auto run = [&](int threads) {
    set_num_threads(threads);
    ops::LayerNormResult r = ops::layer_norm(x, w, Tensor(), 1e-5);
    ops::LayerNormGrads g = ops::layer_norm_backward(gy, x, w, r.mean, r.rstd, true);
    ops::RmsNormResult rr = ops::rms_norm(x, w, 1e-6);
    ops::RmsNormGrads rg = ops::rms_norm_backward(gy, x, w, rr.rstd);
    return std::vector<Tensor>{r.y, g.gx, g.gweight, g.gbias, rr.y, rg.gx, rg.gweight};
  };
  std::vector<Tensor> one = run(1), two = run(2);
  set_num_threads(before);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(bitwise_equal(one[i], two[i])) << i;
}

TEST(NnOps, RmsNormMatchesNaiveDouble) {
  Tensor x = randn({5, 9}, 14), w = randn({9}, 15);
  ops::RmsNormResult r = ops::rms_norm(x, w, 1e-6);
  EXPECT_TRUE(
      tensor_near(r.y, naive_norm(x.to_vector(), 9, w.to_vector(), {}, 1e-6, true), 1e-5, 1e-4));
  std::vector<float> xv = x.to_vector();
  double ms = 0;
  for (int c = 0; c < 9; ++c) ms += xv[c] * xv[c] / 9.0;
  EXPECT_NEAR(r.rstd.to_vector()[0], 1.0 / std::sqrt(ms + 1e-6), 1e-4);
  Tensor xb = ops::to_dtype(x, DType::kBF16);
  Tensor yb = ops::rms_norm(xb, w, 1e-6).y;
  EXPECT_EQ(yb.dtype(), DType::kBF16);
  EXPECT_TRUE(
      tensor_near(yb, naive_norm(xb.to_vector(), 9, w.to_vector(), {}, 1e-6, true), 2e-2, 1e-2));
}

TEST(NnOps, NormsRejectBadParametersNamingShapes) {
  Tensor x = randn({2, 4}, 16);
  expect_error_naming([&] { ops::layer_norm(x, ops::ones({3}), Tensor(), 1e-5); },
                      {"layer_norm", "weight", "[3]", "[2, 4]"});
  expect_error_naming([&] { ops::layer_norm(x, Tensor(), ops::ones({4}, DType::kF16), 1e-5); },
                      {"layer_norm", "bias", "f16"});
  expect_error_naming([&] { ops::rms_norm(ops::arange(4), Tensor(), 1e-6); },
                      {"rms_norm", "i64[4]"});
}

TEST(NnOps, EmbeddingGathersRowsForI32AndI64Ids) {
  Tensor w = ops::reshape(ops::arange(12, DType::kF32), {4, 3});  // row v = 3v, 3v+1, 3v+2
  Tensor ids = ops::from_ints({2, 0, 3, 2}, {2, 2});
  Tensor out = ops::embedding(w, ids);
  EXPECT_EQ(out.sizes(), (Shape{2, 2, 3}));
  EXPECT_TRUE(tensor_near(out, {6, 7, 8, 0, 1, 2, 9, 10, 11, 6, 7, 8}));
  Tensor out32 = ops::embedding(ops::to_dtype(w, DType::kBF16), ops::to_dtype(ids, DType::kI32));
  EXPECT_EQ(out32.dtype(), DType::kBF16);
  EXPECT_TRUE(tensor_near(out32, {6, 7, 8, 0, 1, 2, 9, 10, 11, 6, 7, 8}));
}

TEST(NnOps, EmbeddingOutOfRangeIdNamesIdPositionAndRows) {
  Tensor w = ops::zeros({5, 2});
  expect_error_naming(
      [&] {
        ops::embedding(w, ops::from_ints({1, 4, 7, 0}, {4}));
      },
      {"embedding", "id 7", "position 2", "[0, 5)"});
  expect_error_naming([&] { ops::embedding(w, ops::from_ints({-1}, {1}, DType::kI32)); },
                      {"id -1", "position 0"});
  expect_error_naming([&] { ops::embedding(w, ops::from_vector({1}, {1})); }, {"i32 or i64"});
}

TEST(NnOps, EmbeddingBackwardAccumulatesRepeatedIds) {
  Tensor ids = ops::from_ints({1, 3, 1, 1, 0}, {5});
  Tensor gy = ops::from_vector({1, 2, 10, 20, 100, 200, 1000, 2000, 5, 6}, {5, 2});
  Tensor gw = ops::embedding_backward(gy, ids, 4);
  EXPECT_EQ(gw.sizes(), (Shape{4, 2}));
  // row 1 = gy[0] + gy[2] + gy[3]; row 2 never appears and is zero.
  EXPECT_TRUE(tensor_near(gw, {5, 6, 1101, 2202, 0, 0, 10, 20}));
  expect_error_naming([&] { ops::embedding_backward(gy, ids, 3); },
                      {"embedding_backward", "id 3", "position 1"});
}

// Adding the embedding's gradient into an existing one (a tied weight's pending gradient) has
// the bits of the dense gradient added to it, touches only the rows the ids name, and takes many
// rows and repeated ids (every thread's rows), in f32 and bf16.
TEST(NnOps, EmbeddingBackwardAddEqualsTheDenseGradientAdded) {
  const int64_t V = 3001, C = 300, n = 700;
  std::vector<int64_t> id(n);
  for (int64_t i = 0; i < n; ++i)
    id[i] = (i * 37 + (i % 5) * 11) % (V / 2);  // repeats; upper half unnamed
  const Tensor ids = ops::from_ints(id, {n});
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const Tensor gy = ops::to_dtype(randn({n, C}, 5), dt);
    const Tensor base = ops::to_dtype(randn({V, C}, 6), dt);
    const Tensor want = ops::add(base, ops::embedding_backward(gy, ids, V));
    Tensor got = ops::clone(base);
    ops::embedding_backward_add_(got, gy, ids);
    const Tensor w32 = ops::to_dtype(want, DType::kF32), g32 = ops::to_dtype(got, DType::kF32);
    const float* a = w32.data<float>();
    const float* b = g32.data<float>();
    for (int64_t i = 0; i < V * C; ++i) ASSERT_EQ(a[i], b[i]) << dtype_name(dt) << " element " << i;
    // An unnamed row is the base's, bit for bit (no +0 added: a -0 stays -0).
    EXPECT_EQ(ops::to_dtype(ops::narrow(got, 0, V - 1, 1), DType::kF32).to_vector(),
              ops::to_dtype(ops::narrow(base, 0, V - 1, 1), DType::kF32).to_vector());
  }
  Tensor f32 = ops::zeros({V, C});
  expect_error_naming(
      [&] {
        ops::embedding_backward_add_(f32, ops::to_dtype(randn({n, C}, 1), DType::kBF16), ids);
      },
      {"embedding_backward_add_", "does not match"});
  Tensor small = ops::zeros({10, C});
  expect_error_naming(
      [&] {
        ops::embedding_backward_add_(small, randn({n, C}, 1), ids);
      },
      {"embedding_backward", "num_rows 10"});
}

TEST(NnOps, CrossEntropyMatchesNaiveNllWithIgnoredRows) {
  const int64_t N = 6, V = 5;
  Tensor logits = ops::mul_scalar(randn({N, V}, 17), 3.0);
  std::vector<int64_t> t = {4, -100, 0, 2, -100, 1};
  ops::CrossEntropyResult r = ops::cross_entropy(logits, ops::from_ints(t, {N}), -100);
  EXPECT_EQ(r.loss.dim(), 0);
  EXPECT_EQ(r.loss.dtype(), DType::kF32);
  EXPECT_NEAR(r.loss.item(), naive_cross_entropy(logits.to_vector(), V, t, -100), 1e-5);
  // i32 targets and a non-default ignore_index inside [0, V).
  std::vector<int64_t> t2 = {4, 3, 0, 2, 3, 1};
  Tensor l2 = ops::cross_entropy(logits, ops::from_ints(t2, {N}, DType::kI32), 3).loss;
  EXPECT_NEAR(l2.item(), naive_cross_entropy(logits.to_vector(), V, t2, 3), 1e-5);
  // bf16 logits: the same math on the rounded values.
  Tensor lb = ops::to_dtype(logits, DType::kBF16);
  Tensor l3 = ops::cross_entropy(lb, ops::from_ints(t, {N}), -100).loss;
  EXPECT_NEAR(l3.item(), naive_cross_entropy(lb.to_vector(), V, t, -100), 1e-4);
}

TEST(NnOps, CrossEntropyIsStableForLargeLogitsAndLongRows) {
  // Logits of magnitude ~1000 overflow a naive exp; rows of 1000 classes use the vector path.
  const int64_t N = 3, V = 1000;
  Tensor logits = ops::add_scalar(ops::mul_scalar(randn({N, V}, 18), 20.0), 1000.0);
  std::vector<int64_t> t = {7, 999, 500};
  ops::CrossEntropyResult r = ops::cross_entropy(logits, ops::from_ints(t, {N}));
  EXPECT_NEAR(r.loss.item(), naive_cross_entropy(logits.to_vector(), V, t, -100), 1e-3);
  EXPECT_TRUE(std::isfinite(r.lse.to_vector()[0]));
}

TEST(NnOps, CrossEntropyOutOfRangeTargetNamesValueAndRow) {
  Tensor logits = ops::zeros({3, 4});
  expect_error_naming(
      [&] {
        ops::cross_entropy(logits, ops::from_ints({0, 9, 1}, {3}));
      },
      {"cross_entropy", "target 9", "row 1", "[0, 4)", "-100"});
  expect_error_naming(
      [&] {
        ops::cross_entropy(logits, ops::from_ints({0, 1, -3}, {3}));
      },
      {"target -3", "row 2"});
  expect_error_naming(
      [&] {
        ops::cross_entropy(logits, ops::from_ints({0, 1}, {2}));
      },
      {"cross_entropy", "f32[3, 4]", "i64[2]"});
}

TEST(NnOps, CrossEntropyAllIgnoredIsNanWithZeroGradient) {
  Tensor logits = randn({2, 3}, 19);
  Tensor t = ops::from_ints({-100, -100}, {2});
  ops::CrossEntropyResult r = ops::cross_entropy(logits, t);
  EXPECT_TRUE(std::isnan(r.loss.item()));
  Tensor g = ops::cross_entropy_backward(ops::scalar(1.0), logits, t, r.lse);
  EXPECT_TRUE(tensor_near(g, std::vector<float>(6, 0.0f)));
}

TEST(NnOps, DropoutMaskDependsOnlyOnSeed) {
  Tensor x = ops::ones({1000});
  Tensor a = ops::dropout(x, 0.5, 42), b = ops::dropout(x, 0.5, 42), c = ops::dropout(x, 0.5, 43);
  EXPECT_TRUE(bitwise_equal(a, b));
  EXPECT_FALSE(bitwise_equal(a, c));
  // The backward regenerates the same mask: exactly mask * gy / (1 - p).
  Tensor gy = randn({1000}, 20);
  std::vector<float> gx = ops::dropout_backward(gy, 0.5, 42).to_vector();
  std::vector<float> av = a.to_vector(), gv = gy.to_vector();
  for (size_t i = 0; i < gx.size(); ++i) EXPECT_EQ(gx[i], av[i] == 0.0f ? 0.0f : gv[i] * 2.0f);
}

// The mask is the documented function of (seed, i): element i is kept iff word i % 4 of
// philox4x32(seed, i / 4) maps to a float >= p, whatever batching the kernel draws the words in
// (an odd length covers the last, partial batch; bf16 the other instantiation).
TEST(NnOps, DropoutMaskIsPhiloxOfTheElementIndex) {
  for (const uint64_t seed : {uint64_t{42}, uint64_t{0x9E3779B97F4A7C15ull}}) {
    for (const DType dtype : {DType::kF32, DType::kBF16}) {
      const int64_t n = 1000 + 37;
      const double p = 0.3;
      const std::vector<float> y =
          ops::to_dtype(ops::dropout(ops::ones({n}, dtype), p, seed), DType::kF32).to_vector();
      int wrong = 0;
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t w = philox4x32(seed, static_cast<uint64_t>(i / 4))[i % 4];
        const bool keep = uint_to_unit_float(w) >= static_cast<float>(p);
        wrong += keep != (y[i] != 0.0f);
      }
      EXPECT_EQ(wrong, 0) << "seed " << seed << " " << dtype_name(dtype);
    }
  }
}

// The CPU's batched generator gives philox4x32's words for each counter, across a carry into
// the counter's high word.
TEST(NnOps, PhiloxBatchEqualsOneCounterAtATime) {
  for (const uint64_t first : {uint64_t{0}, uint64_t{1000}, (uint64_t{1} << 32) - 5,
                               uint64_t{(uint64_t{7} << 32) + 0xFFFFFFF9ull}}) {
    uint32_t words[4 * cpu::kPhiloxBatch];
    cpu::philox4x32_batch(0xDEADBEEF12345678ull, first, words);
    for (int l = 0; l < cpu::kPhiloxBatch; ++l) {
      const auto want = philox4x32(0xDEADBEEF12345678ull, first + static_cast<uint64_t>(l));
      for (int j = 0; j < 4; ++j) {
        EXPECT_EQ(words[4 * l + j], want[j]) << "counter " << first + l << " word " << j;
      }
    }
  }
}

TEST(NnOps, DropoutKeepsAboutOneMinusPScaledByInverse) {
  const int64_t n = 100000;
  const double p = 0.3;
  std::vector<float> y = ops::dropout(ops::ones({n}, DType::kF32), p, 7).to_vector();
  int64_t kept = 0;
  for (float v : y) {
    if (v != 0.0f) {
      ++kept;
      EXPECT_FLOAT_EQ(v, static_cast<float>(1.0 / (1.0 - p)));
    }
  }
  // Binomial std = sqrt(n p (1 - p)) ~ 145 elements; allow 5 sigma.
  EXPECT_NEAR(static_cast<double>(kept) / n, 1.0 - p, 0.0073);
}

TEST(NnOps, DropoutZeroPIsIdentityAndBadPIsAnError) {
  Tensor x = randn({3, 4}, 21);
  EXPECT_TRUE(bitwise_equal(ops::dropout(x, 0.0, 5), x));
  expect_error_naming([&] { ops::dropout(x, 1.0, 5); }, {"dropout", "[0, 1)"});
  expect_error_naming([&] { ops::dropout(x, -0.1, 5); }, {"dropout", "-0.1"});
}

TEST(NnOps, CatAlongDim0AndDim1) {
  Tensor a = ops::reshape(ops::arange(6, DType::kF32), {2, 3});
  Tensor b = ops::from_vector({10, 11, 12}, {1, 3});
  Tensor c0 = ops::cat({a, b}, 0);
  EXPECT_EQ(c0.sizes(), (Shape{3, 3}));
  EXPECT_TRUE(tensor_near(c0, {0, 1, 2, 3, 4, 5, 10, 11, 12}));
  Tensor d = ops::from_vector({20, 21}, {2, 1});
  Tensor c1 =
      ops::cat({a, d, ops::transpose(ops::reshape(ops::arange(4, DType::kF32), {2, 2}), 0, 1)}, -1);
  EXPECT_EQ(c1.sizes(), (Shape{2, 6}));
  EXPECT_TRUE(tensor_near(c1, {0, 1, 2, 20, 0, 2, 3, 4, 5, 21, 1, 3}));
  // A zero-length part is allowed.
  EXPECT_TRUE(tensors_near(ops::cat({a, ops::zeros({0, 3})}, 0), a));
}

TEST(NnOps, CatMismatchNamesTheShapes) {
  Tensor a = ops::zeros({2, 3}), b = ops::zeros({2, 4});
  expect_error_naming([&] { ops::cat({a, b}, 0); }, {"cat", "f32[2, 3]", "f32[2, 4]"});
  expect_error_naming(
      [&] {
        ops::cat({a, ops::zeros({2, 3}, DType::kBF16)}, 0);
      },
      {"cat", "bf16[2, 3]"});
  expect_error_naming([&] { ops::cat({a, ops::zeros({6})}, 0); }, {"cat", "f32[6]"});
  EXPECT_THROW(ops::cat({}, 0), Error);
}

}  // namespace
}  // namespace hfrun

namespace hfrun {
namespace {

// The rotate-half embedding in the CPU's one pass is the composed ops' result bit for bit, both
// directions, in f32, bf16 and f16, for a strided x (attention's heads as a transposed view of
// the projection) and a contiguous one.
TEST(NnOps, RotaryInOnePassEqualsTheComposedOps) {
  const int64_t B = 2, T = 5, H = 3, D = 8;
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor proj = ops::to_dtype(testing::randn({B, T, H * D}, 41), dtype);
    const Tensor strided = ops::transpose(ops::view(proj, {B, T, H, D}), 1, 2);  // [B, H, T, D]
    const Tensor cos = ops::to_dtype(testing::randn({T, D}, 42), dtype);
    const Tensor sin = ops::to_dtype(testing::randn({T, D}, 43), dtype);
    auto rotate_half = [](const Tensor& x) {
      Tensor a = ops::narrow(x, 3, 0, D / 2), b = ops::narrow(x, 3, D / 2, D / 2);
      return ops::cat({ops::neg(b), a}, 3);
    };
    for (const Tensor& x : {strided, ops::contiguous(strided)}) {
      const Tensor fwd = ops::add(ops::mul(x, cos), ops::mul(rotate_half(x), sin));
      const Tensor bwd = ops::sub(ops::mul(x, cos), rotate_half(ops::mul(x, sin)));
      const Tensor got_fwd = ops::rotary(x, cos, sin, false);
      const Tensor got_bwd = ops::rotary(x, cos, sin, true);
      EXPECT_EQ(got_fwd.dtype(), dtype);
      EXPECT_EQ(got_fwd.sizes(), x.sizes());
      EXPECT_EQ(ops::to_dtype(got_fwd, DType::kF32).to_vector(),
                ops::to_dtype(fwd, DType::kF32).to_vector());
      EXPECT_EQ(ops::to_dtype(got_bwd, DType::kF32).to_vector(),
                ops::to_dtype(bwd, DType::kF32).to_vector());
    }
  }
}

}  // namespace
}  // namespace hfrun

namespace hfrun {
namespace {

// SwiGLU in one pass (Backend::swiglu) is silu then mul bit for bit, forward and backward, in
// f32, bf16 and f16, over several parallel chunks and a tail, with large and tiny gates (exp's
// saturation, silu's -0); a strided operand takes the composed path with the same result.
TEST(NnOps, SwigluInOnePassEqualsTheComposedOps) {
  const int64_t rows = 3, cols = 4099;
  Tensor gate32 = ops::mul_scalar(testing::randn({rows, cols}, 51), 4.0);
  const std::vector<float> specials = {0.0f, -0.0f, 30.0f, -30.0f, 100.0f, -100.0f, 1e-30f};
  {
    std::vector<float> v = gate32.to_vector();
    for (size_t i = 0; i < specials.size(); ++i) v[i * 997] = specials[i];
    gate32 = ops::from_vector(v, {rows, cols});
  }
  const Tensor up32 = testing::randn({rows, cols}, 52);
  const Tensor g32 = testing::randn({rows, cols}, 53);
  auto bits = [](const Tensor& t) { return ops::to_dtype(t, DType::kF32).to_vector(); };
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor gate = ops::to_dtype(gate32, dtype), up = ops::to_dtype(up32, dtype);
    const Tensor g = ops::to_dtype(g32, dtype);
    // The composed ops, as autograd's silu and mul nodes run them.
    const Tensor s = ops::silu(gate);
    const Tensor want = ops::mul(s, up);
    const Tensor want_g_up = ops::mul(g, s);
    const Tensor want_g_gate = ops::unary_backward(ops::UnaryOp::kSilu, ops::mul(g, up), gate, s);

    const Tensor got = ops::swiglu(gate, up);
    EXPECT_EQ(got.dtype(), dtype);
    EXPECT_EQ(got.sizes(), gate.sizes());
    EXPECT_EQ(bits(got), bits(want));
    const auto [g_gate, g_up] = ops::swiglu_backward(g, gate, up);
    EXPECT_EQ(bits(g_up), bits(want_g_up));
    EXPECT_EQ(bits(g_gate), bits(want_g_gate));

    // Strided views: the backend declines, the composed path gives the same bits.
    const Tensor gate_t = ops::transpose(ops::contiguous(ops::transpose(gate, 0, 1)), 0, 1);
    ASSERT_FALSE(gate_t.is_contiguous());
    EXPECT_EQ(bits(ops::swiglu(gate_t, up)), bits(want));
    const auto [g_gate_t, g_up_t] = ops::swiglu_backward(g, gate_t, up);
    EXPECT_EQ(bits(g_gate_t), bits(want_g_gate));
    EXPECT_EQ(bits(g_up_t), bits(want_g_up));
  }
  expect_error_naming(
      [&] {
        ops::swiglu(ops::zeros({2, 3}), ops::zeros({3, 2}));
      },
      {"swiglu", "f32[2, 3]", "f32[3, 2]"});
}

}  // namespace
}  // namespace hfrun
