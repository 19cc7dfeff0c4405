// Tensor core: dtypes, storage and allocator, views, copies and casts.
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "tensor/allocator.h"
#include "test_util.h"

namespace hfrun {
namespace {

using testing::tensor_near;

TEST(DType, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kI64), 8u);
  EXPECT_EQ(dtype_size(DType::kBool), 1u);
  EXPECT_EQ(parse_dtype("bf16"), DType::kBF16);
  EXPECT_EQ(parse_dtype("float16"), DType::kF16);
  EXPECT_THROW(parse_dtype("f8"), Error);
}

TEST(DType, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties go to even (1.0).
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
  // 1 + 3*2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even).
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
  EXPECT_FLOAT_EQ(bf16_to_f32(f32_to_bf16(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(DType, Float16RoundTripsIncludingSubnormalsAndInf) {
  for (float v : {0.0f, 1.0f, -2.0f, 0.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f,
                  3.0517578125e-05f}) {
    EXPECT_EQ(f16_to_f32(f32_to_f16(v)), v) << v;
  }
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds past the largest finite half: inf
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
  EXPECT_EQ(f32_to_f16(1e-9f), 0);  // underflows to zero
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even.
  EXPECT_EQ(f32_to_f16(1.00048828125f), 0x3c00);
}

// The CPU's f16 casts (F16C, 8 at a time, where the build has it) agree with the portable
// conversions: every one of the 65536 halves to f32, and f32 values across the whole f16 range
// (subnormals, ties, overflow to inf) to f16. A NaN stays a NaN (its payload may differ).
TEST(DType, TensorCastsToAndFromFloat16MatchThePortableConversions) {
  std::vector<uint16_t> halves(65536 + 3);  // + 3: a tail after the 8-wide blocks
  for (size_t i = 0; i < halves.size(); ++i) halves[i] = static_cast<uint16_t>(i);
  Tensor h = ops::empty({static_cast<int64_t>(halves.size())}, DType::kF16);
  std::memcpy(h.raw_data(), halves.data(), halves.size() * 2);
  const std::vector<float> wide = ops::to_dtype(h, DType::kF32).to_vector();
  for (size_t i = 0; i < halves.size(); ++i) {
    const float want = f16_to_f32(halves[i]);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(wide[i])) << i;
    } else {
      EXPECT_EQ(wide[i], want) << std::hex << halves[i];
    }
  }
  std::vector<float> values;
  for (uint32_t bits = 0x33000000u; bits < 0x47800000u; bits += 0x1235u) {  // 2^-25 .. 2^16
    float v;
    std::memcpy(&v, &bits, 4);
    values.push_back(v);
    values.push_back(-v);
  }
  for (float v : {1.00048828125f, 65519.0f, 65520.0f, 1e-9f, 5.960464477539063e-08f,
                  std::numeric_limits<float>::infinity(), 0.0f, -0.0f}) {
    values.push_back(v);
  }
  Tensor f = ops::from_vector(values, {static_cast<int64_t>(values.size())});
  Tensor narrow = ops::to_dtype(f, DType::kF16);
  const auto* got = static_cast<const uint16_t*>(narrow.raw_data());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(got[i], f32_to_f16(values[i])) << values[i];
  }
  // Strided (a transposed view) takes the element-wise path: the same results.
  Tensor m = ops::to_dtype(ops::transpose(ops::reshape(ops::narrow(f, 0, 0, 64), {8, 8}), 0, 1),
                           DType::kF16);
  Tensor back = ops::to_dtype(m, DType::kF32);
  for (int64_t r = 0; r < 8; ++r) {
    for (int64_t c = 0; c < 8; ++c) {
      EXPECT_EQ(back.to_vector()[static_cast<size_t>(r * 8 + c)],
                f16_to_f32(f32_to_f16(values[static_cast<size_t>(c * 8 + r)])));
    }
  }
}

TEST(Allocator, ReusesFreedBlocksInSteadyState) {
  Allocator& a = cpu_allocator();
  { Tensor warm = ops::empty({1000, 37}); }
  AllocatorStats before = a.stats();
  for (int i = 0; i < 10; ++i) {
    Tensor t = ops::empty({1000, 37});
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
  }
  AllocatorStats after = a.stats();
  EXPECT_EQ(after.system_allocs, before.system_allocs);
  EXPECT_GE(after.cache_hits, before.cache_hits + 10);
}

// reset_peak restarts the reported peak from the live bytes; the cache keeps its own bound (the
// run's high water), so a freed block still serves the next request of its size.
TEST(Allocator, ResetPeakStartsFromTheLiveBytesAndKeepsTheCache) {
  Allocator& a = cpu_allocator();
  { Tensor big = ops::empty({4 << 20}); }  // 16 MiB, freed into the cache
  EXPECT_GE(a.stats().peak_allocated_bytes, size_t{16} << 20);
  a.reset_peak();
  const AllocatorStats reset = a.stats();
  EXPECT_EQ(reset.peak_allocated_bytes, reset.allocated_bytes);
  { Tensor small = ops::empty({1000}); }  // a free: the cache is trimmed to its bound here
  const uint64_t system_allocs = a.stats().system_allocs;
  {
    Tensor again = ops::empty({4 << 20});
    EXPECT_EQ(a.stats().system_allocs, system_allocs) << "the cached block was dropped";
    EXPECT_GE(a.stats().peak_allocated_bytes, reset.allocated_bytes + (size_t{16} << 20));
  }
}

TEST(Tensor, FactoriesAndElementAccess) {
  Tensor t = ops::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(t.sizes(), (Shape{2, 3}));
  EXPECT_EQ(t.strides(), (Shape{3, 1}));
  EXPECT_EQ(t.numel(), 6);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.str(), "f32[2, 3]");
  EXPECT_TRUE(tensor_near(ops::full({2}, 7.5), {7.5, 7.5}));
  EXPECT_EQ(ops::arange(4).to_int_vector(), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_FLOAT_EQ(ops::scalar(3.0).item(), 3.0f);
  EXPECT_THROW(ops::from_vector({1, 2, 3}, {2, 2}), Error);
  EXPECT_THROW(ops::empty({2, -1}), Error);
  EXPECT_THROW(t.item(), Error);
  EXPECT_THROW(t.data<int32_t>(), Error);
}

TEST(Tensor, TransposeAndPermuteAreViews) {
  Tensor t = ops::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor tt = ops::transpose(t, 0, 1);
  EXPECT_TRUE(tt.shares_storage_with(t));
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_TRUE(tensor_near(tt, {1, 4, 2, 5, 3, 6}));
  Tensor c = ops::contiguous(tt);
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_FALSE(c.shares_storage_with(t));
  EXPECT_TRUE(tensor_near(c, {1, 4, 2, 5, 3, 6}));
  Tensor x = ops::reshape(ops::arange(24, DType::kF32), {2, 3, 4});
  Tensor p = ops::permute(x, {2, 0, 1});
  EXPECT_EQ(p.sizes(), (Shape{4, 2, 3}));
  EXPECT_FLOAT_EQ(ops::contiguous(p).to_vector()[1], 4.0f);  // p[0,0,1] = x[0,1,0]
  EXPECT_THROW(ops::permute(x, {0, 0, 1}), Error);
}

TEST(Tensor, NarrowSelectAndSplitShareStorage) {
  Tensor x = ops::reshape(ops::arange(12, DType::kF32), {3, 4});
  Tensor n = ops::narrow(x, 1, 1, 2);
  EXPECT_TRUE(tensor_near(n, {1, 2, 5, 6, 9, 10}));
  EXPECT_TRUE(tensor_near(ops::select(x, 0, -1), {8, 9, 10, 11}));
  auto parts = ops::split(x, 3, 1);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[1].sizes(), (Shape{3, 1}));
  EXPECT_TRUE(tensor_near(parts[1], {3, 7, 11}));
  EXPECT_THROW(ops::narrow(x, 1, 3, 2), Error);
  EXPECT_THROW(ops::select(x, 2, 0), Error);
}

TEST(Tensor, ViewNeedsCompatibleStridesReshapeCopies) {
  Tensor x = ops::reshape(ops::arange(6, DType::kF32), {2, 3});
  Tensor v = ops::view(x, {3, -1});
  EXPECT_EQ(v.sizes(), (Shape{3, 2}));
  EXPECT_TRUE(v.shares_storage_with(x));
  Tensor t = ops::transpose(x, 0, 1);
  EXPECT_THROW(ops::view(t, {6}), Error);
  Tensor r = ops::reshape(t, {6});
  EXPECT_FALSE(r.shares_storage_with(x));
  EXPECT_TRUE(tensor_near(r, {0, 3, 1, 4, 2, 5}));
  // A narrowed row block is still viewable.
  Tensor rows = ops::narrow(ops::reshape(ops::arange(24, DType::kF32), {4, 6}), 0, 1, 2);
  EXPECT_TRUE(tensor_near(ops::view(rows, {12}), {6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}));
  EXPECT_THROW(ops::view(x, {4, -1}), Error);
  EXPECT_THROW(ops::view(x, {-1, -1}), Error);
}

TEST(Tensor, ExpandUnsqueezeSqueezeFlatten) {
  Tensor b = ops::from_vector({1, 2, 3}, {3});
  Tensor e = ops::expand(b, {2, 3});
  EXPECT_EQ(e.strides(), (Shape{0, 1}));
  EXPECT_TRUE(tensor_near(e, {1, 2, 3, 1, 2, 3}));
  Tensor col = ops::unsqueeze(b, 1);
  EXPECT_EQ(col.sizes(), (Shape{3, 1}));
  EXPECT_TRUE(tensor_near(ops::expand(col, {3, 2}), {1, 1, 2, 2, 3, 3}));
  EXPECT_EQ(ops::squeeze(col, 1).sizes(), (Shape{3}));
  EXPECT_EQ(ops::squeeze(col, 0).sizes(), (Shape{3, 1}));  // not size 1: unchanged
  EXPECT_EQ(ops::flatten(ops::zeros({2, 3, 4}), 1).sizes(), (Shape{2, 12}));
  EXPECT_THROW(ops::expand(ops::zeros({2}), {3}), Error);
}

TEST(Tensor, CastsBetweenAllDtypes) {
  Tensor x = ops::from_vector({-1.5f, 0.0f, 2.25f, 3.0f}, {4});
  EXPECT_TRUE(tensor_near(ops::to_dtype(x, DType::kBF16), {-1.5f, 0.0f, 2.25f, 3.0f}));
  EXPECT_TRUE(tensor_near(ops::to_dtype(x, DType::kF16), {-1.5f, 0.0f, 2.25f, 3.0f}));
  EXPECT_EQ(ops::to_dtype(x, DType::kI32).to_int_vector(), (std::vector<int64_t>{-1, 0, 2, 3}));
  EXPECT_EQ(ops::to_dtype(x, DType::kBool).to_int_vector(), (std::vector<int64_t>{1, 0, 1, 1}));
  Tensor big = ops::from_ints({(int64_t{1} << 40) + 3}, {1});
  EXPECT_EQ(ops::to_dtype(big, DType::kI64).to_int_vector()[0], (int64_t{1} << 40) + 3);
  // A cast of a transposed view casts element-wise in logical order.
  Tensor t = ops::transpose(ops::reshape(x, {2, 2}), 0, 1);
  EXPECT_TRUE(tensor_near(ops::to_dtype(t, DType::kBF16), {-1.5f, 2.25f, 0.0f, 3.0f}));
}

TEST(Tensor, CopyIntoStridedDestinationBroadcastsSource) {
  Tensor dst = ops::zeros({3, 4});
  Tensor cols = ops::narrow(dst, 1, 1, 2);
  ops::copy_(cols, ops::from_vector({7, 8}, {2}));
  EXPECT_TRUE(tensor_near(dst, {0, 7, 8, 0, 0, 7, 8, 0, 0, 7, 8, 0}));
  ops::fill_(cols, 1.0);
  EXPECT_TRUE(tensor_near(ops::select(dst, 0, 0), {0, 1, 1, 0}));
  Tensor a = ops::ones({3});
  ops::add_(a, ops::from_vector({1, 2, 3}, {3}), 2.0);
  EXPECT_TRUE(tensor_near(a, {3, 5, 7}));
  ops::scale_(a, 0.5);
  EXPECT_TRUE(tensor_near(a, {1.5, 2.5, 3.5}));
  EXPECT_THROW(ops::add_(a, ops::ones({4})), Error);
}

TEST(Tensor, CastOfATransposedViewKeepsItsLayoutAndAddOfOneIsExact) {
  Tensor w = ops::reshape(ops::arange(12, DType::kF32), {3, 4});
  Tensor wt = ops::transpose(w, 0, 1);  // [4, 3], strides {1, 4}
  Tensor b = ops::to_dtype(wt, DType::kBF16);
  EXPECT_EQ(b.sizes(), (Shape{4, 3}));
  EXPECT_EQ(b.strides(), (Shape{1, 4}));  // cast in memory order, still a transposed view
  EXPECT_TRUE(tensor_near(b, ops::contiguous(wt).to_vector()));
  Tensor p = ops::permute(ops::reshape(ops::arange(24, DType::kF32), {2, 3, 4}), {2, 0, 1});
  EXPECT_TRUE(tensor_near(ops::to_dtype(p, DType::kF16), ops::contiguous(p).to_vector()));
  Tensor narrow = ops::narrow(w, 1, 1, 2);  // not a permutation of a dense tensor
  EXPECT_TRUE(tensor_near(ops::to_dtype(narrow, DType::kBF16), {1, 2, 5, 6, 9, 10}));
  // add_ with a strided source: one pass, same values as through a contiguous copy.
  Tensor acc = ops::ones({4, 3});
  ops::add_(acc, wt);
  EXPECT_TRUE(tensor_near(acc, {1, 5, 9, 2, 6, 10, 3, 7, 11, 4, 8, 12}));
  ops::add_(acc, wt, -1.0);
  EXPECT_TRUE(tensor_near(acc, std::vector<float>(12, 1.0f)));
}

TEST(Tensor, OverlappingCopiesAreSafeAndBroadcastDestinationsRejected) {
  // copy_(x, x^T) on a square matrix: the source overlaps the destination.
  Tensor x = ops::reshape(ops::arange(9, DType::kF32), {3, 3});
  Tensor xt = ops::transpose(x, 0, 1);
  ops::copy_(x, xt);
  EXPECT_TRUE(tensor_near(x, {0, 3, 6, 1, 4, 7, 2, 5, 8}));
  // Shifting a row range onto an overlapping one.
  Tensor v = ops::arange(6, DType::kF32);
  Tensor head = ops::narrow(v, 0, 0, 4), tail = ops::narrow(v, 0, 2, 4);
  ops::copy_(tail, head);
  EXPECT_TRUE(tensor_near(v, {0, 1, 0, 1, 2, 3}));
  Tensor e = ops::expand(ops::zeros({1, 3}), {2, 3});
  EXPECT_THROW(ops::copy_(e, ops::ones({2, 3})), Error);
}

// Under DeferredRandom, randn and rand reserve their counters but draw nothing; fill() later
// gives a tensor the values it would have had. Other tensors (views, a tensor made elsewhere)
// are left alone.
TEST(Random, DeferredDrawsTheSameValuesLater) {
  Generator eager(42), late(42);
  const Tensor a = ops::randn({5, 7}, eager, DType::kF32, 0.5, 2.0);
  const Tensor b = ops::rand({3, 3}, eager, DType::kBF16, -1.0, 1.0);
  const Tensor c = ops::randn({9}, eager);
  Tensor a2, b2, c2;
  {
    ops::DeferredRandom deferred;
    a2 = ops::randn({5, 7}, late, DType::kF32, 0.5, 2.0);
    b2 = ops::rand({3, 3}, late, DType::kBF16, -1.0, 1.0);
    for (float x : b2.to_vector()) EXPECT_TRUE(std::isnan(x));  // loud until filled
    deferred.stop();
    c2 = ops::randn({9}, late);  // drawn at once again
    EXPECT_EQ(late.offset(), eager.offset());
    EXPECT_EQ(c2.to_vector(), c.to_vector());
    Tensor row = ops::narrow(a2, 0, 1, 1);
    EXPECT_FALSE(deferred.fill(row));
    EXPECT_FALSE(deferred.fill(c2));
    ASSERT_TRUE(deferred.fill(b2));
    ASSERT_TRUE(deferred.fill(a2));
  }
  EXPECT_EQ(a2.to_vector(), a.to_vector());
  EXPECT_EQ(b2.to_vector(), b.to_vector());
  // Closed: randn fills again.
  Generator g(3), h(3);
  EXPECT_EQ(ops::randn({4}, g).to_vector(), ops::randn({4}, h).to_vector());
  // Nested scopes stopped and ended in any order: an open one defers, none open fills.
  auto outer = std::make_unique<ops::DeferredRandom>();
  auto inner = std::make_unique<ops::DeferredRandom>();
  outer->stop();
  EXPECT_TRUE(std::isnan(ops::randn({1}, g).to_vector()[0]));  // inner still open
  inner->stop();
  EXPECT_FALSE(std::isnan(ops::randn({1}, g).to_vector()[0]));
  auto third = std::make_unique<ops::DeferredRandom>();
  outer.reset();  // ended before the scopes opened after it
  EXPECT_TRUE(std::isnan(ops::randn({1}, g).to_vector()[0]));
  third.reset();
  inner.reset();
  EXPECT_FALSE(std::isnan(ops::randn({1}, g).to_vector()[0]));
}

// The fills' values, element by element, from the scalar generator: uniform a + (b - a) u(word
// i % 4 of counter offset + i / 4), normal Box-Muller over the counter's words (2k, 2k + 1) with
// cos for the even element and sin for the odd one, computed in double. Pins the initial values
// of every model (a faster fill that changed them would change every run from scratch).
TEST(Random, FillsAreThePhiloxWordsElementByElement) {
  const int64_t n = 300001;  // past several threads' blocks, an odd tail
  Generator g(77);
  g.advance(5);
  const Tensor normal = ops::randn({n}, g, DType::kF32, 0.25, 1.5);
  const Tensor uniform = ops::rand({n}, g, DType::kF32, -2.0, 3.0);
  const Tensor normal16 = ops::randn({n}, g, DType::kBF16, 0.0, 0.02);
  const std::vector<float> nv = normal.to_vector(), uv = uniform.to_vector(),
                           bv = normal16.to_vector();
  const uint64_t blocks = (n + 3) / 4;
  for (int64_t i = 0; i < n; ++i) {
    const auto r = philox4x32(77, 5 + static_cast<uint64_t>(i / 4));
    const auto r2 = philox4x32(77, 5 + 2 * blocks + static_cast<uint64_t>(i / 4));
    const int j = static_cast<int>(i % 4);
    auto box_muller = [&](const std::array<uint32_t, 4>& w) {
      const double u1 = (static_cast<double>(w[j & ~1]) + 1.0) / 4294967297.0;
      const double u2 = static_cast<double>(w[j | 1]) / 4294967296.0;
      const double rad = std::sqrt(-2.0 * std::log(u1));
      return (j & 1) ? rad * std::sin(2 * M_PI * u2) : rad * std::cos(2 * M_PI * u2);
    };
    const auto r1 = philox4x32(77, 5 + blocks + static_cast<uint64_t>(i / 4));
    ASSERT_EQ(nv[i], static_cast<float>(0.25 + 1.5 * box_muller(r))) << i;
    ASSERT_EQ(uv[i], static_cast<float>(-2.0 + 5.0 * uint_to_unit_float(r1[j]))) << i;
    if (i % 997 == 0) {
      const Tensor want16 =
          ops::to_dtype(ops::full({1}, static_cast<float>(0.02 * box_muller(r2))), DType::kBF16);
      ASSERT_EQ(bv[i], want16.to_vector()[0]) << i;
    }
  }
}

TEST(Random, SeededAndIndependentOfChunking) {
  Generator g1(42), g2(42), g3(43);
  Tensor a = ops::randn({1000}, g1), b = ops::randn({1000}, g2), c = ops::randn({1000}, g3);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  EXPECT_NE(a.to_vector(), c.to_vector());
  // Normal(0, 1) moments over 100k draws.
  Generator g(1);
  auto v = ops::randn({100000}, g).to_vector();
  double m = 0, s = 0;
  for (float x : v) m += x;
  m /= v.size();
  for (float x : v) s += (x - m) * (x - m);
  s = std::sqrt(s / v.size());
  EXPECT_NEAR(m, 0.0, 0.02);
  EXPECT_NEAR(s, 1.0, 0.02);
  auto u = ops::rand({10000}, g, DType::kF32, -2, 3).to_vector();
  for (float x : u) ASSERT_TRUE(x >= -2 && x < 3);
  // Generator state: resuming at a saved offset reproduces the stream.
  Generator r(9);
  ops::randn({10}, r);
  uint64_t off = r.offset();
  Tensor next = ops::randn({10}, r);
  Generator resumed(0);
  resumed.set_state(9, off);
  EXPECT_EQ(ops::randn({10}, resumed).to_vector(), next.to_vector());
}

}  // namespace
}  // namespace hfrun
