// The job's process groups, kept apart from the parallel strategies that use them: the MPI world
// of the ranks mpirun/srun started (initialised once per process), its split into
// tensor-parallel groups of T consecutive ranks and data-parallel groups of the ranks with the
// same tensor-parallel rank, and for each the group that moves the training tensors on the
// device (the MPI group itself on the CPU; NCCL, or MPI staged through host memory, on GPUs).
// Host values (loss sums, stop flags, strings) always go over MPI.
//
// Nothing here reads a training config: the caller (train/) fills TopologyOptions.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "distributed/comm/process_group.h"
#include "nn/tensor_parallel.h"
#include "tensor/tensor.h"

namespace hfrun::dist {

struct TopologyOptions {
  int tensor_parallel = 1;        // ranks per tensor-parallel group; divides the world
  std::string backend = "auto";   // auto | mpi | nccl: how device tensors move
  Device device = Device::cpu();  // where this rank's training tensors live
  double timeout_s = 300;         // every collective's deadline
  // distributed.debug: every collective first checks that all ranks of its group call the same
  // op on the same sizes (distributed/comm/checked_process_group.h); costs a small allgather
  // per collective and the overlap of gradient communication.
  bool debug = false;
  // Names the configuration in errors ("train.yaml", "AcceleratorOptions"); the keys named are
  // train.yaml's (distributed.tensor_parallel, distributed.backend, train.device).
  std::string source = "distributed";
};

class Topology {
 public:
  // Null when this process was not started as one of several ranks. Otherwise initialises MPI
  // once per process and builds the groups; every rank must call it (collective). Invalid
  // options (a tensor_parallel that does not divide the world, ranks on different kinds of
  // device, NCCL for ranks sharing a GPU, ...) are invalid-input errors naming source and key.
  static std::unique_ptr<Topology> from_launch_env(const TopologyOptions& options);
  ~Topology();
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  // The whole job: ranks g*T .. g*T+T-1 form tensor-parallel group g; ranks with equal g % T a
  // data-parallel group.
  int global_rank() const;
  int global_world() const;
  int data_rank() const;
  int data_world() const;
  int tensor_parallel_rank() const;
  int tensor_parallel_size() const;
  Device device() const;
  const CollectiveOptions& options() const;
  // How the data-parallel group moves the training tensors: "NCCL", "node shared memory"
  // (its ranks all on this node, distributed/comm/shm_collectives.h) or "Open MPI", the last
  // two followed by " (staged through host memory)" on GPUs without NCCL.
  const std::string& transport() const;

  // MPI groups (host values).
  ProcessGroup& global();
  ProcessGroup& data();
  ProcessGroup* tensor();  // null without tensor parallelism
  // The groups that move training tensors on device().
  ProcessGroup& data_device();
  ProcessGroup* tensor_device();  // null without tensor parallelism
  // The tensor-parallel collectives models use (nn/tensor_parallel.h), over tensor_device();
  // null without tensor parallelism.
  nn::TensorParallelGroup* tensor_parallel();

  // Sum of `v` over the data-parallel group, exact and order-fixed (every rank adds the same
  // values in rank order).
  double sum_over_data(double v);
  // The largest `v` over the whole job.
  int max_over_job(int v);
  // Every rank's `s` (the whole job), in global rank order.
  std::vector<std::string> allgather_strings(const std::string& s);
  // Every tensor-parallel rank's `local` (sizes may differ) as 1-D tensors, in tensor-parallel
  // rank order; {local} without tensor parallelism.
  std::vector<Tensor> gather_tensor_parallel(const Tensor& local);
  void barrier();

  struct Impl;

 private:
  explicit Topology(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Sum of doubles over a group, exact and order-fixed: every rank adds the same values in rank
// order.
double sum_over(ProcessGroup& group, double v, const CollectiveOptions& opts);

// Finalizes MPI when a Topology initialised it (idempotent; also run at exit).
void finalize_distributed();

}  // namespace hfrun::dist
