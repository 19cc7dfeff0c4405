// Shared test helpers: compare a tensor with expected values, make seeded random inputs.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
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

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("hfrun_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }
  std::string write(const std::string& name, std::string_view bytes) const {
    std::filesystem::path p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream out(p, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p.string();
  }
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(path_)) {
      names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::filesystem::path path_;
};

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

// Expects an hfrun::Error of kind kInvalidInput whose message contains every part.
template <typename Fn>
void expect_input_error(Fn&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << e.message();
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
