// Data-parallel training across processes started by mpirun/srun (hfrun -np N): the MPI world,
// the parameter broadcast at start and the bucketed gradient all-reduce of every optimizer step.
// Every rank applies the identical update, so parameters never diverge.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "tensor/tensor.h"
#include "train/config.h"

namespace hfrun::train {

class DataParallel {
 public:
  // nullptr when this process was not launched as one of several ranks (world == 1). Otherwise
  // initialises MPI once per process (finalized at exit; see finalize_distributed()) and
  // creates the world group. Collectives use distributed.timeout_s.
  static std::unique_ptr<DataParallel> from_launch_env(const TrainConfig& cfg);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const;
  int world() const;
  // Every rank's `flat` becomes rank 0's.
  void broadcast(Tensor& flat);
  // Overlap with backward (DDP): groups `params` (views into `flat_params`) into buckets of
  // distributed.bucket_mb along `flat_grads` and registers grad-ready hooks. After
  // arm_gradient_hooks(), the next backward issues each bucket's average as soon as all its
  // gradients are final; finish_gradient_sync() issues what is left and waits for all of them.
  void attach_gradient_hooks(const std::vector<Tensor>& params, const Tensor& flat_params,
                             const Tensor& flat_grads);
  void arm_gradient_hooks();
  void finish_gradient_sync();
  // The sum of `v` over the ranks.
  double sum(double v);
  void barrier();

  struct Impl;

 private:
  explicit DataParallel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Finalizes MPI when data-parallel training initialised it (idempotent; also run at exit).
void finalize_distributed();

}  // namespace hfrun::train
