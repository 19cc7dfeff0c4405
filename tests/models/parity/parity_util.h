// What the model parity tests share: the reference JSON an environment variable names, id
// tensors from JSON rows, and the relative L2 error against float64 reference values.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "tensor/ops.h"

namespace hfrun::testing {

// The JSON file $var names (null when unset).
inline nlohmann::json load_reference(const char* var) {
  const char* path = std::getenv(var);
  if (path == nullptr) return nullptr;
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// i64 [rows, cols] from a JSON list of equal-length rows.
inline Tensor ints(const nlohmann::json& rows) {
  std::vector<int64_t> v;
  for (const auto& row : rows) {
    for (const auto& x : row) v.push_back(x.get<int64_t>());
  }
  return ops::from_ints(v,
                        {static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())});
}

// ||got - want|| / ||want||.
inline double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace hfrun::testing
