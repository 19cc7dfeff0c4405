// The bucket and chunk arithmetic of data parallelism (distributed/parallel/layout.h), without
// any process group: DDP buckets end on parameter boundaries and cover the buffer once; ZeRO
// chunks give every element exactly one owner for any world size, with the padding only in
// the last unit.
#include <gtest/gtest.h>

#include <algorithm>

#include "distributed/parallel/layout.h"

namespace hfrun::dist {
namespace {

// Parameters of these sizes laid out back to back, aligned to 16 elements as flattening does.
std::vector<ParamRange> params_of(const std::vector<int64_t>& sizes, int64_t* total) {
  std::vector<ParamRange> out;
  int64_t at = 0;
  for (int64_t n : sizes) {
    out.push_back({at, n});
    at += (n + 15) / 16 * 16;
  }
  *total = at;
  return out;
}

TEST(Layout, BucketsEndOnParameterBoundariesAndCoverTheBuffer) {
  int64_t total = 0;
  const auto params = params_of({100, 7, 300, 40, 40, 1000, 3}, &total);
  for (int64_t bucket : {1, 64, 250, 512, 100000}) {
    const auto units = bucket_layout(params, total, bucket);
    ASSERT_FALSE(units.empty());
    EXPECT_EQ(units.front().begin, 0);
    EXPECT_EQ(units.back().end, total);
    for (size_t u = 1; u < units.size(); ++u) {
      EXPECT_EQ(units[u].begin, units[u - 1].end);
      bool on_boundary = false;
      for (const ParamRange& p : params) on_boundary = on_boundary || p.offset == units[u].begin;
      EXPECT_TRUE(on_boundary) << "bucket " << u << " starts inside a parameter";
      // A bucket closes only once it holds at least bucket elements.
      EXPECT_GE(units[u].begin - units[u - 1].begin, bucket);
    }
    // Every parameter lies in exactly one bucket.
    for (const auto& us : units_of_params(params, units)) EXPECT_EQ(us.size(), 1u);
  }
  EXPECT_EQ(bucket_layout(params, total, 100000).size(), 1u);
  EXPECT_EQ(bucket_layout(params, total, 1).size(), params.size());
}

// Embedding tables under DDP: a flagged parameter is the only one in its bucket, wherever it
// lies, and the rest still bucket as before around it.
TEST(Layout, FlaggedParametersHaveBucketsOfTheirOwn) {
  int64_t total = 0;
  const auto params = params_of({100, 7, 300, 40, 40, 1000, 3}, &total);
  for (const std::vector<bool>& alone :
       {std::vector<bool>{true, false, false, false, false, false, false},
        std::vector<bool>{false, false, true, false, false, true, false},
        std::vector<bool>{false, false, false, false, false, false, true},
        std::vector<bool>{true, true, true, true, true, true, true}}) {
    for (int64_t bucket : {1, 64, 100000}) {
      const auto units = bucket_layout(params, total, bucket, alone);
      EXPECT_EQ(units.front().begin, 0);
      EXPECT_EQ(units.back().end, total);
      for (size_t u = 1; u < units.size(); ++u) EXPECT_EQ(units[u].begin, units[u - 1].end);
      const auto of = units_of_params(params, units);
      for (size_t p = 0; p < params.size(); ++p) {
        ASSERT_EQ(of[p].size(), 1u);
        if (!alone[p]) continue;
        for (size_t q = 0; q < params.size(); ++q) {
          if (q != p) {
            EXPECT_NE(of[q][0], of[p][0]) << "parameter " << q << " shares " << p;
          }
        }
      }
    }
  }
  // Unflagged parameters next to each other still share a bucket.
  const auto units =
      bucket_layout(params, total, 100000, {false, false, true, false, false, false, false});
  EXPECT_EQ(units.size(), 3u);
}

TEST(Layout, ZeroChunksGiveEveryElementOneOwner) {
  for (int world : {1, 2, 3, 4, 7}) {
    for (int64_t total : {1, 15, 16, 1000, 4099}) {
      for (int64_t bucket : {1, 10, 256, 1 << 20}) {
        const auto units = chunk_layout(total, bucket, world);
        std::vector<int> owners(static_cast<size_t>(total), 0);
        for (size_t u = 0; u < units.size(); ++u) {
          const UnitLayout& l = units[u];
          EXPECT_EQ(l.chunk, (l.end - l.begin + world - 1) / world);
          // Only the last unit is shorter than chunk * world (padding).
          if (u + 1 < units.size()) {
            EXPECT_EQ(l.end - l.begin, l.chunk * world);
          }
          for (int r = 0; r < world; ++r) {
            EXPECT_LE(l.lo(r), l.hi(r));
            for (int64_t e = l.lo(r); e < l.hi(r); ++e) ++owners[static_cast<size_t>(e)];
          }
        }
        for (int64_t e = 0; e < total; ++e) {
          ASSERT_EQ(owners[static_cast<size_t>(e)], 1)
              << "element " << e << " of " << total << ", world " << world << ", bucket " << bucket;
        }
      }
    }
  }
}

// Embedding tables under ZeRO-1: a range set apart starts a unit and its last unit ends at its
// end (padded), so no unit holds elements of both it and anything else; every element still has
// one owner, and the units elsewhere are cut as without it.
TEST(Layout, RangesSetApartHaveChunkUnitsOfTheirOwn) {
  int64_t total = 0;
  const auto params = params_of({100, 7, 300, 40, 1000, 3}, &total);
  for (const std::vector<size_t>& flagged :
       {std::vector<size_t>{0}, std::vector<size_t>{2, 4}, std::vector<size_t>{5},
        std::vector<size_t>{0, 1, 2, 3, 4, 5}}) {
    std::vector<ParamRange> apart;
    for (size_t p : flagged) apart.push_back(params[p]);
    for (int world : {1, 2, 3, 4}) {
      for (int64_t bucket : {1, 64, 100000}) {
        const auto units = chunk_layout(total, bucket, world, apart);
        EXPECT_EQ(units.front().begin, 0);
        EXPECT_EQ(units.back().end, total);
        std::vector<int> owners(static_cast<size_t>(total), 0);
        for (size_t u = 0; u < units.size(); ++u) {
          const UnitLayout& l = units[u];
          if (u > 0) {
            EXPECT_EQ(l.begin, units[u - 1].end);
          }
          EXPECT_EQ(l.chunk, (l.end - l.begin + world - 1) / world);
          EXPECT_LE(l.end - l.begin, std::max<int64_t>(1, bucket / world) * world);
          for (int r = 0; r < world; ++r) {
            for (int64_t e = l.lo(r); e < l.hi(r); ++e) ++owners[static_cast<size_t>(e)];
          }
        }
        for (int64_t e = 0; e < total; ++e) ASSERT_EQ(owners[static_cast<size_t>(e)], 1);
        const auto of = units_of_params(params, units);
        for (size_t p : flagged) {
          EXPECT_EQ(units[of[p].front()].begin, params[p].offset);
          EXPECT_EQ(units[of[p].back()].end, params[p].offset + params[p].numel);
          for (size_t q = 0; q < params.size(); ++q) {
            for (size_t u : of[q]) {
              if (q != p) {
                EXPECT_EQ(std::count(of[p].begin(), of[p].end(), u), 0)
                    << "parameter " << q << " shares a unit with " << p << ", world " << world
                    << ", bucket " << bucket;
              }
            }
          }
        }
      }
    }
  }
}

TEST(Layout, ParametersListEveryChunkUnitTheyOverlap) {
  int64_t total = 0;
  const auto params = params_of({50, 50, 200}, &total);  // offsets 0, 64, 128; total 336
  const auto units = chunk_layout(total, 64, 2);         // units of 64 elements
  const auto of = units_of_params(params, units);
  EXPECT_EQ(of[0], (std::vector<size_t>{0}));
  EXPECT_EQ(of[1], (std::vector<size_t>{1}));
  EXPECT_EQ(of[2], (std::vector<size_t>{2, 3, 4, 5}));
  EXPECT_EQ(units.back().end, total);
  EXPECT_EQ(units.back().chunk, 8);  // 16 elements over 2 ranks
}

}  // namespace
}  // namespace hfrun::dist
