#include "distributed/parallel/layout.h"

#include <algorithm>

#include "common/error.h"

namespace hfrun::dist {

int64_t UnitLayout::lo(int r) const {
  return std::min(end, begin + r * chunk);
}

int64_t UnitLayout::hi(int r) const {
  return std::min(end, begin + (r + 1) * chunk);
}

std::vector<UnitLayout> bucket_layout(const std::vector<ParamRange>& params, int64_t total,
                                      int64_t bucket_elements, const std::vector<bool>& alone) {
  HF_CHECK(bucket_elements >= 1, "bucket_layout: bucket_elements must be positive");
  HF_CHECK(alone.empty() || alone.size() == params.size(), "bucket_layout: ", alone.size(),
           " flags for ", params.size(), " parameters");
  std::vector<UnitLayout> units;
  int64_t begin = 0;
  bool previous_alone = false;
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamRange& p = params[i];
    const bool own = !alone.empty() && alone[i];
    if (units.empty() || own || previous_alone || p.offset - begin >= bucket_elements) {
      begin = p.offset;
      if (!units.empty()) units.back().end = begin;
      units.push_back(UnitLayout{begin, begin, 0});
    }
    previous_alone = own;
  }
  if (!units.empty()) {
    units.back().end = total;
    units.front().begin = 0;
  }
  return units;
}

std::vector<UnitLayout> chunk_layout(int64_t total, int64_t bucket_elements, int world,
                                     const std::vector<ParamRange>& apart) {
  HF_CHECK(world >= 1 && bucket_elements >= 1, "chunk_layout: world ", world,
           " and bucket_elements ", bucket_elements, " must be positive");
  const int64_t chunk_target = std::max<int64_t>(1, bucket_elements / world);
  std::vector<UnitLayout> units;
  // Units of chunk_target * world elements from `from` up to `to` (the last one shorter).
  const auto cut = [&](int64_t from, int64_t to) {
    for (int64_t begin = from; begin < to; begin += chunk_target * world) {
      UnitLayout u;
      u.begin = begin;
      u.end = std::min(to, begin + chunk_target * world);
      u.chunk = (u.end - u.begin + world - 1) / world;
      units.push_back(u);
    }
  };
  int64_t at = 0;
  for (const ParamRange& r : apart) {
    HF_CHECK(r.offset >= at && r.numel >= 0 && r.offset + r.numel <= total, "chunk_layout: range [",
             r.offset, ", ", r.offset + r.numel, ") is out of order or past ", total);
    cut(at, r.offset);
    cut(r.offset, r.offset + r.numel);
    at = r.offset + r.numel;
  }
  cut(at, total);
  return units;
}

std::vector<std::vector<size_t>> units_of_params(const std::vector<ParamRange>& params,
                                                 const std::vector<UnitLayout>& units) {
  std::vector<std::vector<size_t>> out(params.size());
  for (size_t p = 0; p < params.size(); ++p) {
    for (size_t u = 0; u < units.size(); ++u) {
      if (units[u].begin < params[p].offset + params[p].numel && params[p].offset < units[u].end) {
        out[p].push_back(u);
      }
    }
  }
  return out;
}

}  // namespace hfrun::dist
