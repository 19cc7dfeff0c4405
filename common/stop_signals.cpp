#include "common/stop_signals.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace hfrun {

namespace {

// Set by a signal handler or by the dispatcher thread, read by the training loop: a lock-free
// atomic is both async-signal-safe and race-free across threads (a volatile sig_atomic_t is only
// the former; TSan caught the dispatcher's write racing the loop's read).
std::atomic<int> g_pending{0};
static_assert(std::atomic<int>::is_always_lock_free);

constexpr int kSignals[] = {SIGTERM, SIGUSR1, SIGINT};
struct sigaction g_previous[3];
int g_installed = 0;  // nesting depth: only the outermost object installs and restores

void on_signal(int sig) {
  int none = 0;
  if (g_pending.compare_exchange_strong(none, sig)) return;
  if (sig == SIGINT) die_of_signal(SIGINT);  // Ctrl-C twice: stop now
}

constexpr int kDispatched[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};
std::atomic<SignalHandler> g_handlers[4] = {};
std::atomic<bool> g_dispatcher{false};

int slot_of(int sig) {
  for (int i = 0; i < 4; ++i) {
    if (kDispatched[i] == sig) return i;
  }
  return -1;
}

sigset_t dispatched_set() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : kDispatched) sigaddset(&set, sig);
  return set;
}

}  // namespace

void start_signal_dispatcher() {
  if (g_dispatcher.exchange(true)) return;
  const sigset_t set = dispatched_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      const int i = slot_of(sig);
      const SignalHandler h = i < 0 ? nullptr : g_handlers[i].load();
      if (h == nullptr) die_of_signal(sig);
      h(sig);
    }
  }).detach();
}

bool signal_dispatcher_running() {
  return g_dispatcher.load();
}

SignalHandler set_signal_handler(int sig, SignalHandler handler) {
  const int i = slot_of(sig);
  if (i < 0) return nullptr;
  const SignalHandler previous = g_handlers[i].exchange(handler);
  if (!g_dispatcher.load()) {
    struct sigaction sa {};
    sa.sa_handler = handler != nullptr ? handler : SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(sig, &sa, nullptr);
  }
  return previous;
}

void die_of_signal(int sig) {
  std::signal(sig, SIG_DFL);
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
  std::raise(sig);
  std::_Exit(128 + sig);  // not reached for a signal whose default action ends the process
}

void unblock_signals_for_exec() {
  const sigset_t set = dispatched_set();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

StopSignals::StopSignals() {
  if (g_installed++ > 0) return;
  if (g_dispatcher.load()) {
    for (int sig : kSignals) set_signal_handler(sig, on_signal);
    return;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking calls (file reads, MPI progress) carry on
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &sa, &g_previous[i]);
}

StopSignals::~StopSignals() {
  if (--g_installed > 0) return;
  if (g_dispatcher.load()) {
    for (int sig : kSignals) set_signal_handler(sig, nullptr);
    return;
  }
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &g_previous[i], nullptr);
}

int StopSignals::pending() {
  return g_pending.load();
}

void StopSignals::clear() {
  g_pending.store(0);
}

void StopSignals::request(int sig) {
  int none = 0;
  g_pending.compare_exchange_strong(none, sig);
}

std::string signal_name(int sig) {
  switch (sig) {
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGUSR2:
      return "SIGUSR2";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    case SIGKILL:
      return "SIGKILL";
    default:
      return "signal " + std::to_string(sig);
  }
}

int restart_count() {
  int n = 0;
  for (const char* name : {"HFRUN_RESTART_COUNT", "SLURM_RESTART_COUNT"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') n = std::max(n, std::atoi(v));
  }
  return n;
}

}  // namespace hfrun
