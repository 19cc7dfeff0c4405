// A ProcessGroup for device (GPU) tensors over a group that takes CPU tensors only (MPI): each
// op copies its device tensors into host buffers, runs the inner group's op, waits for it and
// copies the result back, so the returned Work is already complete. CPU tensors pass straight
// through. What `distributed.backend: mpi` uses for CUDA training: machines without NCCL, and
// several ranks sharing one GPU (which NCCL refuses); NCCL (backend auto) is the fast path.
#pragma once

#include <memory>

#include "distributed/comm/process_group.h"

namespace hfrun::dist {

std::shared_ptr<ProcessGroup> stage_through_host(std::shared_ptr<ProcessGroup> inner);

}  // namespace hfrun::dist
