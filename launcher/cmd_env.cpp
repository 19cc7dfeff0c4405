// hfrun env: what this build and machine provide, as JSON-ish lines a bug report can paste.
#include <iostream>

#include "common/error.h"
#include "common/version.h"
#include "distributed/comm/env.h"
#include "distributed/comm/mpi_process_group.h"
#include "distributed/comm/nccl_process_group.h"
#include "launcher/commands.h"
#include "tensor/device.h"
#include "tensor/threads.h"

namespace hfrun::cli {

namespace {

// Where this process sits when started by mpirun/srun (rank detection as training does it).
std::string launch_line() {
  const dist::LaunchEnv e = dist::detect_launch_env();
  if (e.world <= 1) return "single process (not under mpirun/srun)";
  return "rank " + std::to_string(e.rank) + " of " + std::to_string(e.world) + " (local rank " +
         std::to_string(e.local_rank) + " of " + std::to_string(e.local_world) + ") via " +
         e.launcher + (e.master_addr.empty() ? "" : ", master " + e.master_addr);
}

}  // namespace

int cmd_env(const Args& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << "Usage: hfrun env\nPrints hfrun, oneDNN, MPI and CUDA versions, the CPU ISA "
                 "oneDNN uses and the thread count.\n";
    return 0;
  }
  HF_CHECK_INPUT(args.empty(), "env: unexpected argument '", args[0], "'");
  CpuRuntimeInfo info = cpu_runtime_info();
  std::cout << "hfrun:        " << version() << "\n"
            << "onednn:       " << info.onednn_version << "\n"
            << "cpu isa:      " << info.onednn_isa << "\n"
            << "cpu threads:  " << info.threads << " (OMP_NUM_THREADS or all cores)\n"
            << "mpi:          " << dist::mpi_library_version() << "\n"
            << "launch:       " << launch_line() << "\n"
            << "cuda:         " << cuda_status() << "\n"
            << "nccl:         " << dist::nccl_version() << "\n";
  return 0;
}

}  // namespace hfrun::cli
