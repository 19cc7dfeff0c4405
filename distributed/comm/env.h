// How this process was launched, read from the launcher's environment variables, and torchrun's
// variables (RANK, WORLD_SIZE, ...) exported from it for user code.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace hfrun::dist {

struct LaunchEnv {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  int local_world = 1;
  std::string launcher = "single";  // "mpirun", "srun" or "single"
  std::string master_addr;          // rank 0's host when the environment names it, else empty
};

// Looks up one variable; std::nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// In order: OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK/LOCAL_SIZE (mpirun; wins over SLURM_*, which
// are stale under mpirun inside sbatch), then PMIX_RANK (world size from SLURM_NTASKS under
// srun --mpi=pmix, else OMPI_COMM_WORLD_SIZE), then SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID
// inside an srun step (SLURM_STEP_ID set; an sbatch script alone is not a launch), else single.
// Throws an hfrun::Error (invalid input) naming the variable when one is malformed.
LaunchEnv parse_launch_env(const EnvLookup& lookup);
LaunchEnv detect_launch_env();  // parse_launch_env over this process's environment

// The first host of a Slurm node list: "gpu[03-05,9],cpu1" -> "gpu03".
std::string first_slurm_host(const std::string& nodelist);

// Sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE from `env`, and MASTER_ADDR (env's
// master_addr, else 127.0.0.1) and MASTER_PORT (29500) when they are unset.
void export_torchrun_env(const LaunchEnv& env);

}  // namespace hfrun::dist
