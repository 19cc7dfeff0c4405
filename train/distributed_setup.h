// How train/ sets up distributed training from a TrainConfig: the device train.device names,
// DataParallel (distributed/parallel/data_parallel.h) over the job's Topology, and the group a
// checkpoint is written by.
#pragma once

#include <memory>

#include "distributed/parallel/data_parallel.h"
#include "train/checkpoint.h"
#include "train/config.h"

namespace hfrun::train {

using dist::DataParallel;
using dist::TrainingMemory;

// train.device resolved for this process: cpu; cuda (cuda:LOCAL_RANK modulo the devices
// present); auto (cuda when a CUDA device is present, else cpu). Errors (invalid input) name
// c.source and the key; distributed.backend nccl on the CPU is refused.
Device resolve_train_device(const TrainConfig& c);

// Data parallelism for the ranks this process was started among, as c.distributed says (zero
// stage, tensor parallel size, backend, bucket size, timeout), with training tensors on
// `device`; null on one process.
std::unique_ptr<DataParallel> make_data_parallel(const TrainConfig& c, Device device);

// Checkpoints are written by every rank of the job.
class JobCheckpointGroup : public CheckpointGroup {
 public:
  explicit JobCheckpointGroup(DataParallel& dp) : dp_(dp) {}
  int rank() const override { return dp_.global_rank(); }
  int world() const override { return dp_.global_world(); }
  std::vector<std::string> allgather_strings(const std::string& s) override {
    return dp_.allgather_strings(s);
  }

 private:
  DataParallel& dp_;
};

// Finalizes MPI when distributed training initialised it (idempotent; also run at exit).
void finalize_distributed();

}  // namespace hfrun::train
