// The Open MPI backend of ProcessGroup, and the process-wide MPI lifetime.
//
// Each group owns one worker thread that takes ops from a FIFO queue and posts them as
// non-blocking MPI calls in issue order (so every rank posts the same sequence), keeps several in
// flight at once (overlap with compute and with each other) and polls them with MPI_Test, which
// lets it notice an op's deadline.
//
// Timeouts: a timed-out collective cannot be cancelled and leaves MPI unusable, so a timeout is
// fatal for the job. The op's Work fails with "rank R: allreduce #SEQ (N bytes, group G) timed
// out after Ts", the group refuses further ops, and the watchdog prints the message to stderr at
// once. The caller then has MpiInitOptions::abort_grace to catch the rethrown error, report it
// and end the process (finalize_mpi() aborts the job with status 1 at once when a timeout
// happened); when the grace period runs out first, the watchdog calls MPI_Abort(MPI_COMM_WORLD,
// 1), which ends every rank. Either way the job exits non-zero and no rank hangs.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "distributed/comm/process_group.h"

namespace hfrun::dist {

struct MpiInitOptions {
  // Time between a collective timing out and the watchdog's MPI_Abort.
  std::chrono::milliseconds abort_grace{10000};
};

// Calls MPI_Init_thread (asking for MPI_THREAD_MULTIPLE; MPI_THREAD_SERIALIZED is enough, MPI
// calls are then serialised by a lock) and starts the watchdog. Later calls do nothing.
void init_mpi(const MpiInitOptions& opts = {});
bool mpi_is_initialized();  // by init_mpi, and not yet finalized

// The group of all ranks, named "world", over a duplicate of MPI_COMM_WORLD. Calls init_mpi()
// with default options when it was not called yet.
std::shared_ptr<ProcessGroup> create_mpi_world();

// Whether `group` is an MPI group whose large sums and averages go through node shared memory
// (shm_collectives.h); false for any other group.
bool uses_node_shared_memory(const ProcessGroup& group);

// "Open MPI v4.1.4, ..." (MPI_Get_library_version: callable before MPI_Init), first line.
std::string mpi_library_version();

// The baseline of `hfrun bench allreduce`: seconds per blocking in-place MPI_Allreduce (sum)
// of `t` (contiguous f32) over MPI_COMM_WORLD, averaged over `iters` calls after a barrier.
double time_raw_mpi_allreduce(Tensor& t, int iters);

// Drains and stops every live group's worker, frees their communicators and calls
// MPI_Finalize. After a collective timed out, MPI_Abort(MPI_COMM_WORLD, 1) instead (no return).
void finalize_mpi();

}  // namespace hfrun::dist
