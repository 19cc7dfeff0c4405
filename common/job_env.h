// This process's rank in a job, from the variables its launcher sets (Open MPI, PMIx, Slurm,
// torchrun), before any communicator exists.
#pragma once

namespace hfrun {

// The rank, or -1 outside a job.
int job_rank_from_env();

}  // namespace hfrun
