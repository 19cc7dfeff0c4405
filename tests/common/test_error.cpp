#include <gtest/gtest.h>

#include <string>

#include "common/error.h"

namespace hfrun {
namespace {

TEST(Error, CheckThrowsWithMessageAndLocation) {
  try {
    int k = 3;
    HF_CHECK(k == 4, "matmul: K mismatch ", k, " vs ", 4);
    FAIL() << "HF_CHECK did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "matmul: K mismatch 3 vs 4");
    EXPECT_NE(std::string(e.what()).find("test_error.cpp:"), std::string::npos);
    EXPECT_EQ(e.kind(), ErrorKind::kRuntime);
    EXPECT_GT(e.line(), 0);
  }
}

TEST(Error, CheckInputIsInvalidInputKind) {
  try {
    HF_CHECK_INPUT(false, "config.yaml: key 'train.lr' expected a number");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
  }
}

TEST(Error, CheckPassesSilently) {
  EXPECT_NO_THROW(HF_CHECK(1 + 1 == 2, "never"));
}

}  // namespace
}  // namespace hfrun
