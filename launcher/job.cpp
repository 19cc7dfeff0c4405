#include "launcher/job.h"

#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "common/error.h"
#include "common/file_util.h"
#include "common/stop_signals.h"
#include "tensor/threads.h"

namespace hfrun::cli {

namespace fs = std::filesystem;

namespace {

constexpr const char* kJobDirEnv = "HFRUN_JOB_DIR";

std::string job_dir_from_env() {
  const char* d = std::getenv(kJobDirEnv);
  return d == nullptr ? "" : d;
}

// Best effort (the rank may be failing already): a record the launcher cannot read only makes
// its report less specific.
void write_small_file(const fs::path& path, const std::string& text) {
  try {
    write_file_atomically(path.string(),
                          [&](int fd) { write_all(fd, text.data(), text.size(), path.string()); });
  } catch (const std::exception&) {
  }
}

std::string read_small_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The first SIGTERM/SIGUSR1/SIGINT asks the ranks for a graceful stop; a later SIGINT ends them.
volatile std::sig_atomic_t g_stop_signal = 0;
volatile std::sig_atomic_t g_hard_stop_signal = 0;

void on_stop_signal(int sig) {
  if (g_stop_signal == 0) {
    g_stop_signal = sig;
  } else if (sig == SIGINT) {
    g_hard_stop_signal = sig;
  }
}

// The ranks' output, relayed line by line: "[J,R]<stdout>:text" becomes "[rank R] text" on the
// same stream; mpirun's own lines are kept for the failure report.
class OutputRelay {
 public:
  void feed(int stream, const char* data, size_t n) {
    std::string& buf = pending_[stream];
    buf.append(data, n);
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      line(stream, buf.substr(0, nl));
      buf.erase(0, nl + 1);
    }
  }
  void flush() {
    for (auto& [stream, buf] : pending_) {
      if (!buf.empty()) line(stream, buf);
      buf.clear();
    }
  }
  const std::vector<std::string>& mpirun_lines() const { return mpirun_lines_; }

 private:
  void line(int stream, const std::string& text) {
    static const std::regex tagged(R"(^\[\d+,(\d+)\]<(stdout|stderr)>:(.*)$)");
    // mpirun tags every write, so a line written in pieces carries tags inside it too.
    static const std::regex inner_tag(R"(\[\d+,\d+\]<(stdout|stderr)>:)");
    std::smatch m;
    if (std::regex_match(text, m, tagged)) {
      std::FILE* out = m[2] == "stdout" ? stdout : stderr;
      const std::string body = std::regex_replace(m[3].str(), inner_tag, "");
      std::fprintf(out, "[rank %s] %s\n", m[1].str().c_str(), body.c_str());
      std::fflush(out);
    } else if (!text.empty() && text.find_first_not_of('-') != std::string::npos) {
      mpirun_lines_.push_back(text);
    }
    (void)stream;
  }
  std::map<int, std::string> pending_;
  std::vector<std::string> mpirun_lines_;
};

struct Attempt {
  int status = 0;           // waitpid status of mpirun
  int graceful_signal = 0;  // the signal that made the launcher ask the ranks to stop
  int stop_signal = 0;      // the signal that made the launcher end every rank at once
  std::vector<std::string> mpirun_lines;
};

Attempt run_mpirun(const std::vector<std::string>& argv) {
  int out_pipe[2], err_pipe[2];
  HF_CHECK(pipe(out_pipe) == 0 && pipe(err_pipe) == 0, "cannot create pipes for mpirun");
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  HF_CHECK(pid >= 0, "cannot start ", argv[0]);
  if (pid == 0) {
    setpgid(0, 0);  // our own group: a terminal's Ctrl-C reaches the launcher, which forwards it
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(err_pipe[1], STDERR_FILENO);
    close(out_pipe[0]);
    close(err_pipe[0]);
    close(out_pipe[1]);
    close(err_pipe[1]);
    execvp(cargv[0], cargv.data());
    std::perror(argv[0].c_str());
    _exit(127);
  }
  setpgid(pid, pid);
  close(out_pipe[1]);
  close(err_pipe[1]);

  g_stop_signal = 0;
  g_hard_stop_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {
  }, old_term{}, old_usr1{};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGUSR1, &sa, &old_usr1);

  OutputRelay relay;
  Attempt a;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  int graceful = 0;
  int forwarded = 0;
  int ticks_since_forward = 0;
  char buf[65536];
  while (open_fds > 0) {
    if (g_stop_signal != 0 && graceful == 0) {
      graceful = g_stop_signal;
      kill(pid, SIGUSR1);  // mpirun forwards it to every rank
      std::fprintf(stderr,
                   "hfrun: %s: every rank stops after its current step and commits a checkpoint "
                   "(Ctrl-C again ends the job now)\n",
                   signal_name(graceful).c_str());
      std::fflush(stderr);
    }
    if (g_hard_stop_signal != 0 && forwarded == 0) {
      forwarded = g_hard_stop_signal;
      kill(pid, SIGTERM);  // mpirun ends every rank
    } else if (forwarded != 0 && ++ticks_since_forward > 100) {
      kill(-pid, SIGKILL);  // 10 s later: whatever is left of mpirun's group
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
  relay.flush();
  while (waitpid(pid, &a.status, 0) < 0 && errno == EINTR) {
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGUSR1, &old_usr1, nullptr);
  a.graceful_signal = graceful;
  a.stop_signal = forwarded;
  a.mpirun_lines = relay.mpirun_lines();
  return a;
}

std::string json_string_field(const std::string& json, const std::string& key) {
  const std::regex re("\"" + key + "\": *\"([^\"]*)\"");
  std::smatch m;
  return std::regex_search(json, m, re) ? m[1].str() : "?";
}
std::string json_number_field(const std::string& json, const std::string& key) {
  const std::regex re("\"" + key + "\": *([0-9]+)");
  std::smatch m;
  return std::regex_search(json, m, re) ? m[1].str() : "?";
}

// "rank 1 (host h, pid 42)" from the rank's record.
std::string describe_rank(const fs::path& dir, int rank) {
  const std::string rec = read_small_file(dir / ("rank-" + std::to_string(rank) + ".json"));
  if (rec.empty()) return "rank " + std::to_string(rank) + " (never started)";
  return "rank " + std::to_string(rank) + " (host " + json_string_field(rec, "host") + ", pid " +
         json_number_field(rec, "pid") + ")";
}

std::string rank_error(const fs::path& dir, int rank) {
  std::string e = read_small_file(dir / ("rank-" + std::to_string(rank) + ".error"));
  while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.pop_back();
  return e;
}

// The report line and hfrun's exit code for a failed attempt.
std::pair<std::string, int> failure_report(const fs::path& dir, const Attempt& a) {
  const int code = WIFEXITED(a.status) ? WEXITSTATUS(a.status) : 128 + WTERMSIG(a.status);
  if (a.stop_signal != 0) {
    return {std::string("hfrun: job stopped: the launcher received ") + strsignal(a.stop_signal) +
                " again and ended every rank",
            128 + a.stop_signal};
  }
  static const std::regex signaled(
      R"(process rank (\d+) with PID \d+ on node (\S+) exited on signal (\d+) \(([^)]*)\))");
  static const std::regex process_name(R"(Process name: \[\[\d+,\d+\],(\d+)\])");
  static const std::regex exit_code(R"(Exit code:\s+(\d+))");
  int rank = -1, rank_code = -1;
  for (const std::string& line : a.mpirun_lines) {
    std::smatch m;
    if (std::regex_search(line, m, signaled)) {
      rank = std::stoi(m[1].str());
      return {"hfrun: job failed: " + describe_rank(dir, rank) + ": signal " + m[3].str() + " (" +
                  m[4].str() + ")",
              code == 0 ? 1 : code};
    }
    if (std::regex_search(line, m, process_name)) rank = std::stoi(m[1].str());
    if (std::regex_search(line, m, exit_code)) rank_code = std::stoi(m[1].str());
  }
  if (rank < 0) {  // mpirun did not name one: the first rank that recorded an error
    for (int r = 0; fs::exists(dir / ("rank-" + std::to_string(r) + ".json")); ++r) {
      if (!rank_error(dir, r).empty()) {
        rank = r;
        break;
      }
    }
  }
  if (rank < 0) return {"hfrun: job failed: mpirun exited with " + std::to_string(code), code};
  if (rank_code < 0) rank_code = code;
  std::string line =
      "hfrun: job failed: " + describe_rank(dir, rank) + ": exit " + std::to_string(rank_code);
  const std::string err = rank_error(dir, rank);
  if (!err.empty()) line += ": " + err;
  return {line, rank_code == 2 ? 2 : (code == 0 ? 1 : code)};
}

// The launcher's line when rank 0 stopped on a signal with a committed checkpoint; "" otherwise.
// `launcher_signal`: what the launcher received and passed on as SIGUSR1 (0: none).
std::string stop_report(const fs::path& dir, int launcher_signal) {
  const std::string rec = read_small_file(dir / "rank-0.stopped");
  if (rec.empty()) return "";
  const std::string why = launcher_signal != 0 ? signal_name(launcher_signal) + " to the launcher"
                                               : json_string_field(rec, "signal");
  return "hfrun: job stopped after step " + json_number_field(rec, "step") + " on " + why +
         ": checkpoint " + json_string_field(rec, "checkpoint") +
         " committed; the same command (or a requeued job) resumes from it (exit " +
         std::to_string(kExitStopped) + ")";
}

}  // namespace

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
  } else {
    const char* user = std::getenv("OMP_NUM_THREADS");
    const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    cmd.insert(cmd.end(),
               {"-x", "OMP_NUM_THREADS=" + (user != nullptr && *user != '\0'
                                                ? std::string(user)
                                                : std::to_string(std::max(1, cores / np)))});
  }
  cmd.push_back(self_path());
  return cmd;
}

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
  const std::string dir = job_dir_from_env();
  if (dir.empty()) return;
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  write_small_file(fs::path(dir) / ("rank-" + std::to_string(rank) + ".json"),
                   "{\"rank\": " + std::to_string(rank) + ", \"host\": \"" + host +
                       "\", \"pid\": " + std::to_string(getpid()) + "}\n");
}

void job_rank_failed(int rank, const std::string& message) {
  const std::string dir = job_dir_from_env();
  if (dir.empty()) return;
  write_small_file(fs::path(dir) / ("rank-" + std::to_string(rank) + ".error"), message + "\n");
}

void job_rank_stopped(int rank, int64_t step, const std::string& signal,
                      const std::string& checkpoint) {
  const std::string dir = job_dir_from_env();
  if (dir.empty()) return;
  // The launcher reads it with json_string_field: no quote may appear inside a value.
  std::string path = checkpoint;
  std::replace(path.begin(), path.end(), '"', '?');
  write_small_file(fs::path(dir) / ("rank-" + std::to_string(rank) + ".stopped"),
                   "{\"rank\": " + std::to_string(rank) + ", \"step\": " + std::to_string(step) +
                       ", \"signal\": \"" + signal + "\", \"checkpoint\": \"" + path + "\"}\n");
}

int run_job(std::vector<std::string> argv, const JobOptions& options) {
  char tmpl[] = "/tmp/hfrun-job-XXXXXX";
  HF_CHECK(mkdtemp(tmpl) != nullptr, "cannot create a job directory under /tmp");
  const fs::path dir = tmpl;
  argv.insert(argv.begin() + 1, {"--tag-output", "-x", std::string(kJobDirEnv) + "=" + tmpl, "-x",
                                 "HFRUN_RESTART_COUNT"});
  int code = 0;
  for (int attempt = 0;; ++attempt) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) fs::remove(e.path(), ec);
    ::setenv("HFRUN_RESTART_COUNT", std::to_string(attempt).c_str(), 1);
    const Attempt a = run_mpirun(argv);
    if (WIFEXITED(a.status) && WEXITSTATUS(a.status) == 0) {
      code = 0;
      break;
    }
    if (const std::string stop = stop_report(dir, a.graceful_signal); !stop.empty()) {
      std::cerr << stop << "\n" << std::flush;
      code = kExitStopped;
      break;
    }
    const auto [report, c] = failure_report(dir, a);
    code = c;
    std::cerr << report << "\n";
    for (const std::string& line : a.mpirun_lines) std::cerr << "mpirun: " << line << "\n";
    std::cerr << std::flush;
    if (a.stop_signal != 0 || code == 2 || attempt >= options.max_restarts) break;
    std::cerr << "hfrun: restarting the job (restart " << attempt + 1 << " of "
              << options.max_restarts << "); it resumes from the last committed checkpoint\n"
              << std::flush;
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return code;
}

}  // namespace hfrun::cli
