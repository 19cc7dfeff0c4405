// ops::matmul against a naive double-precision loop: plain, batched, broadcast, transposed and
// strided operands, bias, bf16, the primitive cache, and the error messages.
#include <cmath>
#include <string>
#include <thread>

#include "tensor/backend/cpu/onednn.h"
#include "tensor/profiler.h"
#include "test_util.h"

namespace hfrun {
namespace {

using testing::expect_error_naming;
using testing::randn;
using testing::tensor_near;

// a [..., M, K] @ b [..., K, N] (+ bias [N]) in double, with NumPy batch broadcasting: both
// operands are expanded to the output's batch dims and read through to_vector().
std::vector<float> naive_matmul(const Tensor& a, const Tensor& b, const Tensor& bias = Tensor()) {
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  Shape batch = broadcast_shapes(Shape(a.sizes().begin(), a.sizes().end() - 2),
                                 Shape(b.sizes().begin(), b.sizes().end() - 2), "naive");
  Shape as = batch, bs = batch;
  as.insert(as.end(), {m, k});
  bs.insert(bs.end(), {k, n});
  std::vector<float> av = ops::expand(a, as).to_vector(), bv = ops::expand(b, bs).to_vector();
  std::vector<float> biasv = bias.defined() ? bias.to_vector() : std::vector<float>(n, 0.0f);
  const int64_t nb = shape_numel(batch);
  std::vector<float> out(nb * m * n);
  for (int64_t p = 0; p < nb; ++p) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = biasv[j];
        for (int64_t l = 0; l < k; ++l) {
          acc += static_cast<double>(av[(p * m + i) * k + l]) * bv[(p * k + l) * n + j];
        }
        out[(p * m + i) * n + j] = static_cast<float>(acc);
      }
    }
  }
  return out;
}

TEST(Matmul, TwoD) {
  Tensor a = randn({5, 7}, 1), b = randn({7, 3}, 2);
  Tensor y = ops::matmul(a, b);
  EXPECT_EQ(y.sizes(), (Shape{5, 3}));
  EXPECT_EQ(y.dtype(), DType::kF32);
  EXPECT_TRUE(tensor_near(y, naive_matmul(a, b), 1e-4, 1e-4));
}

TEST(Matmul, Batched) {
  Tensor a = randn({3, 4, 5}, 3), b = randn({3, 5, 6}, 4);
  Tensor y = ops::matmul(a, b);
  EXPECT_EQ(y.sizes(), (Shape{3, 4, 6}));
  EXPECT_TRUE(tensor_near(y, naive_matmul(a, b), 1e-4, 1e-4));
  Tensor a4 = randn({2, 3, 4, 5}, 5), b4 = randn({2, 3, 5, 2}, 6);
  EXPECT_TRUE(tensor_near(ops::matmul(a4, b4), naive_matmul(a4, b4), 1e-4, 1e-4));
}

TEST(Matmul, SharedRank2WeightFoldsIntoOneGemm) {
  // [2, 3, 4, 5] x [5, 6]: every batch shares b, so the backend runs one [24, 5] x [5, 6] GEMM.
  Tensor a = randn({2, 3, 4, 5}, 7), b = randn({5, 6}, 8);
  Tensor y = ops::matmul(a, b);
  EXPECT_EQ(y.sizes(), (Shape{2, 3, 4, 6}));
  EXPECT_TRUE(tensor_near(y, naive_matmul(a, b), 1e-4, 1e-4));
}

TEST(Matmul, BroadcastBatchDims) {
  Tensor a = randn({2, 1, 4, 5}, 9), b = randn({3, 5, 6}, 10);  // -> [2, 3, 4, 6]
  Tensor y = ops::matmul(a, b);
  EXPECT_EQ(y.sizes(), (Shape{2, 3, 4, 6}));
  EXPECT_TRUE(tensor_near(y, naive_matmul(a, b), 1e-4, 1e-4));
  // A rank-2 a shared by every batch of b.
  Tensor a2 = randn({4, 5}, 11), b3 = randn({3, 5, 2}, 12);
  EXPECT_TRUE(tensor_near(ops::matmul(a2, b3), naive_matmul(a2, b3), 1e-4, 1e-4));
  // Explicitly expanded (stride-0) operands.
  Tensor be = ops::expand(randn({1, 5, 6}, 13), {2, 5, 6});
  Tensor a3 = randn({2, 4, 5}, 14);
  EXPECT_TRUE(tensor_near(ops::matmul(a3, be), naive_matmul(a3, be), 1e-4, 1e-4));
}

// out += a @ b (a weight gradient added into its buffer by the GEMM): equal to the product
// added, for plain and transposed operands and a K large enough to be blocked; bad arguments
// are named.
TEST(Matmul, AddAccumulatesTheProductIntoItsDestination) {
  for (bool transposed : {false, true}) {
    const int64_t m = 96, k = 700, n = 80;
    Tensor a = transposed ? ops::transpose(randn({k, m}, 1), 0, 1) : randn({m, k}, 1);
    Tensor b = transposed ? ops::transpose(randn({n, k}, 2), 0, 1) : randn({k, n}, 2);
    const Tensor base = randn({m, n}, 3);
    Tensor out = ops::clone(base);
    ops::matmul_add_(out, a, b);
    const Tensor want = ops::add(base, ops::matmul(a, b));
    const std::vector<float> got = out.to_vector(), expect = want.to_vector();
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], expect[i], 1e-4f * (1.0f + std::fabs(expect[i])))
          << "element " << i << (transposed ? ", transposed operands" : "");
    }
  }
  // bf16 operands (mixed precision's weight gradients): the product of their values,
  // accumulated in f32. Operands of two dtypes are refused (never one read as the other).
  {
    const int64_t m = 24, k = 300, n = 40;
    const Tensor a = ops::to_dtype(ops::transpose(randn({k, m}, 4), 0, 1), DType::kBF16);
    const Tensor b = ops::to_dtype(randn({k, n}, 5), DType::kBF16);
    const Tensor base = randn({m, n}, 6);
    Tensor out = ops::clone(base);
    ops::matmul_add_(out, a, b);
    const std::vector<float> got = out.to_vector(), product = naive_matmul(a, b),
                             start = base.to_vector();
    for (size_t i = 0; i < got.size(); ++i) {
      const float expect = start[i] + product[i];
      ASSERT_NEAR(got[i], expect, 1e-4f * (1.0f + std::fabs(expect)))
          << "element " << i << ", bf16 operands";
    }
  }
  Tensor out = ops::zeros({4, 5});
  expect_error_naming(
      [&] {
        ops::matmul_add_(out, randn({4, 3}, 1), randn({2, 5}, 2));
      },
      {"matmul_add_", "shapes do not match"});
  Tensor bf = ops::zeros({4, 5}, DType::kBF16);
  expect_error_naming(
      [&] {
        ops::matmul_add_(bf, randn({4, 3}, 1), randn({3, 5}, 2));
      },
      {"matmul_add_", "f32 destination"});
  expect_error_naming(
      [&] {
        ops::matmul_add_(out, ops::to_dtype(randn({4, 3}, 1), DType::kBF16), randn({3, 5}, 2));
      },
      {"matmul_add_", "of one dtype"});
}

TEST(Matmul, TransposedViews) {
  Tensor at = randn({7, 5}, 15), bt = randn({3, 7}, 16);
  Tensor a = ops::transpose(at, 0, 1), b = ops::transpose(bt, 0, 1);  // [5, 7], [7, 3]
  ASSERT_FALSE(a.is_contiguous());
  EXPECT_TRUE(tensor_near(ops::matmul(a, randn({7, 3}, 17)), naive_matmul(a, randn({7, 3}, 17)),
                          1e-4, 1e-4));
  EXPECT_TRUE(tensor_near(ops::matmul(randn({5, 7}, 18), b), naive_matmul(randn({5, 7}, 18), b),
                          1e-4, 1e-4));
  EXPECT_TRUE(tensor_near(ops::matmul(a, b), naive_matmul(a, b), 1e-4, 1e-4));
  // Batched transposes: a^T @ b^T over a batch.
  Tensor ab = ops::transpose(randn({2, 7, 5}, 19), 1, 2),
         bb = ops::transpose(randn({2, 3, 7}, 20), 1, 2);
  EXPECT_TRUE(tensor_near(ops::matmul(ab, bb), naive_matmul(ab, bb), 1e-4, 1e-4));
}

TEST(Matmul, AttentionStyleStridedViews) {
  // q, k as split out of a [B, T, 3C] projection and transposed to [B, H, T, D]: batch strides
  // that are not dense and row stride 3C.
  const int64_t B = 2, T = 5, H = 3, D = 4, C = H * D;
  Tensor qkv = randn({B, T, 3 * C}, 21);
  auto head = [&](int64_t i) {
    return ops::transpose(ops::view(ops::narrow(qkv, 2, i * C, C), {B, T, H, D}), 1, 2);
  };
  Tensor q = head(0), k = head(1);
  Tensor kt = ops::transpose(k, 2, 3);
  Tensor y = ops::matmul(q, kt);
  EXPECT_EQ(y.sizes(), (Shape{B, H, T, T}));
  EXPECT_TRUE(tensor_near(y, naive_matmul(q, kt), 1e-4, 1e-4));
}

TEST(Matmul, NonUnitStrideOperandsAreCopied) {
  // Every other column of a [4, 10]: neither of the last two strides is 1.
  Tensor wide = randn({4, 5, 2}, 22);
  Tensor a = ops::select(wide, 2, 1);  // [4, 5], strides [10, 2]
  ASSERT_NE(a.stride(1), 1);
  Tensor b = ops::select(randn({5, 3, 2}, 23), 2, 0);  // [5, 3], strides [6, 2]
  EXPECT_TRUE(tensor_near(ops::matmul(a, b), naive_matmul(a, b), 1e-4, 1e-4));
}

TEST(Matmul, Bias) {
  Tensor a = randn({2, 4, 5}, 24), b = randn({5, 3}, 25), bias = randn({3}, 26);
  Tensor y = ops::matmul(a, b, bias);
  EXPECT_TRUE(tensor_near(y, naive_matmul(a, b, bias), 1e-4, 1e-4));
  Tensor a2 = randn({6, 5}, 27);
  EXPECT_TRUE(tensor_near(ops::matmul(a2, b, bias), naive_matmul(a2, b, bias), 1e-4, 1e-4));
  // Batched b with bias.
  Tensor b3 = randn({2, 5, 3}, 28);
  EXPECT_TRUE(tensor_near(ops::matmul(a, b3, bias), naive_matmul(a, b3, bias), 1e-4, 1e-4));
}

TEST(Matmul, Bf16InputsAccumulateInF32) {
  Tensor a32 = randn({6, 40}, 29), b32 = randn({40, 5}, 30);
  Tensor a = ops::to_dtype(a32, DType::kBF16), b = ops::to_dtype(b32, DType::kBF16);
  // The reference reads the bf16-rounded inputs, so only accumulation error remains.
  std::vector<float> want = naive_matmul(a, b);
  Tensor y32 = ops::matmul(a, b, Tensor(), DType::kF32);
  EXPECT_EQ(y32.dtype(), DType::kF32);
  EXPECT_TRUE(tensor_near(y32, want, 1e-3, 1e-3));
  Tensor y16 = ops::matmul(a, b);  // default: a's dtype
  EXPECT_EQ(y16.dtype(), DType::kBF16);
  EXPECT_TRUE(tensor_near(y16, want, 5e-2, 1e-2));
  Tensor bias = randn({5}, 31);
  Tensor yb = ops::matmul(a, b, bias, DType::kF32);
  EXPECT_TRUE(tensor_near(yb, naive_matmul(a, b, bias), 1e-3, 1e-3));
  Tensor bias16 = ops::to_dtype(bias, DType::kBF16);
  EXPECT_TRUE(tensor_near(ops::matmul(a, b, bias16), naive_matmul(a, b, bias16), 5e-2, 1e-2));
}

TEST(Matmul, F16InputsComputeInF32) {
  Tensor a = ops::to_dtype(randn({3, 8}, 32), DType::kF16);
  Tensor b = ops::to_dtype(randn({8, 4}, 33), DType::kF16);
  Tensor y = ops::matmul(a, b);
  EXPECT_EQ(y.dtype(), DType::kF16);
  EXPECT_TRUE(tensor_near(y, naive_matmul(a, b), 1e-2, 1e-2));
}

TEST(Matmul, EmptyInnerDimGivesBias) {
  Tensor a = ops::empty({3, 0}), b = ops::empty({0, 2});
  EXPECT_TRUE(tensor_near(ops::matmul(a, b), {0, 0, 0, 0, 0, 0}));
  Tensor bias = ops::from_vector({1, 2}, {2});
  EXPECT_TRUE(tensor_near(ops::matmul(a, b, bias), {1, 2, 1, 2, 1, 2}));
}

// Attention's batched products read q, k, v as strided slices of one [B, T, 3C] projection
// (and k, dO transposed). oneDNN hands such strides to its slow gemm path; the backend gives it
// dense copies instead wherever the dense problem gets its brgemm kernels, with the same result.
TEST(Matmul, StridedBatchedOperandsRunOnTheDenseKernel) {
  const int64_t B = 2, T = 48, H = 3, D = 16;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Tensor qkv = ops::to_dtype(randn({B, T, 3 * H * D}, 41), dtype);
    auto heads = [&](int64_t i) {  // [B, H, T, D] view of slice i, strides (T*3C, D, 3C, 1)
      return ops::transpose(ops::reshape(ops::narrow(qkv, 2, i * H * D, H * D), {B, T, H, D}), 1,
                            2);
    };
    const Tensor q = heads(0), k = heads(1);
    const Tensor kt = ops::transpose(k, -2, -1);
    // The same product from dense operands: which kernel oneDNN gives it on this CPU.
    const Tensor dense = ops::matmul(ops::contiguous(q), ops::contiguous(kt));
    const std::string dense_impl = cpu::matmul_last_impl();
    const Tensor y = ops::matmul(q, kt);
    if (dense_impl.rfind("brg", 0) == 0) {
      EXPECT_EQ(cpu::matmul_last_impl(), dense_impl) << dtype_name(dtype);
      EXPECT_EQ(y.to_vector(), dense.to_vector()) << dtype_name(dtype);
    }
    const double tol = dtype == DType::kF32 ? 1e-4 : 2e-2;
    EXPECT_TRUE(tensor_near(y, naive_matmul(q, kt), tol, tol)) << dtype_name(dtype);
    // Probabilities [B, H, T, T] (transposed, as in dV = P^T dO) times the strided v.
    const Tensor p = ops::to_dtype(randn({B, H, T, T}, 42), dtype);
    const Tensor v = heads(2);
    const Tensor pv = ops::matmul(ops::transpose(p, -2, -1), v);
    EXPECT_TRUE(tensor_near(pv, naive_matmul(ops::transpose(p, -2, -1), v), tol * 4, tol * 4))
        << dtype_name(dtype);
  }
}

TEST(Matmul, PrimitiveCacheIsReused) {
  Tensor a = randn({9, 11}, 34), b = randn({11, 13}, 35);
  Tensor y1 = ops::matmul(a, b);
  const size_t after_first = cpu::matmul_cache_size();
  EXPECT_GE(after_first, 1u);
  EXPECT_FALSE(cpu::matmul_last_impl().empty());
  Tensor y2 = ops::matmul(randn({9, 11}, 34), randn({11, 13}, 35));  // same problem, new data
  EXPECT_EQ(cpu::matmul_cache_size(), after_first);
  EXPECT_EQ(y1.to_vector(), y2.to_vector());
  ops::matmul(randn({9, 12}, 36), randn({12, 13}, 37));  // a new problem: one more primitive
  EXPECT_EQ(cpu::matmul_cache_size(), after_first + 1);
  // Different batch sizes sharing one rank-2 weight are distinct problems once folded.
  ops::matmul(randn({2, 9, 11}, 38), b);
  const size_t folded = cpu::matmul_cache_size();
  ops::matmul(randn({2, 9, 11}, 39), b);
  EXPECT_EQ(cpu::matmul_cache_size(), folded);
  // The folded [2, 9, 11] x [11, 13] is exactly the 2-D [18, 11] x [11, 13] problem.
  ops::matmul(randn({18, 11}, 40), b);
  EXPECT_EQ(cpu::matmul_cache_size(), folded);
}

TEST(Matmul, ConcurrentCallsFromSeveralThreads) {
  // Cached primitives are shared across threads; each thread has its own stream and scratchpad.
  Tensor a = randn({2, 16, 24}, 50), b = randn({24, 8}, 51);
  const std::vector<float> want = naive_matmul(a, b);
  std::vector<int> ok(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      bool all = true;
      for (int i = 0; i < 20; ++i) all = all && tensor_near(ops::matmul(a, b), want, 1e-4, 1e-4);
      ok[t] = all;
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_TRUE(ok[t]) << "thread " << t;
}

TEST(Matmul, ErrorsNameTheOpAndShapes) {
  Tensor a = randn({2, 3}, 40), b = randn({4, 5}, 41);
  expect_error_naming([&] { ops::matmul(a, b); }, {"matmul", "f32[2, 3]", "f32[4, 5]"});
  expect_error_naming(
      [&] {
        ops::matmul(randn({3}, 42), randn({3, 2}, 43));
      },
      {"matmul", "f32[3]", "f32[3, 2]"});
  Tensor bf = ops::to_dtype(randn({3, 2}, 44), DType::kBF16);
  expect_error_naming([&] { ops::matmul(a, bf); }, {"matmul", "f32[2, 3]", "bf16[3, 2]"});
  expect_error_naming(
      [&] {
        ops::matmul(randn({2, 2, 3}, 45), randn({3, 3, 4}, 46));
      },
      {"matmul", "broadcast", "f32[2, 2, 3]", "f32[3, 3, 4]"});
  expect_error_naming(
      [&] {
        ops::matmul(a, randn({3, 4}, 47), randn({3}, 48));
      },
      {"matmul", "bias", "f32[3]"});
  Tensor ints = ops::from_ints({1, 2, 3, 4}, {2, 2});
  expect_error_naming([&] { ops::matmul(ints, ints); }, {"matmul", "i64[2, 2]"});
  expect_error_naming(
      [&] {
        ops::matmul(a, randn({3, 4}, 49), Tensor(), DType::kBF16);
      },
      {"matmul", "bf16"});
}

// Long problems run in two parts where oneDNN blocks their M badly (the rows up to a multiple
// of 256, then the tail), and a large transposed bf16 A with an unaligned leading dimension is
// copied, 8192 rows at a time, to a buffer with a padded one: the results stay the product's,
// with and without a bias, in matmul, matmul_into_ and matmul_add_, for a 2-D problem and one
// folded from [B, T, K]. 12369 rows: a padded chunk of 8192, then one of 4177 (4096 + 81).
TEST(Matmul, LongProblemsWithUnalignedRowsMatchTheProduct) {
  const int64_t m = 12369, k = 256, n = 8;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (bool transposed : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (transposed ? ", A transposed" : ", A plain"));
      const Tensor a = transposed ? ops::transpose(ops::to_dtype(randn({k, m}, 1), dt), 0, 1)
                                  : ops::to_dtype(randn({m, k}, 1), dt);
      const Tensor b = ops::to_dtype(randn({k, n}, 2), dt);
      const Tensor bias = ops::to_dtype(randn({n}, 3), dt);
      const double tol = dt == DType::kF32 ? 1e-4 : 1e-3;
      EXPECT_TRUE(
          tensor_near(ops::matmul(a, b, bias, DType::kF32), naive_matmul(a, b, bias), tol, tol));
      Tensor into = ops::full({m, n}, 7.0);
      ops::matmul_into_(into, a, b);
      EXPECT_TRUE(tensor_near(into, naive_matmul(a, b), tol, tol));
      const Tensor base = randn({m, n}, 4);
      Tensor sum = ops::clone(base);
      ops::matmul_add_(sum, a, b);
      std::vector<float> want = naive_matmul(a, b);
      const std::vector<float> start = base.to_vector();
      for (size_t i = 0; i < want.size(); ++i) want[i] += start[i];
      EXPECT_TRUE(tensor_near(sum, want, tol, tol));
    }
    const Tensor a3 = ops::to_dtype(randn({3, 1393, k}, 5), dt);  // folded: M = 4179
    const Tensor b3 = ops::to_dtype(randn({k, n}, 6), dt);
    EXPECT_TRUE(
        tensor_near(ops::matmul(a3, b3, Tensor(), DType::kF32), naive_matmul(a3, b3), 1e-3, 1e-3));
  }
}

// A long f32 reduction over a row-major A (K >= 16384, the output layer's input gradient) runs
// in 4096-long slices of K accumulated in f32: the results stay the product's with A strided (a
// column slice of a wider matrix), B transposed, with a bias, in matmul, matmul_into_ and
// matmul_add_. f16 operands (widened to f32) give the f32 result rounded once; bf16 ones (one
// primitive) the product. K = 20000: four full slices and a tail of 3616.
TEST(Matmul, LongReductionsMatchTheProduct) {
  const int64_t m = 5, k = 20000, n = 7;
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (bool strided : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (strided ? ", strided operands" : ", dense"));
      const Tensor a = strided ? ops::narrow(ops::to_dtype(randn({m, k + 37}, 1), dt), 1, 30, k)
                               : ops::to_dtype(randn({m, k}, 1), dt);
      const Tensor b = strided ? ops::transpose(ops::to_dtype(randn({n, k}, 2), dt), 0, 1)
                               : ops::to_dtype(randn({k, n}, 2), dt);
      const Tensor bias = ops::to_dtype(randn({n}, 3), dt);
      const std::vector<float> product = naive_matmul(a, b), with_bias = naive_matmul(a, b, bias);
      const double tol = 1e-3;
      const Tensor wide = ops::matmul(a, b, bias, DType::kF32);
      EXPECT_TRUE(tensor_near(wide, with_bias, tol, tol));
      if (dt == DType::kF16) {
        const Tensor narrow = ops::matmul(a, b, bias);
        ASSERT_EQ(narrow.dtype(), DType::kF16);
        EXPECT_EQ(narrow.to_vector(), ops::to_dtype(wide, DType::kF16).to_vector());
      }
      Tensor into = ops::full({m, n}, 7.0);
      ops::matmul_into_(into, a, b);
      EXPECT_TRUE(tensor_near(into, product, tol, tol));
      const Tensor base = randn({m, n}, 4);
      Tensor sum = ops::clone(base);
      ops::matmul_add_(sum, a, b);
      std::vector<float> want = product;
      const std::vector<float> start = base.to_vector();
      for (size_t i = 0; i < want.size(); ++i) want[i] += start[i];
      EXPECT_TRUE(tensor_near(sum, want, tol, tol));
    }
  }
}

TEST(Matmul, PrimitiveCacheIsBoundedAndStillCorrect) {
  // More distinct problems than the cache holds: it stays bounded (LRU) and results stay right.
  const size_t cap = cpu::matmul_cache_capacity();
  Tensor b = randn({3, 2}, 77);
  for (size_t m = 1; m <= cap + 16; ++m) {
    Tensor a = ops::ones({static_cast<int64_t>(m), 3});
    Tensor y = ops::matmul(a, b);
    if (m % 512 == 0 || m == cap + 16) {
      auto bv = b.to_vector();
      EXPECT_NEAR(y.to_vector()[0], bv[0] + bv[2] + bv[4], 1e-5);
    }
  }
  EXPECT_LE(cpu::matmul_cache_size(), cap);
}

}  // namespace
}  // namespace hfrun

namespace hfrun {
namespace {

// HFRUN_PROFILE=shapes: each GEMM under a key naming its operands (a transposed view marked ^T),
// with its flops, and copies under their shapes; without shapes, the plain op names.
TEST(Matmul, ProfilerKeysGemmsByShapeWithTheirFlops) {
  const Tensor a = testing::randn({4, 8}, 1), b = ops::transpose(testing::randn({3, 8}, 2), 0, 1);
  for (bool shapes : {true, false}) {
    profiler::reset();
    profiler::set_shapes(shapes);
    profiler::set_enabled(true);
    ops::matmul(a, b);
    ops::contiguous(b);
    profiler::set_enabled(false);
    profiler::set_shapes(false);
    const auto stats = profiler::snapshot();
    if (shapes) {
      ASSERT_EQ(stats.count("op:matmul f32 4x8 @ f32 8x3^T/1,8 -> f32"), 1u);
      const profiler::OpStats& st = stats.at("op:matmul f32 4x8 @ f32 8x3^T/1,8 -> f32");
      EXPECT_EQ(st.calls, 1);
      EXPECT_EQ(st.flops, 2.0 * 4 * 3 * 8);
      EXPECT_EQ(stats.count("op:copy strided f32 8x3^T/1,8 -> f32 8x3"), 1u);
      EXPECT_EQ(stats.count("op:matmul"), 0u);
    } else {
      EXPECT_EQ(stats.count("op:matmul"), 1u);
      EXPECT_EQ(stats.count("op:copy strided"), 1u);
    }
  }
}

}  // namespace
}  // namespace hfrun

namespace hfrun {
namespace {

// f32 products on the layouts where oneDNN's f32 brgemm loses rate on AMX machines (matmul.cpp,
// f32_layout_fixes): a row-major B with a leading dimension of 3072 (any K) or 1536 at K = 2048
// goes to oneDNN's gemm:jit implementation, one of 1024 or 2048 (powers of two) stays on
// brgemm; a column-major A strided by 1100 is copied into padded row chunks. Each equals a
// double-precision reference, written and accumulated (matmul_add_), whichever kernel ran; with
// HFRUN_MATMUL_PAD=1 (ctest's tensor_matmul_padded) each must have taken the path its layout
// gets there.
TEST(Matmul, F32SlowLayoutsGiveTheProduct) {
  const char* env = std::getenv("HFRUN_MATMUL_PAD");
  const bool forced = env != nullptr && std::string(env) == "1";
  struct Case {
    Tensor a, b;
    std::string copy_key;  // the padded copy the layout gets, or ""
    int brgemm;            // -1: any kernel; 0: not brgemm; 1: brgemm
  };
  // Whether oneDNN runs f32 on brgemm on this machine at all (a product no rule touches).
  (void)ops::matmul(testing::randn({16, 256}, 59), testing::randn({256, 256}, 58));
  const std::string probe_impl = cpu::matmul_last_impl();
  const Tensor col_a = ops::transpose(testing::randn({1024, 1100}, 62), 0, 1);  // [1100, 1024]
  const std::vector<Case> cases = {
      {testing::randn({64, 768}, 63), testing::randn({768, 3072}, 61), "", 0},
      {testing::randn({16, 2048}, 65), testing::randn({2048, 1536}, 66), "", 0},
      {testing::randn({16, 1024}, 67), testing::randn({1024, 1024}, 68), "", 1},
      {testing::randn({16, 2048}, 69), testing::randn({2048, 2048}, 60), "", 1},
      {col_a, testing::randn({1024, 48}, 64),
       "op:copy strided f32 1024x1024/1100,1 -> f32 1024x1024", -1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.a.str() + " x " + c.b.str());
    profiler::reset();
    profiler::set_shapes(true);
    profiler::set_enabled(true);
    const Tensor got = ops::matmul(c.a, c.b);
    const std::string impl = cpu::matmul_last_impl();
    Tensor acc = ops::clone(got);
    ops::matmul_add_(acc, c.a, c.b);  // the accumulating path: acc = 2 * product
    const std::string add_impl = cpu::matmul_last_impl();
    profiler::set_enabled(false);
    profiler::set_shapes(false);
    if (forced && !c.copy_key.empty()) {
      EXPECT_GE(profiler::snapshot().count(c.copy_key), 1u);
    }
    if (forced && c.brgemm == 0) {
      EXPECT_NE(impl.rfind("brg", 0), 0u) << impl;
      EXPECT_NE(add_impl.rfind("brg", 0), 0u) << add_impl;
    }
    if (forced && c.brgemm == 1 && probe_impl.rfind("brg", 0) == 0) {
      EXPECT_EQ(impl.rfind("brg", 0), 0u) << impl;
      EXPECT_EQ(add_impl.rfind("brg", 0), 0u) << add_impl;
    }
    const int64_t M = c.a.size(0), K = c.a.size(1), N = c.b.size(1);
    const std::vector<float> a = ops::contiguous(c.a).to_vector(),
                             b = ops::contiguous(c.b).to_vector(), y = got.to_vector(),
                             y2 = acc.to_vector();
    for (int64_t t = 0; t < 64; ++t) {
      const int64_t i = (t * 7919) % M, j = (t * 104729) % N;
      double want = 0;
      for (int64_t k = 0; k < K; ++k) want += double(a[i * K + k]) * double(b[k * N + j]);
      EXPECT_NEAR(y[i * N + j], want, 1e-3 * std::sqrt(double(K))) << i << ", " << j;
      EXPECT_NEAR(y2[i * N + j], 2 * want, 2e-3 * std::sqrt(double(K))) << i << ", " << j;
    }
  }
}

// f32 products of a dense transposed A (a weight gradient's g^T) that the CPU backend hands to
// oneDNN's inner-product backward-weights primitive (matmul.cpp, transposed_product_pays: on AMX
// machines, an unaligned M with K >= 1024 or a B whose rows are an odd multiple of 1024 long)
// equal a double-precision reference, written over an f32 output, and from f16 operands
// (computed in f32, rounded once to the f16 output); with HFRUN_MATMUL_IP=1 (ctest's
// tensor_matmul_ip) they must have taken it.
TEST(Matmul, TransposedF32ProductsOnTheWeightGradientPrimitive) {
  const char* env = std::getenv("HFRUN_MATMUL_IP");
  const bool forced = env != nullptr && std::string(env) == "1";
  struct Case {
    Tensor a, b;
    bool takes;  // whether HFRUN_MATMUL_IP=1 sends it to the primitive
  };
  const std::vector<Case> cases = {
      {ops::transpose(testing::randn({1024, 200}, 71), 0, 1), testing::randn({1024, 48}, 72), true},
      {ops::transpose(testing::randn({16, 24}, 73), 0, 1), testing::randn({16, 1024}, 74), true},
      // A^T starting 8 rows into its storage: dense, at an offset.
      {ops::transpose(ops::narrow(testing::randn({1032, 200}, 75), 0, 8, 1024), 0, 1),
       testing::randn({1024, 48}, 76), true},
      // A^T's rows longer than M (a slice of columns): not dense, so the matmul primitive.
      {ops::transpose(ops::narrow(testing::randn({1024, 256}, 77), 1, 0, 200), 0, 1),
       testing::randn({1024, 48}, 78), false},
  };
  for (const auto& [a, b, takes] : cases) {
    for (DType dtype : {DType::kF32, DType::kF16}) {
      SCOPED_TRACE(a.str() + " x " + b.str() + " " + dtype_name(dtype));
      const Tensor ta = ops::to_dtype(a, dtype), tb = ops::to_dtype(b, dtype);
      Tensor got;
      if (dtype == DType::kF32) {
        got = ops::full({a.size(0), b.size(1)}, 7.0, dtype);  // written over
        ops::matmul_into_(got, ta, tb);
      } else {
        got = ops::matmul(ta, tb);  // f16 out: the f32 result rounded once
      }
      if (forced) {
        EXPECT_EQ(cpu::matmul_last_impl().rfind("inner_product_backward_weights", 0) == 0, takes)
            << cpu::matmul_last_impl();
      }
      const std::vector<float> want = naive_matmul(ta, tb), y = got.to_vector();
      const double tol = (dtype == DType::kF16 ? 2e-3 : 1e-4) * std::sqrt(double(a.size(1)));
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_NEAR(y[i], want[i], tol + 1e-3 * std::abs(want[i])) << i;
      }
    }
  }
}

}  // namespace
}  // namespace hfrun
