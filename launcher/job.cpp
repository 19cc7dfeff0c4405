// The launcher's job: the mpirun command line, and run_job's attempts and restarts (the pieces
// are in job_internal.h).
#include "launcher/job.h"

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

#include "common/error.h"
#include "common/stop_signals.h"
#include "launcher/job_internal.h"

namespace hfrun::cli {

namespace fs = std::filesystem;

namespace {

std::string find_mpirun() {
  if (const char* e = std::getenv("MPIEXEC"); e != nullptr && *e != '\0') return e;
  if (const char* path = std::getenv("PATH")) {
    std::stringstream ss(path);
    std::string dir;
    while (std::getline(ss, dir, ':')) {
      const fs::path p = fs::path(dir.empty() ? "." : dir) / "mpirun";
      if (access(p.c_str(), X_OK) == 0) return p.string();
    }
  }
  HF_CHECK_INPUT(false, "multi-process runs need mpirun (Open MPI) on PATH or MPIEXEC set");
  return {};
}

// GLIBC_TUNABLES for the ranks: the user's, with glibc.malloc.hugetlb=1 added unless they set
// it. Open MPI allocates its collectives' temporary buffers (a bucket's size) with malloc, which
// maps them fresh every call; faulting them in 4 KiB pages cost 0.35 s of a 157 MB all-reduce
// on a 2-core VM (0.40 s against 0.056 s with the tunable, MPI_Allreduce alike). With it glibc
// asks for transparent huge pages on its mappings (glibc >= 2.35; older ones ignore it).
std::string rank_glibc_tunables() {
  const char* user = std::getenv("GLIBC_TUNABLES");
  std::string t = user != nullptr ? user : "";
  if (t.find("glibc.malloc.hugetlb") != std::string::npos) return t;
  return t.empty() ? "glibc.malloc.hugetlb=1" : t + ":glibc.malloc.hugetlb=1";
}

std::string self_path() {
  std::error_code ec;
  const auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("hfrun") : p.string();
}

}  // namespace

std::vector<std::string> mpirun_command(int np, bool oversubscribe, const std::string& hostfile,
                                        int per_node) {
  std::vector<std::string> cmd = {find_mpirun()};
  if (geteuid() == 0) cmd.push_back("--allow-run-as-root");
  if (oversubscribe) cmd.push_back("--oversubscribe");
  cmd.insert(cmd.end(), {"-np", std::to_string(np)});
  if (per_node > 0)
    cmd.insert(cmd.end(), {"--map-by", "ppr:" + std::to_string(per_node) + ":node"});
  if (!hostfile.empty()) {
    // Other hosts have other core counts: each rank takes its host's cores / local ranks
    // (job_rank_started), unless the user exported OMP_NUM_THREADS.
    cmd.insert(cmd.end(), {"--hostfile", hostfile});
    if (std::getenv("OMP_NUM_THREADS") != nullptr) cmd.insert(cmd.end(), {"-x", "OMP_NUM_THREADS"});
    // Reaches the other hosts' ranks only when passed on (the groups within a node agree on it).
    if (std::getenv("HFRUN_SHM_COLLECTIVES") != nullptr)
      cmd.insert(cmd.end(), {"-x", "HFRUN_SHM_COLLECTIVES"});
  } else {
    const char* user = std::getenv("OMP_NUM_THREADS");
    const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    cmd.insert(cmd.end(),
               {"-x", "OMP_NUM_THREADS=" + (user != nullptr && *user != '\0'
                                                ? std::string(user)
                                                : std::to_string(std::max(1, cores / np)))});
  }
  // Open MPI binds each rank to one core when np <= 2 (to a socket beyond): a rank's OpenMP
  // threads would share that core, and the thread that progresses its collectives could not
  // use a core the other rank leaves idle. Ranks float unless the user asks for a binding.
  if (std::getenv("OMPI_MCA_hwloc_base_binding_policy") == nullptr)
    cmd.insert(cmd.end(), {"--bind-to", "none"});
  cmd.insert(cmd.end(), {"-x", "GLIBC_TUNABLES=" + rank_glibc_tunables()});
  cmd.push_back(self_path());
  return cmd;
}

int run_job(std::vector<std::string> argv, const JobOptions& options) {
  argv.insert(argv.begin() + 1, {"--tag-output", "-x", std::string(detail::kRecordsEnv) + "=1",
                                 "-x", "HFRUN_RESTART_COUNT"});
  // rsh agents (ssh) that mpirun leaves behind are re-parented to us, so they can be ended.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  int code = 0;
  for (int attempt = 0;; ++attempt) {
    ::setenv("HFRUN_RESTART_COUNT", std::to_string(attempt).c_str(), 1);
    const detail::Attempt a = detail::run_mpirun(argv, options);
    if (WIFEXITED(a.status) && WEXITSTATUS(a.status) == 0 && a.launch_timeout_s == 0 &&
        a.stop_signal == 0) {
      code = 0;
      break;
    }
    if (const std::string stop = detail::stop_report(a); !stop.empty()) {
      std::cerr << stop << "\n" << std::flush;
      code = kExitStopped;
      break;
    }
    const auto [report, c] = detail::failure_report(a, options);
    code = c;
    std::cerr << report << "\n";
    for (const std::string& line : a.mpirun_lines) std::cerr << "mpirun: " << line << "\n";
    std::cerr << std::flush;
    if (a.stop_signal != 0 || code == 2 || attempt >= options.max_restarts) break;
    std::cerr << "hfrun: restarting the job (restart " << attempt + 1 << " of "
              << options.max_restarts << "); it resumes from the last committed checkpoint\n"
              << std::flush;
  }
  return code;
}

}  // namespace hfrun::cli
