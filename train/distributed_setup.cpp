// DataParallel over the job's Topology (distributed/parallel/topology.h: the process groups and
// host collectives), and train.device's resolution.
#include "train/distributed_setup.h"

#include <algorithm>
#include <vector>

#include "common/error.h"
#include "distributed/comm/env.h"
#include "distributed/parallel/topology.h"
#include "tensor/ops.h"
#include "train/data_parallel_impl.h"

namespace hfrun::train {

// train.device: cpu; cuda (cuda:LOCAL_RANK modulo the devices present); auto (cuda when a CUDA
// device is present, else cpu). distributed.backend nccl on the CPU is refused (auto picks NCCL
// for CUDA runs, MPI for CPU runs).
Device resolve_train_device(const TrainConfig& c) {
  const std::string& d = c.train.device;
  const int n = cuda_device_count();
  if (d == "cpu" || (d == "auto" && n == 0)) {
    HF_CHECK_INPUT(c.distributed.backend != "nccl", c.source, ": distributed.backend nccl needs a ",
                   "GPU, but train.device ", d, " resolved to the CPU (", cuda_status(),
                   "); use distributed.backend: auto or mpi");
    return Device::cpu();
  }
  HF_CHECK_INPUT(d == "cuda" || d == "auto", c.source, ": train.device: '", d,
                 "' is not one of auto | cpu | cuda");
  HF_CHECK_INPUT(n > 0, c.source, ": train.device cuda: ", cuda_status());
  const dist::LaunchEnv env = dist::detect_launch_env();
  return Device::cuda(env.local_rank % n);
}

DataParallel::DataParallel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DataParallel::~DataParallel() = default;

void finalize_distributed() {
  dist::finalize_distributed();
}

std::unique_ptr<DataParallel> DataParallel::from_launch_env(const TrainConfig& cfg, Device device) {
  dist::TopologyOptions o;
  o.tensor_parallel = static_cast<int>(cfg.distributed.tensor_parallel);
  o.backend = cfg.distributed.backend;
  o.device = device;
  o.timeout_s = cfg.distributed.timeout_s;
  o.source = cfg.source;
  std::unique_ptr<dist::Topology> topo = dist::Topology::from_launch_env(o);
  if (!topo) return nullptr;
  auto impl = std::make_unique<Impl>();
  impl->world = &topo->data();
  impl->tp = topo->tensor();
  impl->tensor_world = &topo->data_device();
  impl->device = topo->device();
  impl->opts = topo->options();
  impl->topo = std::move(topo);
  impl->stage = static_cast<int>(cfg.distributed.zero_stage);
  impl->rank = impl->world->rank();
  impl->size = impl->world->size();
  impl->bucket_elements = std::max<int64_t>(
      1, static_cast<int64_t>(cfg.distributed.bucket_mb * 1024.0 * 1024.0 / sizeof(float)));
  auto dp = std::unique_ptr<DataParallel>(new DataParallel(std::move(impl)));
  dp->impl_->checkpoint_group = std::make_unique<GlobalCheckpointGroup>(dp.get());
  return dp;
}

int DataParallel::global_rank() const {
  return impl_->topo->global_rank();
}

int DataParallel::global_world() const {
  return impl_->topo->global_world();
}

int DataParallel::tensor_parallel_rank() const {
  return impl_->topo->tensor_parallel_rank();
}

int DataParallel::tensor_parallel_size() const {
  return impl_->topo->tensor_parallel_size();
}

nn::TensorParallelGroup* DataParallel::tensor_parallel() {
  return impl_->topo->tensor_parallel();
}

CheckpointGroup& DataParallel::checkpoint_group() {
  return *impl_->checkpoint_group;
}

std::vector<Tensor> DataParallel::gather_tensor_parallel(const Tensor& local) {
  return impl_->topo->gather_tensor_parallel(local);
}

int DataParallel::rank() const {
  return impl_->rank;
}

int DataParallel::world() const {
  return impl_->size;
}

int DataParallel::zero_stage() const {
  return impl_->stage;
}

void DataParallel::broadcast(Tensor& flat) {
  impl_->tensor_world->broadcast(flat, 0, impl_->opts)->wait();
}

double DataParallel::sum(double v) {
  return impl_->topo->sum_over_data(v);
}

int DataParallel::max_over_job(int v) {
  return impl_->topo->max_over_job(v);
}

std::vector<std::string> DataParallel::allgather_strings(const std::string& s) {
  return impl_->topo->allgather_strings(s);
}

void DataParallel::barrier() {
  impl_->topo->barrier();
}

}  // namespace hfrun::train
