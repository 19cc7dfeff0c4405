// Running a multi-rank job under mpirun and telling the user what happened to it.
//
// The launcher (hfrun -np N) runs mpirun with HFRUN_RECORDS=1 for its ranks: each rank then
// writes records as single stderr lines (started: host and pid; failed: its error; stopped: the
// step and checkpoint of a graceful stop), which mpirun relays from every node and the launcher
// takes out of the output. It relays the ranks' other output line by line with a "[rank R] "
// prefix, turns SIGTERM/SIGUSR1/SIGINT into a graceful stop (it sends SIGUSR1 to mpirun, which
// forwards it to every rank; the ranks agree on a step, commit its checkpoint and exit
// kExitStopped; a second SIGINT ends every rank at once), ranks die with their parent, and when
// the job fails it prints one report line first, then mpirun's own lines:
//   hfrun: job failed: rank 1 (host node3, pid 4242): signal 9 (Killed)
//   hfrun: job failed: rank 0 (host node1, pid 4100): exit 1: <the rank's error message>
//   hfrun: job failed: lost node n7: mpirun lost contact with its daemon there (...)
//   hfrun: job failed: a node never came up (ranks 4, 5 never started): ...: <ssh's error>
//   hfrun: job failed: ranks 4, 5 did not start within 300 s (distributed.timeout_s): ...
// --max-restarts K starts the job again (it resumes from the last committed checkpoint) after a
// failure that is not a configuration error, up to K times.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hfrun::cli {

// In a rank: records host and pid for the launcher (when it started the job), makes this process
// die when its parent (mpirun's daemon) dies, so no rank outlives its job, and without
// OMP_NUM_THREADS uses this host's cores / local_world threads.
void job_rank_started(int rank, int local_world);
// In a rank that is about to exit with an error: records the message for the launcher's report.
void job_rank_failed(int rank, const std::string& message);
// In a rank that stopped early on a signal after committing `checkpoint` at step `step`.
void job_rank_stopped(int rank, int64_t step, const std::string& signal,
                      const std::string& checkpoint);

// mpirun ... hfrun: the command line that starts `np` ranks of this executable (the caller
// appends the subcommand and its arguments): --allow-run-as-root as root, --oversubscribe on
// request, --hostfile when given, OMP_NUM_THREADS = the user's or cores / np on one host (with a
// hostfile each rank sizes itself: job_rank_started); per_node > 0 places that many ranks on each
// node (torchrun's --nproc-per-node with --nnodes). mpirun is $MPIEXEC or the first on PATH (an
// input error when there is none). Ranks are not bound to cores (--bind-to none) unless
// OMPI_MCA_hwloc_base_binding_policy says otherwise, and run with glibc.malloc.hugetlb=1 added
// to GLIBC_TUNABLES (MPI's large temporary buffers in huge pages).
std::vector<std::string> mpirun_command(int np, bool oversubscribe, const std::string& hostfile,
                                        int per_node = 0);

struct JobOptions {
  int max_restarts = 0;
  int ranks = 0;  // the job's ranks (reports; a stop signal waits until all started; 0: unknown)
  double launch_timeout_s = 0;  // > 0: end the job when not every rank started within this
};

// Runs `mpirun_argv` (without the -x HFRUN_RECORDS, which this adds) to completion, with
// restarts (each attempt sees HFRUN_RESTART_COUNT); returns the exit code for hfrun: 0, 2 for
// a configuration error, kExitStopped when the ranks stopped on a signal with a committed
// checkpoint, else non-zero.
int run_job(std::vector<std::string> mpirun_argv, const JobOptions& options);

}  // namespace hfrun::cli
