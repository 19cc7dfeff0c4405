// run_mpirun (job_internal.h): one attempt of the job under the launcher's supervision.
#include <dirent.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/stop_signals.h"
#include "launcher/job_internal.h"

namespace hfrun::cli::detail {

namespace {

// The first SIGTERM/SIGUSR1/SIGINT asks the ranks for a graceful stop; a later SIGINT ends them.
// Set by the signal dispatcher's thread (or a sigaction handler: lock-free atomics are
// async-signal-safe), read by the supervision loop.
std::atomic<int> g_stop_signal{0};
std::atomic<int> g_hard_stop_signal{0};

void on_stop_signal(int sig) {
  if (g_stop_signal == 0) {
    g_stop_signal = sig;
  } else if (sig == SIGINT) {
    g_hard_stop_signal = sig;
  }
}

// Process `pid`'s state letter ('R', 'S', 'T' stopped, 'Z', ...) and parent from /proc.
bool read_proc_stat(long long pid, char* state, int* ppid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t close = s.rfind(')');
  return close != std::string::npos &&
         std::sscanf(s.c_str() + close + 1, " %c %d", state, ppid) == 2;
}

// Ends what is left of the job's process tree after mpirun: ssh (rsh agent) processes that
// mpirun put in their own process groups and left behind are re-parented to the launcher (a
// child subreaper) and would keep the output pipes open.
void end_leftover_children() {
  const pid_t self = getpid();
  for (int round = 0; round < 2; ++round) {
    bool any = false;
    if (DIR* d = opendir("/proc")) {
      while (dirent* e = readdir(d)) {
        const pid_t p = static_cast<pid_t>(std::atoi(e->d_name));
        if (p <= 0) continue;
        char state = 0;
        int ppid = 0;
        if (!read_proc_stat(p, &state, &ppid) || ppid != self || state == 'Z') continue;
        kill(p, round == 0 ? SIGTERM : SIGKILL);
        any = true;
      }
      closedir(d);
    }
    if (!any) break;
    if (round == 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  while (waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

// The process state of the ranks on this host.
void note_proc_states(OutputRelay& relay) {
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  // Read first, then set: the loop must not write into the map it walks.
  std::vector<std::pair<int, char>> states;
  for (const auto& [rank, r] : relay.ranks()) {
    char state = 0;
    int ppid = 0;
    if (r.started && r.host == host && r.pid > 0 && read_proc_stat(r.pid, &state, &ppid))
      states.emplace_back(rank, state);
  }
  for (const auto& [rank, state] : states) relay.set_proc_state(rank, state);
}

}  // namespace

Attempt run_mpirun(const std::vector<std::string>& argv, const JobOptions& options) {
  int out_pipe[2], err_pipe[2];
  HF_CHECK(pipe(out_pipe) == 0 && pipe(err_pipe) == 0, "cannot create pipes for mpirun");
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t launcher = getpid();
  const pid_t pid = fork();
  HF_CHECK(pid >= 0, "cannot start ", argv[0]);
  if (pid == 0) {
    // mpirun dies with the launcher, SIGKILL included (and each rank with mpirun: PDEATHSIG in
    // job_rank_started), instead of noticing only when it next writes to the closed pipes,
    // seconds later, while its ranks go on training and writing checkpoints.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != launcher) _exit(1);  // the launcher died before prctl
    setpgid(0, 0);  // our own group: a terminal's Ctrl-C reaches the launcher, which forwards it
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(err_pipe[1], STDERR_FILENO);
    close(out_pipe[0]);
    close(err_pipe[0]);
    close(out_pipe[1]);
    close(err_pipe[1]);
    unblock_signals_for_exec();  // mpirun must receive the signals the launcher passes on
    execvp(cargv[0], cargv.data());
    std::perror(argv[0].c_str());
    _exit(127);
  }
  setpgid(pid, pid);
  close(out_pipe[1]);
  close(err_pipe[1]);

  g_stop_signal = 0;
  g_hard_stop_signal = 0;
  const SignalHandler old_int = set_signal_handler(SIGINT, on_stop_signal);
  const SignalHandler old_term = set_signal_handler(SIGTERM, on_stop_signal);
  const SignalHandler old_usr1 = set_signal_handler(SIGUSR1, on_stop_signal);

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  OutputRelay relay;
  Attempt a;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  int graceful = 0;
  bool ending = false;  // the launcher ends the job (SIGTERM to mpirun, SIGKILL 10 s later)
  Clock::time_point ending_at{}, exited_at{};
  bool exited = false;
  bool flight_asked = false;
  char buf[65536];
  while (open_fds > 0) {
    // Passed on once every rank has started (and so catches it): a rank still loading would die
    // of SIGUSR1's default action. A job that never fully starts ends by the launch timeout.
    if (g_stop_signal != 0 && graceful == 0 && relay.started() >= options.ranks) {
      graceful = g_stop_signal;
      kill(pid, SIGUSR1);  // mpirun forwards it to every rank
      std::fprintf(stderr,
                   "hfrun: %s: every rank stops after its current step and commits a checkpoint "
                   "(Ctrl-C again ends the job now)\n",
                   signal_name(graceful).c_str());
      std::fflush(stderr);
    }
    // Ranks that never start (a node whose daemon hangs in ssh) would otherwise keep mpirun
    // waiting for ever: after the launch timeout the job ends with a report naming them.
    if (!exited && a.launch_timeout_s == 0 && options.launch_timeout_s > 0 && options.ranks > 0 &&
        relay.started() < options.ranks && seconds_since(start) > options.launch_timeout_s) {
      a.launch_timeout_s = options.launch_timeout_s;
      ending = true;
    }
    // A collective timed out: the state of the ranks on this host is noted (stopped?), then
    // every rank is asked for its flight record (mpirun forwards SIGUSR2, and continues a stopped
    // rank; the rank that timed out stays until the request reached it: job_records.cpp).
    if (!exited && !flight_asked && relay.timeout_failure() && relay.started() >= options.ranks) {
      flight_asked = true;
      note_proc_states(relay);
      kill(pid, SIGUSR2);
    }
    // A rank failed but mpirun does not end the job: it may wait for minutes on the TCP
    // connection to a node that was cut off. The ranks' records say enough.
    if (!exited && relay.first_failure() != Clock::time_point{} &&
        seconds_since(relay.first_failure()) > kFailureGraceS) {
      ending = true;
    }
    if (g_hard_stop_signal != 0 && !ending) {
      a.stop_signal = g_hard_stop_signal;
      ending = true;
    }
    if (ending && ending_at == Clock::time_point{}) {
      ending_at = Clock::now();
      kill(pid, SIGTERM);  // mpirun ends every rank
    } else if (ending && !exited && seconds_since(ending_at) > 10) {
      kill(-pid, SIGKILL);  // 10 s later: whatever is left of mpirun's group
    }
    if (!exited) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        exited_at = Clock::now();
        a.status = status;
      }
    } else if (seconds_since(exited_at) > 2) {
      // mpirun is gone; what still holds the pipes (a leftover rsh agent or remote daemon)
      // says nothing more worth waiting for.
      break;
    }
    const int r = poll(fds, 2, 100);
    if (r < 0 && errno == EINTR) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        relay.feed(i + 1, buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (pollfd& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  relay.flush();
  if (!exited) {
    while (waitpid(pid, &a.status, 0) < 0 && errno == EINTR) {
    }
  }
  end_leftover_children();
  set_signal_handler(SIGINT, old_int);
  set_signal_handler(SIGTERM, old_term);
  set_signal_handler(SIGUSR1, old_usr1);
  a.graceful_signal = graceful;
  a.mpirun_lines = relay.mpirun_lines();
  a.ranks = relay.ranks();
  return a;
}

}  // namespace hfrun::cli::detail
