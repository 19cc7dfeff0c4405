// Internal to the MPI backend: process-wide state shared by the groups (no MPI types here, so
// the header stays free of mpi.h).
#pragma once

#include <mutex>
#include <string>

namespace hfrun::dist::detail {

// A live group, so finalize_mpi() can stop its worker and free its communicator first.
class MpiGroupHandle {
 public:
  virtual ~MpiGroupHandle() = default;
  virtual void shutdown() = 0;
};
void register_group(MpiGroupHandle* g);
void unregister_group(MpiGroupHandle* g);

// Throws hfrun::Error with MPI's message, the call and the world rank when rc != MPI_SUCCESS.
void check_mpi(int rc, const char* call, const char* file, int line);
#define HF_MPI_CHECK(call) ::hfrun::dist::detail::check_mpi((call), #call, __FILE__, __LINE__)

// Holds the process-wide MPI lock when MPI runs at MPI_THREAD_SERIALIZED; empty otherwise.
std::unique_lock<std::mutex> mpi_call_lock();

int world_rank();
// A collective timed out: print `message` to stderr and arm the abort (MpiInitOptions).
void report_timeout(const std::string& message);
bool timeout_reported();

}  // namespace hfrun::dist::detail
