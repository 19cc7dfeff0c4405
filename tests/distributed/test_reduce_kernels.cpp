// The MPI backend's own host arithmetic (distributed/comm/reduce_kernels.h), built vectorised:
// every element, the loop's tail included, must equal the plain scalar expression.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "distributed/comm/reduce_kernels.h"
#include "tensor/dtype.h"
#include "tensor/ops.h"

namespace hfrun::dist {
namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(ReduceKernels, AverageDividesEveryElementExactlyAsIeeeDivision) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  for (int64_t count : {1, 7, 8, 9, 31, 1000, 4099}) {
    for (int n : {1, 2, 3, 7, 8}) {
      std::vector<float> ref(static_cast<size_t>(count));
      for (float& v : ref) v = dist(rng) * std::ldexp(1.0f, static_cast<int>(rng() % 60) - 30);
      ref[0] = std::numeric_limits<float>::infinity();
      if (count > 2) ref[1] = std::numeric_limits<float>::denorm_min();
      Tensor t = ops::empty({count}, DType::kF32);
      std::memcpy(t.raw_data(), ref.data(), ref.size() * sizeof(float));
      detail::divide_in_place(t, n);
      const float* got = static_cast<const float*>(t.raw_data());
      for (int64_t i = 0; i < count; ++i) {
        const float want = ref[i] / static_cast<float>(n);
        ASSERT_EQ(bits(got[i]), bits(want)) << "element " << i << " of " << count << ", n " << n;
      }
    }
  }
}

TEST(ReduceKernels, IntegerAverageTruncatesTowardZero) {
  Tensor t = ops::empty({5}, DType::kI64);
  auto* p = static_cast<int64_t*>(t.raw_data());
  const int64_t in[5] = {7, -7, 6, -1, 0};
  std::memcpy(p, in, sizeof(in));
  detail::divide_in_place(t, 2);
  EXPECT_EQ(p[0], 3);
  EXPECT_EQ(p[1], -3);
  EXPECT_EQ(p[2], 3);
  EXPECT_EQ(p[3], 0);
  EXPECT_EQ(p[4], 0);
  Tensor b = ops::empty({3}, DType::kBF16);
  EXPECT_THROW(detail::divide_in_place(b, 2), Error);
}

TEST(ReduceKernels, Bf16SumRoundsEachPairToNearestEven) {
  std::mt19937 rng(11);
  for (size_t count : {size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{3001}}) {
    std::vector<uint16_t> a(count), b(count);
    for (size_t i = 0; i < count; ++i) {
      a[i] = static_cast<uint16_t>(rng());
      b[i] = static_cast<uint16_t>(rng());
    }
    a[0] = 0x7fc1;  // a NaN stays a NaN
    const std::vector<uint16_t> b0 = b;
    detail::bf16_sum_into(a.data(), b.data(), count);
    for (size_t i = 0; i < count; ++i) {
      const uint16_t want = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b0[i]));
      ASSERT_EQ(b[i], want) << "element " << i << " of " << count;
    }
    EXPECT_TRUE(std::isnan(bf16_to_f32(b[0])));
  }
}

}  // namespace
}  // namespace hfrun::dist
