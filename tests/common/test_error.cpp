#include <gtest/gtest.h>
#include "common/error.h"
TEST(Error, Smoke) { EXPECT_THROW(HF_CHECK(false, "x"), hfrun::Error); }
