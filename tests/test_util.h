// Shared test helpers: compare a tensor with expected values, make seeded random inputs.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tensor/ops.h"

namespace hfrun::testing {

inline ::testing::AssertionResult tensor_near(const Tensor& t, const std::vector<float>& want,
                                              double atol = 1e-5, double rtol = 1e-5) {
  std::vector<float> got = t.to_vector();
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << t.str() << " has " << got.size() << " elements, want " << want.size();
  }
  for (size_t i = 0; i < got.size(); ++i) {
    bool both_nan = std::isnan(got[i]) && std::isnan(want[i]);
    if (!both_nan && !(std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i]))) {
      return ::testing::AssertionFailure()
             << t.str() << " element " << i << ": got " << got[i] << ", want " << want[i];
    }
  }
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult tensors_near(const Tensor& a, const Tensor& b, double atol = 1e-5,
                                               double rtol = 1e-5) {
  if (a.sizes() != b.sizes()) {
    return ::testing::AssertionFailure() << "shapes differ: " << a.str() << " vs " << b.str();
  }
  return tensor_near(a, b.to_vector(), atol, rtol);
}

// Seeded normal tensor; requires_grad on request.
inline Tensor randn(const Shape& shape, uint64_t seed, bool requires_grad = false) {
  Generator gen(seed);
  Tensor t = ops::randn(shape, gen);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

// Expects `f` to throw an hfrun::Error whose message contains every string of `parts`.
template <typename Fn>
void expect_error_naming(Fn&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const auto& p : parts) EXPECT_NE(e.message().find(p), std::string::npos) << e.message();
  }
}

}  // namespace hfrun::testing

// EXPECT_GRADCHECK(f, inputs...): autograd::gradcheck passes (include autograd/gradcheck.h).
#define EXPECT_GRADCHECK(f, ...)                                             \
  do {                                                                       \
    auto gradcheck_result_ = ::hfrun::autograd::gradcheck(f, {__VA_ARGS__}); \
    EXPECT_TRUE(gradcheck_result_.ok) << gradcheck_result_.message;          \
  } while (0)
