#include "test_util.h"
#include "autograd/functions.h"
TEST(Smoke, Add) { EXPECT_TRUE(hfrun::testing::tensor_near(hfrun::add(hfrun::ops::ones({2}), hfrun::ops::ones({2})), {2, 2})); }
