// The ranks' side of the job records (job.h): started, failed and stopped as single tagged
// stderr lines that mpirun relays and the launcher takes out of the output.
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "launcher/job_internal.h"
#include "tensor/threads.h"

namespace hfrun::cli {

namespace {

using detail::kRecordsEnv;
using detail::kRecordTag;

void emit_record(nlohmann::json record) {
  const char* on = std::getenv(kRecordsEnv);
  if (on == nullptr || std::strcmp(on, "1") != 0) return;
  std::string line = std::string(kRecordTag) +
                     record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  // One write() of at most PIPE_BUF bytes, so no other output interleaves with the line.
  if (line.size() > 4000)
    line = std::string(kRecordTag) + nlohmann::json{{"rank", record["rank"]},
                                                    {"kind", record["kind"]},
                                                    {"error", "(record too long)"}}
                                         .dump();
  line += "\n";
  std::fflush(stderr);
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace

void job_rank_started(int rank, int local_world) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // no rank outlives mpirun or its daemon
  // Threads: this host's cores shared by its ranks, unless OMP_NUM_THREADS says otherwise
  // (srun, a bare mpirun or a hostfile run leave it to the rank).
  const char* omp = std::getenv("OMP_NUM_THREADS");
  if (omp == nullptr || *omp == '\0') {
    const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    set_num_threads(std::max(1, cores / std::max(1, local_world)));
  }
  if (getppid() == 1) _exit(1);  // the parent is already gone
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  emit_record({{"rank", rank}, {"kind", "started"}, {"host", host}, {"pid", getpid()}});
}

void job_rank_failed(int rank, const std::string& message) {
  emit_record({{"rank", rank}, {"kind", "failed"}, {"error", message.substr(0, 3000)}});
}

void job_rank_stopped(int rank, int64_t step, const std::string& signal,
                      const std::string& checkpoint) {
  emit_record({{"rank", rank},
               {"kind", "stopped"},
               {"step", step},
               {"signal", signal},
               {"checkpoint", checkpoint}});
}

}  // namespace hfrun::cli
