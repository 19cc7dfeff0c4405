#include "common/stop_signals.h"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>

namespace hfrun {

namespace {

volatile std::sig_atomic_t g_pending = 0;

constexpr int kSignals[] = {SIGTERM, SIGUSR1, SIGINT};
struct sigaction g_previous[3];
int g_installed = 0;  // nesting depth: only the outermost object installs and restores

void on_signal(int sig) {
  if (g_pending == 0) {
    g_pending = sig;
    return;
  }
  if (sig == SIGINT) {  // Ctrl-C twice: stop now
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
  }
}

}  // namespace

StopSignals::StopSignals() {
  if (g_installed++ > 0) return;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking calls (file reads, MPI progress) carry on
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &sa, &g_previous[i]);
}

StopSignals::~StopSignals() {
  if (--g_installed > 0) return;
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &g_previous[i], nullptr);
}

int StopSignals::pending() {
  return g_pending;
}

void StopSignals::clear() {
  g_pending = 0;
}

void StopSignals::request(int sig) {
  if (g_pending == 0) g_pending = sig;
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
