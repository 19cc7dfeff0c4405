// The MPI backend's own host arithmetic (distributed/comm/reduce_kernels.h), built vectorised:
// every element, the loop's tail included, must equal the plain scalar expression.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utime.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "distributed/comm/reduce_kernels.h"
#include "distributed/comm/shm_collectives.h"
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

// The shared-memory reductions' sums (shm_collectives.h): sources added in rank order, the
// average's IEEE division after the sum, bit for bit with the scalar expressions.
TEST(ReduceKernels, SharedMemorySumsAddInRankOrderThenDivide) {
  std::mt19937 rng(13);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (size_t count : {size_t{1}, size_t{17}, size_t{4099}}) {
    for (int p : {2, 3, 5}) {
      std::vector<std::vector<float>> src(static_cast<size_t>(p), std::vector<float>(count));
      std::vector<const void*> ptrs;
      for (auto& s : src) {
        // Magnitudes far apart, so that another order of the additions rounds differently.
        for (float& v : s) v = dist(rng) * std::ldexp(1.0f, static_cast<int>(rng() % 40) - 20);
        ptrs.push_back(s.data());
      }
      for (int divide : {0, p}) {
        std::vector<float> out(count);
        detail::sum_f32(ptrs.data(), p, out.data(), count, divide);
        for (size_t i = 0; i < count; ++i) {
          float want = src[0][i] + src[1][i];
          for (int q = 2; q < p; ++q) want += src[static_cast<size_t>(q)][i];
          if (divide > 0) want /= static_cast<float>(divide);
          ASSERT_EQ(bits(out[i]), bits(want)) << "element " << i << ", p " << p;
        }
      }
      std::vector<uint16_t> b16(count * static_cast<size_t>(p));
      std::vector<const void*> bptrs;
      for (int q = 0; q < p; ++q) {
        for (size_t i = 0; i < count; ++i) {
          b16[static_cast<size_t>(q) * count + i] = f32_to_bf16(src[static_cast<size_t>(q)][i]);
        }
        bptrs.push_back(b16.data() + static_cast<size_t>(q) * count);
      }
      std::vector<uint16_t> bout(count);
      std::vector<float> acc(count);
      detail::sum_bf16(bptrs.data(), p, bout.data(), count, acc.data());
      for (size_t i = 0; i < count; ++i) {
        auto at = [&](int q) { return b16[static_cast<size_t>(q) * count + i]; };
        float sum = bf16_to_f32(at(0)) + bf16_to_f32(at(1));
        for (int q = 2; q < p; ++q) sum += bf16_to_f32(at(q));
        ASSERT_EQ(bout[i], f32_to_bf16(sum)) << "bf16 element " << i << ", p " << p;
      }
    }
  }
}

// Two ranks in place: io = io + other (then / 2), the same value also in `copy`.
TEST(ReduceKernels, TwoRankSumsInPlaceWriteBothOutputs) {
  std::mt19937 rng(17);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  for (size_t count : {size_t{1}, size_t{16}, size_t{33}, size_t{4097}}) {
    std::vector<float> io(count), other(count);
    for (size_t i = 0; i < count; ++i) {
      io[i] = dist(rng);
      other[i] = dist(rng) * 1e-3f;
    }
    for (int divide : {0, 2}) {
      std::vector<float> x = io, copy(count);
      detail::sum2_f32(x.data(), other.data(), copy.data(), count, divide);
      for (size_t i = 0; i < count; ++i) {
        const float want = divide > 0 ? (io[i] + other[i]) / 2.0f : io[i] + other[i];
        ASSERT_EQ(bits(x[i]), bits(want)) << "element " << i;
        ASSERT_EQ(bits(copy[i]), bits(want)) << "copy of element " << i;
      }
    }
    std::vector<uint16_t> a(count), b(count), c(count);
    for (size_t i = 0; i < count; ++i) {
      a[i] = f32_to_bf16(io[i]);
      b[i] = f32_to_bf16(other[i]);
    }
    const std::vector<uint16_t> a0 = a;
    detail::sum2_bf16(a.data(), b.data(), c.data(), count);
    for (size_t i = 0; i < count; ++i) {
      const uint16_t want = f32_to_bf16(bf16_to_f32(a0[i]) + bf16_to_f32(b[i]));
      ASSERT_EQ(a[i], want) << "bf16 element " << i;
      ASSERT_EQ(c[i], want) << "bf16 copy of element " << i;
    }
  }
}

// A segment name left by a job whose rank 0 died before removing it (a kill during start-up) is
// removed by the next job on the node; names of live processes, recent names, and other files
// stay.
TEST(ShmSegments, StaleNamesOfDeadCreatorsAreRemoved) {
  char tmpl[] = "/tmp/hfrun-shm-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const pid_t dead = fork();  // a pid that no longer exists once reaped
  if (dead == 0) _exit(0);
  ASSERT_GT(dead, 0);
  waitpid(dead, nullptr, 0);
  auto make = [&](const std::string& name, bool old) {
    const std::string path = dir + "/" + name;
    std::ofstream(path) << "x";
    if (old) {
      const utimbuf t{time(nullptr) - 3600, time(nullptr) - 3600};
      utime(path.c_str(), &t);
    }
    return path;
  };
  const std::string dead_old = make("hfrun-" + std::to_string(dead) + "-0", true);
  const std::string dead_new = make("hfrun-" + std::to_string(dead) + "-1", false);
  const std::string live_old = make("hfrun-" + std::to_string(getpid()) + "-0", true);
  const std::string other = make("hfrun-" + std::to_string(dead) + "-2.keep", true);
  const std::string foreign = make("psm2-" + std::to_string(dead), true);
  EXPECT_EQ(detail::remove_stale_segments(dir.c_str(), 60.0), 1);
  EXPECT_FALSE(std::filesystem::exists(dead_old));
  for (const std::string& kept : {dead_new, live_old, other, foreign}) {
    EXPECT_TRUE(std::filesystem::exists(kept)) << kept;
  }
  EXPECT_EQ(detail::remove_stale_segments((dir + "/missing").c_str(), 60.0), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace hfrun::dist
