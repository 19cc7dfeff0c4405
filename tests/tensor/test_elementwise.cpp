// Elementwise ops and reductions against closed forms.
#include <omp.h>

#include <cmath>
#include <limits>

#include "test_util.h"

namespace hfrun {
namespace {

using testing::tensor_near;

TEST(Elementwise, BinaryBroadcastsRowsColumnsAndScalars) {
  Tensor a = ops::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor row = ops::from_vector({10, 20, 30}, {3});
  Tensor col = ops::from_vector({100, 200}, {2, 1});
  EXPECT_TRUE(tensor_near(ops::add(a, row), {11, 22, 33, 14, 25, 36}));
  EXPECT_TRUE(tensor_near(ops::add(a, col), {101, 102, 103, 204, 205, 206}));
  EXPECT_TRUE(tensor_near(ops::sub(row, a), {9, 18, 27, 6, 15, 24}));
  EXPECT_TRUE(tensor_near(ops::mul(col, row), {1000, 2000, 3000, 2000, 4000, 6000}));
  EXPECT_TRUE(tensor_near(ops::div(a, ops::scalar(2.0)), {0.5, 1, 1.5, 2, 2.5, 3}));
  EXPECT_TRUE(tensor_near(ops::maximum(a, ops::scalar(3.5)), {3.5, 3.5, 3.5, 4, 5, 6}));
  EXPECT_TRUE(tensor_near(ops::add_scalar(a, -1), {0, 1, 2, 3, 4, 5}));
  EXPECT_TRUE(tensor_near(ops::mul_scalar(a, 3), {3, 6, 9, 12, 15, 18}));
  EXPECT_TRUE(tensor_near(ops::pow_scalar(a, 2), {1, 4, 9, 16, 25, 36}));
  // Both operands broadcast: [2,1] x [1,3] -> [2,3].
  EXPECT_EQ(ops::add(col, ops::unsqueeze(row, 0)).sizes(), (Shape{2, 3}));
}

TEST(Elementwise, NonContiguousOperandsAndMixedDtypes) {
  Tensor a = ops::reshape(ops::arange(6, DType::kF32), {2, 3});
  Tensor at = ops::transpose(a, 0, 1);  // [3, 2]: 0 3 / 1 4 / 2 5
  Tensor b = ops::reshape(ops::arange(6, DType::kF32), {3, 2});
  EXPECT_TRUE(tensor_near(ops::add(at, b), {0, 4, 3, 7, 6, 10}));
  Tensor bf = ops::to_dtype(b, DType::kBF16);
  Tensor mixed = ops::add(at, bf);
  EXPECT_EQ(mixed.dtype(), DType::kF32);
  EXPECT_TRUE(tensor_near(mixed, {0, 4, 3, 7, 6, 10}));
  Tensor bb = ops::add(bf, bf);
  EXPECT_EQ(bb.dtype(), DType::kBF16);
  EXPECT_TRUE(tensor_near(bb, {0, 2, 4, 6, 8, 10}));
  Tensor ints = ops::add(ops::arange(3), ops::arange(3));
  EXPECT_EQ(ints.dtype(), DType::kI64);
  EXPECT_EQ(ints.to_int_vector(), (std::vector<int64_t>{0, 2, 4}));
}

TEST(Elementwise, ShapeMismatchNamesOpAndShapes) {
  try {
    ops::add(ops::zeros({2, 3}), ops::zeros({4}));
    FAIL();
  } catch (const Error& e) {
    std::string m = e.message();
    EXPECT_NE(m.find("add"), std::string::npos) << m;
    EXPECT_NE(m.find("[2, 3]"), std::string::npos) << m;
    EXPECT_NE(m.find("[4]"), std::string::npos) << m;
  }
  EXPECT_THROW(ops::exp(ops::arange(3)), Error);  // integer input to a float op
}

TEST(Elementwise, UnaryClosedForms) {
  std::vector<float> xs = {-2.0f, -0.5f, 0.0f, 0.7f, 3.0f};
  Tensor x = ops::from_vector(xs, {5});
  auto expect = [&](ops::UnaryOp op, auto f) {
    std::vector<float> want;
    for (float v : xs) want.push_back(static_cast<float>(f(static_cast<double>(v))));
    EXPECT_TRUE(tensor_near(ops::unary(op, x), want, 1e-6, 1e-5)) << ops::unary_op_name(op);
  };
  expect(ops::UnaryOp::kNeg, [](double v) { return -v; });
  expect(ops::UnaryOp::kExp, [](double v) { return std::exp(v); });
  expect(ops::UnaryOp::kTanh, [](double v) { return std::tanh(v); });
  expect(ops::UnaryOp::kRelu, [](double v) { return v > 0 ? v : 0; });
  expect(ops::UnaryOp::kSigmoid, [](double v) { return 1 / (1 + std::exp(-v)); });
  expect(ops::UnaryOp::kSilu, [](double v) { return v / (1 + std::exp(-v)); });
  expect(ops::UnaryOp::kGelu,
         [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); });
  expect(ops::UnaryOp::kGeluTanh, [](double v) {
    return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
  });
  expect(ops::UnaryOp::kAbs, [](double v) { return std::fabs(v); });
  expect(ops::UnaryOp::kSquare, [](double v) { return v * v; });
  Tensor pos = ops::from_vector({0.25f, 1.0f, 4.0f}, {3});
  EXPECT_TRUE(tensor_near(ops::log(pos), {std::log(0.25f), 0.0f, std::log(4.0f)}));
  EXPECT_TRUE(tensor_near(ops::sqrt(pos), {0.5f, 1.0f, 2.0f}));
  EXPECT_TRUE(tensor_near(ops::unary(ops::UnaryOp::kRsqrt, pos), {2.0f, 1.0f, 0.5f}));
  // GPT-2's gelu_new at a reference point (value from the closed form, computed in double).
  EXPECT_NEAR(ops::gelu(ops::scalar(1.0), true).item(), 0.8411919906082768, 1e-6);
  EXPECT_NEAR(ops::gelu(ops::scalar(1.0), false).item(), 0.8413447460685429, 1e-6);
}

TEST(Elementwise, VectorisedTanhSigmoidGeluAreAccurateOverAWideRange) {
  // The kernels use branch-free polynomial exp/tanh; check them against libm in double.
  std::vector<float> xs;
  for (int i = -4000; i <= 4000; ++i) xs.push_back(i * 0.005f);
  for (float v : {1e-6f, -3e-5f, 0.6249f, 0.6251f, 30.0f, -30.0f, 100.0f, -100.0f}) xs.push_back(v);
  Tensor x = ops::from_vector(xs, {static_cast<int64_t>(xs.size())});
  auto th = ops::tanh(x).to_vector(), sg = ops::sigmoid(x).to_vector();
  auto gl = ops::gelu(x, true).to_vector();
  for (size_t i = 0; i < xs.size(); ++i) {
    double v = xs[i];
    ASSERT_NEAR(th[i], std::tanh(v), 1e-7 + 1e-6 * std::fabs(std::tanh(v))) << v;
    ASSERT_NEAR(sg[i], 1 / (1 + std::exp(-v)), 1e-7 + 1e-6 / (1 + std::exp(-v))) << v;
    double g = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    ASSERT_NEAR(gl[i], g, 2e-7 + 2e-6 * std::fabs(g)) << v;
  }
}

// The tanh GELU as x sigmoid(2u): relative accuracy in its negative tail too (1 + tanh(u)
// cancels there), and its gradient against the closed form.
TEST(Elementwise, GeluTanhTailAndGradientAreAccurate) {
  std::vector<float> xs;
  for (int i = -1000; i <= 1000; ++i) xs.push_back(i * 0.01f);
  Tensor x = ops::from_vector(xs, {static_cast<int64_t>(xs.size())});
  const auto y = ops::gelu(x, true).to_vector();
  const auto d =
      ops::unary_backward(ops::UnaryOp::kGeluTanh, ops::full(x.sizes(), 1.0), x, Tensor())
          .to_vector();
  for (size_t i = 0; i < xs.size(); ++i) {
    const double v = xs[i], k = std::sqrt(2 / M_PI);
    const double u = k * (v + 0.044715 * v * v * v), s = 1 / (1 + std::exp(-2 * u));
    const double g = v * s;  // = 0.5 v (1 + tanh(u)), without the cancellation
    ASSERT_NEAR(y[i], g, 1e-12 + 4e-6 * std::fabs(g)) << v;
    const double dg = s + 2 * v * s * (1 - s) * k * (1 + 3 * 0.044715 * v * v);
    ASSERT_NEAR(d[i], dg, 3e-7 + 4e-6 * std::fabs(dg)) << v;
  }
}

TEST(Elementwise, UnaryOnBF16KeepsDtype) {
  Tensor x = ops::to_dtype(ops::from_vector({-1.0f, 0.5f, 2.0f}, {3}), DType::kBF16);
  Tensor y = ops::exp(x);
  EXPECT_EQ(y.dtype(), DType::kBF16);
  EXPECT_TRUE(tensor_near(y, {std::exp(-1.0f), std::exp(0.5f), std::exp(2.0f)}, 0, 1e-2));
}

TEST(Elementwise, LargeTensorsUseThreadsAndMatchSerial) {
  Generator g(3);
  Tensor a = ops::randn({300, 257}, g), b = ops::randn({257}, g);
  Tensor y = ops::mul(ops::tanh(a), b);
  auto av = a.to_vector(), bv = b.to_vector(), yv = y.to_vector();
  for (size_t i = 0; i < yv.size(); i += 97) {
    ASSERT_NEAR(yv[i], std::tanh(av[i]) * bv[i % 257], 1e-6);
  }
}

// A contiguous tensor is one long row for the strided iterator; with several threads it is
// cut into pieces (cpu/loops.h). Every piece must land on its own elements: casts with NaN,
// infinities and subnormals, a strided source and a broadcast operand, against the values
// computed element by element and against one thread.
TEST(Elementwise, LongRowsCutIntoPiecesMatchElementByElement) {
  const int threads = omp_get_max_threads();
  omp_set_num_threads(2);
  constexpr int64_t n = 200003;  // not a multiple of a piece
  Generator g(5);
  Tensor x = ops::randn({n}, g);
  {
    float* p = x.data<float>();
    p[0] = std::nanf("");
    p[65535] = std::numeric_limits<float>::infinity();
    p[65536] = -std::numeric_limits<float>::infinity();
    p[n - 1] = 1e-40f;  // subnormal
  }
  const std::vector<float> xv = x.to_vector();
  Tensor bf = ops::to_dtype(x, DType::kBF16);
  const auto* bits = static_cast<const uint16_t*>(bf.raw_data());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(bits[i], f32_to_bf16(xv[i])) << i;
  // [2, n] destination from a source with inner stride 2: two rows, neither contiguous.
  Tensor pairs = ops::randn({n, 2}, g);
  Tensor cols = ops::contiguous(ops::transpose(pairs, 0, 1));
  const std::vector<float> pv = pairs.to_vector(), cv = cols.to_vector();
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(cv[r * n + i], pv[i * 2 + r]) << r << " " << i;
  }
  Tensor sum = ops::add(ops::reshape(x, {1, n}), ops::scalar(0.25));
  const std::vector<float> sv = sum.to_vector();
  for (int64_t i = 1; i < n; ++i) ASSERT_EQ(sv[i], xv[i] + 0.25f) << i;
  omp_set_num_threads(1);
  const std::vector<float> one = ops::contiguous(ops::transpose(pairs, 0, 1)).to_vector();
  omp_set_num_threads(threads);
  EXPECT_EQ(one, cv);
}

TEST(Elementwise, WhereMaskedFillAndComparisons) {
  Tensor a = ops::from_vector({1, 5, 3}, {3});
  Tensor b = ops::from_vector({4, 2, 3}, {3});
  Tensor gt = ops::gt(a, b);
  EXPECT_EQ(gt.dtype(), DType::kBool);
  EXPECT_EQ(gt.to_int_vector(), (std::vector<int64_t>{0, 1, 0}));
  EXPECT_EQ(ops::eq(a, b).to_int_vector(), (std::vector<int64_t>{0, 0, 1}));
  EXPECT_EQ(ops::lt(a, b).to_int_vector(), (std::vector<int64_t>{1, 0, 0}));
  EXPECT_TRUE(tensor_near(ops::where(gt, a, b), {4, 5, 3}));
  // Causal mask: upper triangle filled.
  Tensor i = ops::reshape(ops::arange(3), {3, 1}), j = ops::reshape(ops::arange(3), {1, 3});
  Tensor future = ops::gt(j, i);
  Tensor filled = ops::masked_fill(ops::ones({3, 3}), future, -1e9);
  EXPECT_TRUE(tensor_near(filled, {1, -1e9, -1e9, 1, 1, -1e9, 1, 1, 1}));
  EXPECT_THROW(ops::where(a, a, b), Error);  // condition must be bool
  EXPECT_THROW(ops::masked_fill(ops::ones({3}), ops::gt(ops::ones({2, 3}), ops::zeros({3})), 0),
               Error);
}

TEST(Reduce, SumMeanOverDimsAndAll) {
  Tensor x = ops::reshape(ops::arange(24, DType::kF32), {2, 3, 4});
  EXPECT_FLOAT_EQ(ops::sum(x).item(), 276.0f);
  EXPECT_FLOAT_EQ(ops::mean(x).item(), 11.5f);
  Tensor s1 = ops::sum(x, {1});
  EXPECT_EQ(s1.sizes(), (Shape{2, 4}));
  EXPECT_TRUE(tensor_near(s1, {12, 15, 18, 21, 48, 51, 54, 57}));
  Tensor s02 = ops::sum(x, {0, -1}, true);
  EXPECT_EQ(s02.sizes(), (Shape{1, 3, 1}));
  EXPECT_TRUE(tensor_near(s02, {6 + 54, 22 + 70, 38 + 86}));
  EXPECT_TRUE(tensor_near(ops::mean(x, {2}), {1.5, 5.5, 9.5, 13.5, 17.5, 21.5}));
  // Reduction of a transposed view.
  Tensor t = ops::transpose(ops::reshape(ops::arange(6, DType::kF32), {2, 3}), 0, 1);
  EXPECT_TRUE(tensor_near(ops::sum(t, {1}), {3, 5, 7}));
  EXPECT_THROW(ops::sum(x, {3}), Error);
  EXPECT_THROW(ops::sum(x, {1, 1}), Error);
}

TEST(Reduce, ColumnSumsOverManyRowsAreAccurate) {
  // A bias-gradient-shaped reduction: [4096, 300] -> [300].
  Tensor x = ops::full({4096, 300}, 0.1);
  Tensor s = ops::sum(x, {0});
  for (float v : s.to_vector()) ASSERT_NEAR(v, 409.6f, 1e-2f);
}

TEST(Reduce, MaxValuesAndIndices) {
  Tensor x = ops::from_vector({1, 9, 3, 7, 2, 8}, {2, 3});
  ops::MaxResult r = ops::max(x, 1);
  EXPECT_TRUE(tensor_near(r.values, {9, 8}));
  EXPECT_EQ(r.indices.to_int_vector(), (std::vector<int64_t>{1, 2}));
  ops::MaxResult c = ops::max(x, 0, true);
  EXPECT_EQ(c.values.sizes(), (Shape{1, 3}));
  EXPECT_TRUE(tensor_near(c.values, {7, 9, 8}));
  EXPECT_EQ(c.indices.to_int_vector(), (std::vector<int64_t>{1, 0, 1}));
  EXPECT_FLOAT_EQ(ops::max_all(x).item(), 9.0f);
  Tensor with_nan = ops::from_vector({1, NAN, 3}, {3});
  EXPECT_TRUE(std::isnan(ops::max(with_nan, 0).values.item()));
}

TEST(Reduce, SumToInvertsBroadcast) {
  Tensor g = ops::ones({4, 2, 3});
  EXPECT_TRUE(tensor_near(ops::sum_to(g, {3}), {8, 8, 8}));
  EXPECT_TRUE(tensor_near(ops::sum_to(g, {2, 1}), {12, 12}));
  EXPECT_EQ(ops::sum_to(g, {4, 2, 3}).sizes(), (Shape{4, 2, 3}));
}

}  // namespace
}  // namespace hfrun
