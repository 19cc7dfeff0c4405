#include <gtest/gtest.h>

#include <cstdlib>
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
    EXPECT_EQ(std::string(e.what()), e.message());  // no source location for users
    EXPECT_NE(std::string(e.file()).find("test_error.cpp"), std::string::npos);
    EXPECT_EQ(e.kind(), ErrorKind::kRuntime);
    EXPECT_GT(e.line(), 0);
  }
  // HFRUN_DEBUG=1: the location that raised it, for bug reports.
  ::setenv("HFRUN_DEBUG", "1", 1);
  try {
    HF_CHECK(false, "boom");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("boom [test_error.cpp:"), std::string::npos) << e.what();
  }
  ::unsetenv("HFRUN_DEBUG");
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
