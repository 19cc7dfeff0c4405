// Edge cases found in review: rank-0 tensors, size/offset overflow, argument validation, integer
// comparisons and generator state. Each test failed (wrong value, crash or no hfrun::Error)
// before its fix.
#include <cstdint>
#include <memory>
#include <vector>

#include "test_util.h"

namespace hfrun {
namespace {

using testing::tensor_near;

// Dims 0 and -1 are valid for a rank-0 tensor (PyTorch's scalar wrapping), but there is no
// size to read: ops either treat the dim as a no-op or throw, never index an empty shape.
TEST(EdgeCases, RankZeroDimArgumentsNeverIndexAnEmptyShape) {
  Tensor s = ops::scalar(3.0);
  EXPECT_THROW(s.size(0), Error);
  EXPECT_THROW(s.stride(-1), Error);
  EXPECT_EQ(ops::squeeze(s, 0).dim(), 0);
  EXPECT_EQ(ops::transpose(s, 0, -1).dim(), 0);
  EXPECT_THROW(ops::narrow(s, 0, 0, 1), Error);
  EXPECT_THROW(ops::select(s, 0, 0), Error);
  EXPECT_THROW(ops::split(s, 1, 0), Error);
  EXPECT_THROW(ops::max(s, 0), Error);
  EXPECT_THROW(ops::softmax_backward(s, s, 0), Error);
  Tensor sum = ops::sum(s, {0});
  EXPECT_EQ(sum.dim(), 0);
  EXPECT_FLOAT_EQ(sum.item(), 3.0f);
  EXPECT_FLOAT_EQ(ops::mean(s, {-1}, true).item(), 3.0f);
}

TEST(EdgeCases, ShapeWhoseByteSizeOverflowsIsAnError) {
  // 2^32 * 2^32 elements wraps int64 to 0: the tensor must not be created over a tiny block.
  EXPECT_THROW(ops::empty({int64_t{1} << 32, int64_t{1} << 32}), Error);
  EXPECT_THROW(ops::empty({int64_t{1} << 62, 4}, DType::kF32), Error);
}

TEST(EdgeCases, NarrowRangeThatOverflowsIsAnError) {
  Tensor x = ops::zeros({4, 5});
  // start + length wraps negative: must not pass the bounds check as a huge view.
  EXPECT_THROW(ops::narrow(x, 0, 1, INT64_MAX), Error);
}

TEST(EdgeCases, ExpandRejectsNegativeSizes) {
  Tensor x = ops::zeros({1, 3});
  EXPECT_THROW(ops::expand(x, {-5, 3}), Error);
  EXPECT_THROW(ops::expand(x, {2, -2, 3}), Error);
  EXPECT_EQ(ops::expand(x, {2, -1}).sizes(), (Shape{2, 3}));
}

TEST(EdgeCases, ArangeOfNegativeLengthIsAnHfrunError) {
  EXPECT_THROW(ops::arange(-1), Error);
  EXPECT_EQ(ops::arange(0).numel(), 0);
}

TEST(EdgeCases, IntegerComparisonsAreExactBeyondFloatPrecision) {
  // 2^24 + 1 is not representable in f32; comparing through float calls these equal.
  Tensor a = ops::from_ints({16777217, 16777216, int64_t{1} << 40}, {3});
  Tensor b = ops::from_ints({16777216, 16777217, (int64_t{1} << 40) + 1}, {3});
  EXPECT_EQ(ops::eq(a, b).to_int_vector(), (std::vector<int64_t>{0, 0, 0}));
  EXPECT_EQ(ops::gt(a, b).to_int_vector(), (std::vector<int64_t>{1, 0, 0}));
  EXPECT_EQ(ops::lt(a, b).to_int_vector(), (std::vector<int64_t>{0, 1, 1}));
  Tensor a32 = ops::to_dtype(ops::from_ints({16777217}, {1}), DType::kI32);
  Tensor b32 = ops::to_dtype(ops::from_ints({16777216}, {1}), DType::kI32);
  EXPECT_EQ(ops::eq(a32, b32).to_int_vector(), (std::vector<int64_t>{0}));
}

TEST(EdgeCases, GeneratorSetStateDiscardsTheCachedBlock) {
  Generator fresh(11);
  const uint32_t first = fresh.next_u32();
  Generator g(11);
  g.next_u32();  // caches the block of counter 0, one word used
  g.set_state(11, 0);
  EXPECT_EQ(g.next_u32(), first);
  // Restoring another seed must not hand out words of the old seed's block either.
  Generator other(12);
  const uint32_t other_first = other.next_u32();
  g.set_state(12, 0);
  EXPECT_EQ(g.next_u32(), other_first);
}

// A tensor whose storage claims another device (host memory standing in for it): ops must
// refuse to mix it with CPU tensors instead of handing the CPU backend a foreign pointer.
Tensor on_fake_cuda(const Tensor& cpu) {
  auto impl = std::make_shared<TensorImpl>(*cpu.impl_ptr());
  impl->storage = std::make_shared<Storage>(cpu.storage()->data(), cpu.storage()->nbytes(),
                                            Device::cuda(0), cpu.storage());
  return Tensor(impl);
}

TEST(EdgeCases, OpsRejectOperandsOnDifferentDevices) {
  Tensor a = ops::ones({2, 2});
  Tensor b = on_fake_cuda(ops::ones({2, 2}));
  Tensor cond = ops::to_dtype(ops::ones({2, 2}), DType::kBool);
  testing::expect_error_naming([&] { ops::where(cond, a, b); }, {"where", "device"});
  testing::expect_error_naming([&] { ops::where(cond, b, b); }, {"where", "device"});
  testing::expect_error_naming([&] { ops::add_(a, b); }, {"add_", "device"});
  Tensor x = ops::ones({2, 3});
  auto ln = ops::layer_norm(x, Tensor(), Tensor(), 1e-5);
  testing::expect_error_naming(
      [&] {
        ops::layer_norm_backward(on_fake_cuda(ops::ones({2, 3})), x, Tensor(), ln.mean, ln.rstd,
                                 false);
      },
      {"layer_norm_backward", "device"});
}

}  // namespace
}  // namespace hfrun
