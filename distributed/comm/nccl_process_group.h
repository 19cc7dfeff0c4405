// The NCCL backend of ProcessGroup, for CUDA tensors (one rank per GPU).
//
// A group's communicator is created from an ncclUniqueId that its rank 0 makes and a bootstrap
// group (MPI) broadcasts; split() makes sub-groups with ncclCommSplit. Collectives run on the
// group's own CUDA stream: each op first makes that stream wait (cudaStreamWaitEvent) for the
// work already queued on the tensor's compute stream, so no host synchronisation is needed to
// issue it, and records a completion event that the group's poller thread watches. Work::wait()
// returns once that event completed (and rethrows a failure).
//
// Timeouts: when an op's event has not completed by its deadline, the poller aborts the
// communicator (ncclCommAbort, which also unblocks the kernels waiting on a dead peer), fails
// the op and everything queued behind it with "rank R: allreduce #SEQ (N bytes, group G) timed
// out after Ts", and reports it like the MPI backend, so the job ends instead of hanging.
#pragma once

#include <memory>
#include <string>

#include "distributed/comm/process_group.h"

namespace hfrun::dist {

// True when this build has the NCCL backend (CUDA + NCCL found at configure time).
bool nccl_available();
// "2.28.3" (the library's version), or a reason it is unavailable.
std::string nccl_version();

// A group over every rank of `bootstrap`, using CUDA device `device` on this rank (by
// convention the launcher's local rank). Collective over `bootstrap`.
std::shared_ptr<ProcessGroup> create_nccl_group(ProcessGroup& bootstrap, int device,
                                                const std::string& name = "nccl_world",
                                                const CollectiveOptions& opts = {});
// A one-rank group on `device` (no bootstrap): tests and single-GPU runs.
std::shared_ptr<ProcessGroup> create_nccl_single(int device);

}  // namespace hfrun::dist
