// train.device's resolution and DataParallel from a TrainConfig.
#include "train/distributed_setup.h"

#include <algorithm>
#include <vector>

#include "common/error.h"
#include "distributed/comm/env.h"
#include "distributed/parallel/topology.h"
#include "tensor/ops.h"

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

std::unique_ptr<DataParallel> make_data_parallel(const TrainConfig& cfg, Device device) {
  dist::TopologyOptions o;
  o.tensor_parallel = static_cast<int>(cfg.distributed.tensor_parallel);
  o.backend = cfg.distributed.backend;
  o.device = device;
  o.timeout_s = cfg.distributed.timeout_s;
  o.debug = cfg.distributed.debug;
  o.source = cfg.source;
  dist::DataParallelOptions d;
  d.zero_stage = static_cast<int>(cfg.distributed.zero_stage);
  d.bucket_mb = cfg.distributed.bucket_mb;
  d.reduce_dtype = cfg.distributed.reduce_dtype == "bf16" ? DType::kBF16 : DType::kF32;
  return DataParallel::create(dist::Topology::from_launch_env(o), d);
}

void finalize_distributed() {
  dist::finalize_distributed();
}

}  // namespace hfrun::train
