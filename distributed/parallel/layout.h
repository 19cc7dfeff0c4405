// Where the communication units of data parallelism lie in a flat parameter/gradient buffer:
// pure arithmetic, shared by DDP and ZeRO and tested without any process group.
//  - DDP buckets (bucket_layout): contiguous ranges of about bucket_elements that end on
//    parameter boundaries, so a bucket is all-reduced once every gradient in it is final.
//  - ZeRO chunks (chunk_layout): ranges of chunk * world elements (the last of a run padded),
//    split into `world` equal chunks; rank r owns chunk r of every unit (FSDP's flat-parameter
//    layout).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace hfrun::dist {

// A parameter's elements in the flat buffer.
struct ParamRange {
  int64_t offset = 0, numel = 0;
};

// A unit: flat elements [begin, end). ZeRO units also have `chunk` elements per rank (their
// padded length is chunk * world, which may reach past end).
struct UnitLayout {
  int64_t begin = 0, end = 0, chunk = 0;
  // Rank r's chunk clipped to the unit: [lo(r), hi(r)) in flat elements (empty past the end).
  int64_t lo(int r) const;
  int64_t hi(int r) const;
};

// DDP: the first bucket starts at 0 and a new one starts at the first parameter at least
// bucket_elements past the current one's start; the last ends at `total`. Parameters are in
// buffer order. A parameter flagged in `alone` (empty: none) has a bucket of its own.
std::vector<UnitLayout> bucket_layout(const std::vector<ParamRange>& params, int64_t total,
                                      int64_t bucket_elements, const std::vector<bool>& alone = {});

// ZeRO: units of bucket_elements / world (at least 1) elements per rank, covering [0, total).
// The ranges in `apart` (in buffer order, disjoint) have units of their own: a unit starts at
// each one's first element, and its last unit ends at its end (padded, as the buffer's last).
std::vector<UnitLayout> chunk_layout(int64_t total, int64_t bucket_elements, int world,
                                     const std::vector<ParamRange>& apart = {});

// For each parameter, the units it overlaps (in unit order).
std::vector<std::vector<size_t>> units_of_params(const std::vector<ParamRange>& params,
                                                 const std::vector<UnitLayout>& units);

}  // namespace hfrun::dist
