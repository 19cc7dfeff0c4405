// Graceful stops: a signal asks the training loop to stop at the next step boundary instead of
// killing the process mid-step.
//
// While a StopSignals object lives, SIGTERM and SIGUSR1 (what Slurm sends at a time limit, on
// preemption, or with `--signal`) and SIGINT (Ctrl-C) only record the signal; the loop reads
// pending() at each step boundary, agrees with the other ranks (a signal reaching one rank is
// enough), commits a checkpoint and exits with kExitStopped. Repeated SIGTERM/SIGUSR1 are
// ignored (Slurm and mpirun may both deliver one); a second SIGINT ends the process at once, as
// Ctrl-C twice does elsewhere. The previous handlers come back when the object is destroyed.
#pragma once

#include <string>

namespace hfrun {

// hfrun's exit code after such a stop: the run is not finished, a checkpoint is committed, and
// the same command (or a requeued Slurm job) resumes from it.
constexpr int kExitStopped = 3;

class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The first stop signal received (SIGTERM, SIGUSR1 or SIGINT), 0 when none. Async-signal
  // safe to set, cheap to read.
  static int pending();
  // Forgets a received signal (tests; a program that handled the stop and goes on).
  static void clear();
  // Records `sig` as if it had been received (embedding programs with their own handlers).
  static void request(int sig);
};

// The signals hfrun handles (SIGTERM, SIGINT, SIGUSR1, SIGUSR2) are taken by one thread in the
// hfrun executable: main() blocks them before any other thread exists (every thread inherits the
// mask), and a dispatcher thread waits for them with sigwait() and calls the handler set with
// set_signal_handler as an ordinary function. A signal then never interrupts a compute thread
// inside a kernel, nor an MPI progress or I/O thread inside a system call (EINTR): a graceful
// stop delivered by mpirun mid-step once crashed a rank inside oneDNN (heap corruption), seen
// under Slurm. Without the dispatcher (a program embedding hfrun) handlers are sigaction
// handlers and must be async-signal-safe; those set here only record flags.
void start_signal_dispatcher();
bool signal_dispatcher_running();
using SignalHandler = void (*)(int);
// Sets the handler of `sig` (one of the four); nullptr restores the default action. Returns the
// handler set before through this function (nullptr: the default).
SignalHandler set_signal_handler(int sig, SignalHandler handler);
// Ends the process with `sig`'s default action (from a handler, in either mode).
[[noreturn]] void die_of_signal(int sig);
// In a child between fork() and exec(): unblocks every signal the dispatcher blocked, so that
// the new program (mpirun) receives them.
void unblock_signals_for_exec();

// "SIGTERM", "SIGUSR1", ... ("signal N" for others).
std::string signal_name(int sig);

// How many times this job was restarted: --max-restarts attempts (HFRUN_RESTART_COUNT, set by
// the launcher) or Slurm requeues (SLURM_RESTART_COUNT); 0 for a first run.
int restart_count();

}  // namespace hfrun
