// MPI's process-wide lifetime (init, finalize), the registry of live groups and the watchdog
// that ends the job after a collective timed out (policy: mpi_process_group.h).
#include "distributed/comm/mpi_runtime.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "common/error.h"
#include "distributed/comm/mpi_process_group.h"

namespace hfrun::dist {
namespace detail {
namespace {

struct Runtime {
  std::mutex mu;
  std::condition_variable cv;
  bool initialized = false;
  bool finalized = false;
  bool we_initialized = false;  // MPI_Finalize is ours to call
  bool serialized = false;      // MPI_THREAD_SERIALIZED: every MPI call takes call_mu
  int rank = 0;
  std::chrono::milliseconds abort_grace{10000};
  std::vector<MpiGroupHandle*> groups;
  bool timed_out = false;
  std::string timeout_message;
  std::chrono::steady_clock::time_point abort_at;
  bool stop_watchdog = false;
  std::mutex call_mu;
};

// Never destroyed: the detached watchdog thread may outlive main().
Runtime& rt() {
  static Runtime* r = new Runtime;
  return *r;
}

// How long MPI_Abort may take to end this process before it ends itself.
constexpr std::chrono::seconds kAbortExitAfter{5};

[[noreturn]] void abort_job(const std::string& why) {
  const int rank = rt().rank;
  std::fprintf(stderr, "hfrun: rank %d: aborting the job (MPI_Abort, exit status 1): %s\n", rank,
               why.c_str());
  std::fflush(stderr);
  // MPI_Abort normally ends every rank within a second. Open MPI 4.1 was once seen (CI,
  // 2026-12-07, 1 run in ~30) to leave the job standing after it: mpiexec logged "ORTE_ERROR_LOG:
  // Data unpack had inadequate space ... show_help.c" and never ended the ranks. Whatever MPI
  // does, this process ends, non-zero, so the launcher sees a failed rank and ends the job.
  std::thread([rank] {
    std::this_thread::sleep_for(kAbortExitAfter);
    std::fprintf(stderr,
                 "hfrun: rank %d: MPI_Abort has not ended the process after %llds; exiting\n", rank,
                 static_cast<long long>(kAbortExitAfter.count()));
    std::fflush(stderr);
    std::_Exit(1);
  }).detach();
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);  // MPI_Abort does not return; this is for an MPI that does
}

void watchdog_main() {
  Runtime& r = rt();
  std::unique_lock<std::mutex> lock(r.mu);
  r.cv.wait(lock, [&] { return r.stop_watchdog || r.timed_out; });
  if (r.stop_watchdog) return;
  if (r.cv.wait_until(lock, r.abort_at, [&] { return r.stop_watchdog; })) return;
  std::string why = r.timeout_message + " (not handled within the abort grace period of " +
                    format_seconds(r.abort_grace) + ")";
  lock.unlock();
  abort_job(why);
}

}  // namespace

void register_group(MpiGroupHandle* g) {
  std::lock_guard<std::mutex> lock(rt().mu);
  rt().groups.push_back(g);
}

void unregister_group(MpiGroupHandle* g) {
  std::lock_guard<std::mutex> lock(rt().mu);
  auto& v = rt().groups;
  v.erase(std::remove(v.begin(), v.end(), g), v.end());
}

void check_mpi(int rc, const char* call, const char* file, int line) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  throw Error(
      hfrun::detail::concat("rank ", rt().rank, ": ", call, " failed: ", std::string(text, len)),
      file, line);
}

std::unique_lock<std::mutex> mpi_call_lock() {
  if (!rt().serialized) return {};
  return std::unique_lock<std::mutex>(rt().call_mu);
}

int world_rank() {
  return rt().rank;
}

void report_timeout(const std::string& message) {
  Runtime& r = rt();
  {
    std::lock_guard<std::mutex> lock(r.mu);
    if (r.timed_out) return;  // the first timeout decides; later ones follow from it
    r.timed_out = true;
    r.timeout_message = message;
    r.abort_at = std::chrono::steady_clock::now() + r.abort_grace;
    std::fprintf(stderr,
                 "hfrun watchdog: %s; MPI cannot recover from a timed-out collective, the job "
                 "will be aborted in %s\n",
                 message.c_str(), format_seconds(r.abort_grace).c_str());
    std::fflush(stderr);
  }
  r.cv.notify_all();
}

bool timeout_reported() {
  std::lock_guard<std::mutex> lock(rt().mu);
  return rt().timed_out;
}

}  // namespace detail

void init_mpi(const MpiInitOptions& opts) {
  detail::Runtime& r = detail::rt();
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.initialized) return;
  HF_CHECK(!r.finalized, "init_mpi: MPI was already finalized in this process");
  HF_CHECK(opts.abort_grace.count() >= 0, "init_mpi: abort_grace must be >= 0");
  int already = 0;
  HF_MPI_CHECK(MPI_Initialized(&already));
  int provided = 0;
  if (already) {
    HF_MPI_CHECK(MPI_Query_thread(&provided));
  } else {
    // Our groups run collectives as non-blocking MPI calls (overlap with backward, deadlines).
    // Open MPI's default choice for MPI_Iallreduce (libnbc) is up to 2x slower than its
    // blocking all-reduce on large buffers; the Rabenseifner algorithm (reduce-scatter +
    // all-gather, bandwidth-optimal) closes the gap. A user's own setting wins.
    setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "3", /*overwrite=*/0);
    HF_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
    r.we_initialized = true;
  }
  HF_CHECK(provided >= MPI_THREAD_SERIALIZED, "init_mpi: the MPI library provides thread level ",
           provided, ", the worker threads need MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE");
  r.serialized = provided < MPI_THREAD_MULTIPLE;
  HF_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &r.rank));
  // Errors come back as return codes and become hfrun::Error (HF_MPI_CHECK).
  HF_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  r.abort_grace = opts.abort_grace;
  r.initialized = true;
  std::thread(detail::watchdog_main).detach();
}

bool mpi_is_initialized() {
  std::lock_guard<std::mutex> lock(detail::rt().mu);
  return detail::rt().initialized && !detail::rt().finalized;
}

void finalize_mpi() {
  detail::Runtime& r = detail::rt();
  std::vector<detail::MpiGroupHandle*> groups;
  {
    std::lock_guard<std::mutex> lock(r.mu);
    if (!r.initialized || r.finalized) return;
    groups = r.groups;
  }
  // A timed-out collective left MPI unusable: MPI_Finalize could hang, so end the job now.
  if (!detail::timeout_reported()) {
    for (auto* g : groups) g->shutdown();  // drains queued ops (each bounded by its timeout)
  }
  if (detail::timeout_reported()) {
    std::string why;
    {
      std::lock_guard<std::mutex> lock(r.mu);
      why = r.timeout_message;
    }
    detail::abort_job(why);
  }
  bool finalize = false;
  {
    std::lock_guard<std::mutex> lock(r.mu);
    r.stop_watchdog = true;
    r.finalized = true;
    finalize = r.we_initialized;
  }
  r.cv.notify_all();
  if (finalize) HF_MPI_CHECK(MPI_Finalize());
}

}  // namespace hfrun::dist
