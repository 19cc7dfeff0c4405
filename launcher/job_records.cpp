// The ranks' side of the job records (job.h): started, failed and stopped as single tagged
// stderr lines that mpirun relays and the launcher takes out of the output.
#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/stop_signals.h"
#include "distributed/comm/flight_recorder.h"
#include "launcher/job_internal.h"
#include "tensor/threads.h"

namespace hfrun::cli {

namespace {

using detail::kRecordsEnv;
using detail::kRecordTag;

bool records_on();

void emit_record(nlohmann::json record) {
  if (!records_on()) return;
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

bool records_on() {
  const char* on = std::getenv(kRecordsEnv);
  return on != nullptr && std::strcmp(on, "1") == 0;
}

// SIGUSR2 from the launcher (through mpirun) asks for the flight record: the handler only wakes
// a thread, which formats and writes it (the handler may be a sigaction handler, where neither
// is async-signal-safe: common/stop_signals.h).
int g_flight_pipe[2] = {-1, -1};
// Records this process has answered, so that a failing rank can wait for the request.
std::mutex g_flight_mu;
std::condition_variable g_flight_cv;
int g_flight_answers = 0;

void on_flight_signal(int) {
  const int saved = errno;
  const char c = 1;
  [[maybe_unused]] const ssize_t n = ::write(g_flight_pipe[1], &c, 1);
  errno = saved;
}

void start_flight_responder(int rank) {
  if (::pipe2(g_flight_pipe, O_CLOEXEC) != 0) return;
  ::fcntl(g_flight_pipe[1], F_SETFL, O_NONBLOCK);  // a full pipe drops a request, never blocks
  std::thread([rank] {
    char c = 0;
    while (::read(g_flight_pipe[0], &c, 1) > 0 || errno == EINTR) {
      emit_record({{"rank", rank},
                   {"kind", "flight"},
                   {"flight", nlohmann::json::parse(dist::flight_record_json())}});
      {
        std::lock_guard<std::mutex> lock(g_flight_mu);
        ++g_flight_answers;
      }
      g_flight_cv.notify_all();
    }
  }).detach();
  set_signal_handler(SIGUSR2, on_flight_signal);
}

}  // namespace

void job_rank_started(int rank, int local_world) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // no rank outlives mpirun or its daemon
  // Threads: this host's cores shared by its ranks, unless OMP_NUM_THREADS says otherwise
  // (srun, a bare mpirun or a hostfile run leave it to the rank).
  // A rank bound to fewer cores than that (srun --cpu-bind, a bare mpirun's default binding of
  // 2 ranks to a core each) takes no more threads than it may run on.
  const char* omp = std::getenv("OMP_NUM_THREADS");
  if (omp == nullptr || *omp == '\0') {
    const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    int threads = std::max(1, cores / std::max(1, local_world));
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
      threads = std::max(1, std::min(threads, CPU_COUNT(&allowed)));
    }
    set_num_threads(threads);
  }
  if (getppid() == 1) _exit(1);  // the parent is already gone
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  if (records_on()) start_flight_responder(rank);
  emit_record({{"rank", rank}, {"kind", "started"}, {"host", host}, {"pid", getpid()}});
}

void job_rank_failed(int rank, const std::string& message) {
  emit_record({{"rank", rank}, {"kind", "failed"}, {"error", message.substr(0, 3000)}});
  // A collective timed out: the launcher now asks every rank for its flight record. This rank
  // stays until the request reached it too (mpirun forwards it to all ranks at once) and a moment
  // more for the others' answers, so that mpirun does not end them before they answer; bounded,
  // should the request never come.
  if (records_on() && message.find(" timed out after ") != std::string::npos) {
    std::unique_lock<std::mutex> lock(g_flight_mu);
    const int before = g_flight_answers;
    if (g_flight_cv.wait_for(lock, std::chrono::seconds(3),
                             [&] { return g_flight_answers > before; })) {
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  }
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
