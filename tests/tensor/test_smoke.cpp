#include "test_util.h"
TEST(Smoke, Zeros) { EXPECT_TRUE(hfrun::testing::tensor_near(hfrun::ops::zeros({2}), {0, 0})); }
