// The NCCL process group on one GPU (a one-rank communicator): every collective moves and
// reduces real data on the device, in place and out of place, f32 and bf16, with the Work
// semantics of the MPI backend; wrong tensors are errors naming the op. Skips without a GPU.
#include <gtest/gtest.h>

#include "distributed/comm/nccl_process_group.h"
#include "tensor/device.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace hfrun::dist {
namespace {

class Nccl : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!nccl_available()) GTEST_SKIP() << "no NCCL in this build: " << nccl_version();
    if (cuda_device_count() == 0) GTEST_SKIP() << cuda_status();
    group_ = create_nccl_single(0);
  }
  Tensor random_on_gpu(const Shape& shape, DType dtype, uint64_t seed) {
    Generator gen(seed);
    Tensor cpu = ops::to_dtype(ops::randn(shape, gen), dtype);
    return ops::to_device(cpu, Device::cuda(0));
  }
  static std::vector<float> host(const Tensor& t) {
    return ops::to_dtype(ops::to_device(t, Device::cpu()), DType::kF32).to_vector();
  }
  std::shared_ptr<ProcessGroup> group_;
};

TEST_F(Nccl, OneRankCollectivesKeepOrGatherTheData) {
  EXPECT_EQ(group_->size(), 1);
  EXPECT_EQ(group_->rank(), 0);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    Tensor x = random_on_gpu({1000, 37}, dtype, 1);
    const std::vector<float> want = host(x);
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
      group_->allreduce(x, op)->wait();
      EXPECT_EQ(host(x), want) << reduce_op_name(op) << " " << dtype_name(dtype);
    }
    group_->broadcast(x, 0)->wait();
    EXPECT_EQ(host(x), want);
    Tensor out = ops::to_device(ops::zeros({1000, 37}, dtype), Device::cuda(0));
    group_->allgather(out, x)->wait();
    EXPECT_EQ(host(out), want);
    Tensor rs = ops::to_device(ops::zeros({37000}, dtype), Device::cuda(0));
    group_->reduce_scatter(rs, x)->wait();
    EXPECT_EQ(host(rs), want);
    group_->allgather(x, x)->wait();  // in place: the input is this rank's block
    EXPECT_EQ(host(x), want);
    Tensor out2 = ops::to_device(ops::zeros({1000, 37}, dtype), Device::cuda(0));
    group_->allgather_coalesced({out, out2}, {x, x})->wait();  // one NCCL group
    EXPECT_EQ(host(out), want);
    EXPECT_EQ(host(out2), want);
  }
  group_->barrier()->wait();
}

TEST_F(Nccl, ManyOpsInFlightCompleteInOrder) {
  std::vector<Tensor> xs;
  std::vector<std::shared_ptr<Work>> works;
  for (int i = 0; i < 32; ++i) {
    xs.push_back(random_on_gpu({4096}, DType::kF32, 100 + i));
    works.push_back(group_->allreduce(xs.back(), ReduceOp::kSum));
  }
  for (size_t i = 0; i < works.size(); ++i) {
    works[i]->wait();
    EXPECT_TRUE(works[i]->is_completed());
    EXPECT_EQ(works[i]->info().seq, i + 1);
    EXPECT_EQ(works[i]->info().op, "allreduce");
  }
}

TEST_F(Nccl, SplitMakesAWorkingSubGroup) {
  auto sub = group_->split(0, 0);
  EXPECT_EQ(sub->size(), 1);
  Tensor x = random_on_gpu({64}, DType::kF32, 7);
  const std::vector<float> want = host(x);
  sub->allreduce(x, ReduceOp::kSum)->wait();
  EXPECT_EQ(host(x), want);
}

TEST_F(Nccl, WrongTensorsAreErrorsNamingTheOp) {
  Tensor cpu = ops::zeros({4});
  try {
    group_->allreduce(cpu, ReduceOp::kSum);
    FAIL() << "a CPU tensor was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("allreduce"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cpu"), std::string::npos) << e.what();
  }
  Tensor ints = ops::to_device(ops::zeros({4}, DType::kI32), Device::cuda(0));
  EXPECT_THROW(group_->allreduce(ints, ReduceOp::kAvg), Error);
  Tensor a = random_on_gpu({10}, DType::kF32, 1), b = random_on_gpu({12}, DType::kF32, 2);
  EXPECT_THROW(group_->allgather(b, a), Error);
}

}  // namespace
}  // namespace hfrun::dist
