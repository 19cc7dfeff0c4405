#include "launcher/job.h"

#include <dirent.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "common/error.h"
#include "common/stop_signals.h"
#include "tensor/threads.h"

namespace hfrun::cli {

namespace fs = std::filesystem;

namespace {

// Set by the launcher for its ranks: they then write records (started, failed, stopped) as
// single stderr lines starting with kRecordTag, which mpirun relays from every node and the
// launcher takes out of the output. (Files in a job directory would not work across nodes:
// /tmp is not shared.)
constexpr const char* kRecordsEnv = "HFRUN_RECORDS";
constexpr const char* kRecordTag = "@hfrun-record ";
// Seconds mpirun gets to end the job after a rank recorded a failure before the launcher does.
constexpr double kFailureGraceS = 15;

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

// What the launcher learnt about one rank from its records.
struct RankRecord {
  bool started = false;
  std::string host;
  long long pid = 0;
  std::string error;  // set when the rank failed
  bool stopped = false;
  long long step = 0;
  std::string signal, checkpoint;
};

// The ranks' output, relayed line by line: "[J,R]<stdout>:text" becomes "[rank R] text" on the
// same stream; records are taken out; mpirun's own lines are kept for the failure report.
class OutputRelay {
 public:
  void feed(int stream, const char* data, size_t n) {
    std::string& buf = pending_[stream];
    buf.append(data, n);
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      line(buf.substr(0, nl));
      buf.erase(0, nl + 1);
    }
  }
  void flush() {
    for (auto& [stream, buf] : pending_) {
      if (!buf.empty()) line(buf);
      buf.clear();
    }
  }
  const std::vector<std::string>& mpirun_lines() const { return mpirun_lines_; }
  const std::map<int, RankRecord>& ranks() const { return ranks_; }
  // When the first rank recorded a failure (steady clock), or epoch.
  std::chrono::steady_clock::time_point first_failure() const { return first_failure_; }
  int started() const {
    int n = 0;
    for (const auto& [r, rec] : ranks_) n += rec.started ? 1 : 0;
    return n;
  }

 private:
  void line(const std::string& text) {
    static const std::regex tagged(R"(^\[\d+,(\d+)\]<(stdout|stderr)>:(.*)$)");
    // mpirun tags every write, so a line written in pieces carries tags inside it too.
    static const std::regex inner_tag(R"(\[\d+,\d+\]<(stdout|stderr)>:)");
    std::smatch m;
    if (std::regex_match(text, m, tagged)) {
      const std::string body = std::regex_replace(m[3].str(), inner_tag, "");
      if (body.rfind(kRecordTag, 0) == 0 && record(body.substr(std::strlen(kRecordTag)))) return;
      std::FILE* out = m[2] == "stdout" ? stdout : stderr;
      std::fprintf(out, "[rank %s] %s\n", m[1].str().c_str(), body.c_str());
      std::fflush(out);
    } else if (!text.empty() && text.find_first_not_of('-') != std::string::npos) {
      mpirun_lines_.push_back(text);
    }
  }
  bool record(const std::string& json) {
    const nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
    if (!j.is_object() || !j.contains("rank") || !j["rank"].is_number_integer()) return false;
    RankRecord& r = ranks_[j["rank"].get<int>()];
    const std::string kind = j.value("kind", "");
    if (kind == "started") {
      r.started = true;
      r.host = j.value("host", "?");
      r.pid = j.value("pid", 0LL);
    } else if (kind == "failed") {
      r.error = j.value("error", "");
      if (first_failure_ == std::chrono::steady_clock::time_point{}) {
        first_failure_ = std::chrono::steady_clock::now();
      }
    } else if (kind == "stopped") {
      r.stopped = true;
      r.step = j.value("step", 0LL);
      r.signal = j.value("signal", "");
      r.checkpoint = j.value("checkpoint", "");
    }
    return true;
  }
  std::map<int, std::string> pending_;
  std::vector<std::string> mpirun_lines_;
  std::map<int, RankRecord> ranks_;
  std::chrono::steady_clock::time_point first_failure_{};
};

struct Attempt {
  int status = 0;               // waitpid status of mpirun
  int graceful_signal = 0;      // the signal that made the launcher ask the ranks to stop
  int stop_signal = 0;          // the signal that made the launcher end every rank at once
  double launch_timeout_s = 0;  // > 0: not every rank started within this long
  std::vector<std::string> mpirun_lines;
  std::map<int, RankRecord> ranks;
};

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
        std::ifstream stat(std::string("/proc/") + e->d_name + "/stat");
        std::string s((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
        const size_t close = s.rfind(')');
        if (close == std::string::npos) continue;
        char state = 0;
        int ppid = 0;
        if (std::sscanf(s.c_str() + close + 1, " %c %d", &state, &ppid) != 2) continue;
        if (ppid != self || state == 'Z') continue;
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

Attempt run_mpirun(const std::vector<std::string>& argv, const JobOptions& options) {
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
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGUSR1, &old_usr1, nullptr);
  a.graceful_signal = graceful;
  a.mpirun_lines = relay.mpirun_lines();
  a.ranks = relay.ranks();
  return a;
}

// "rank 1 (host h, pid 42)" from the rank's record.
std::string describe_rank(const Attempt& a, int rank) {
  const auto it = a.ranks.find(rank);
  if (it == a.ranks.end() || !it->second.started) {
    return "rank " + std::to_string(rank) + " (never started)";
  }
  return "rank " + std::to_string(rank) + " (host " + it->second.host + ", pid " +
         std::to_string(it->second.pid) + ")";
}

std::string rank_error(const Attempt& a, int rank) {
  const auto it = a.ranks.find(rank);
  std::string e = it == a.ranks.end() ? "" : it->second.error;
  while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.pop_back();
  return e;
}

// "2, 3" -> the ranks below `ranks` without a started record.
std::string missing_ranks(const Attempt& a, int ranks) {
  std::string out;
  for (int r = 0; r < ranks; ++r) {
    const auto it = a.ranks.find(r);
    if (it != a.ranks.end() && it->second.started) continue;
    out += (out.empty() ? "" : ", ") + std::to_string(r);
  }
  return out;
}

// The line mpirun printed just before `banner`: the rsh agent's (ssh's) own error, e.g.
// "ssh: connect to host n7 port 22: No route to host"; "" when there is none.
std::string line_before(const std::vector<std::string>& lines, const std::string& banner) {
  for (size_t i = 1; i < lines.size(); ++i) {
    if (lines[i].find(banner) != std::string::npos) return lines[i - 1];
  }
  return "";
}

// The report line and hfrun's exit code for a failed attempt: 2 for a configuration error, the
// signal's 128 + N when the launcher ended the job on a signal, else 1.
std::pair<std::string, int> failure_report(const Attempt& a, const JobOptions& options) {
  if (a.stop_signal != 0) {
    return {std::string("hfrun: job stopped: the launcher received ") + strsignal(a.stop_signal) +
                " again and ended every rank",
            128 + a.stop_signal};
  }
  if (a.launch_timeout_s > 0) {
    std::string line = "hfrun: job failed: ranks " + missing_ranks(a, options.ranks) +
                       " did not start within " +
                       std::to_string(static_cast<int>(a.launch_timeout_s)) +
                       " s (distributed.timeout_s): a node never came up";
    for (const std::string& l : a.mpirun_lines) {
      if (l.find("ssh") != std::string::npos || l.find("agent") != std::string::npos) {
        line += ": " + l;
        break;
      }
    }
    return {line, 1};
  }
  static const std::regex signaled(
      R"(process rank (\d+) with PID \d+ on node (\S+) exited on signal (\d+) \(([^)]*)\))");
  static const std::regex process_name(R"(Process name: \[\[\d+,\d+\],(\d+)\])");
  static const std::regex exit_code(R"(Exit code:\s+(\d+))");
  static const std::regex lost_daemon(R"(Remote daemon: \[\[\d+,\d+\],\d+\] on node (\S+))");
  const std::string unreliable_start = "ORTE was unable to reliably start one or more daemons";
  int rank = -1, rank_code = -1;
  std::string lost_node;
  bool start_failed = false;
  for (const std::string& line : a.mpirun_lines) {
    std::smatch m;
    if (std::regex_search(line, m, signaled)) {
      rank = std::stoi(m[1].str());
      return {"hfrun: job failed: " + describe_rank(a, rank) + ": signal " + m[3].str() + " (" +
                  m[4].str() + ")",
              1};
    }
    if (std::regex_search(line, m, process_name)) rank = std::stoi(m[1].str());
    if (std::regex_search(line, m, exit_code)) rank_code = std::stoi(m[1].str());
    if (std::regex_search(line, m, lost_daemon)) lost_node = m[1].str();
    if (line.find(unreliable_start) != std::string::npos) start_failed = true;
  }
  // A node lost mid-run: its Open MPI daemon stopped answering (the node died, or its network).
  if (!lost_node.empty()) {
    return {"hfrun: job failed: lost node " + lost_node +
                ": mpirun lost contact with its daemon there (the node died or its network "
                "failed) and ended every rank",
            1};
  }
  // A daemon ended (or never started): with every rank started, a node died mid-run.
  if (start_failed && rank < 0) {
    const std::string cause = line_before(a.mpirun_lines, unreliable_start);
    const std::string missing = missing_ranks(a, options.ranks);
    std::string line =
        options.ranks > 0 && missing.empty()
            ? "hfrun: job failed: a node's Open MPI daemon ended mid-run (the node died or its "
              "network failed)"
            : "hfrun: job failed: a node never came up" +
                  (missing.empty() ? std::string() : " (ranks " + missing + " never started)") +
                  ": its Open MPI daemon did not start";
    if (!cause.empty()) line += ": " + cause;
    return {line, 1};
  }
  if (rank < 0) {  // mpirun did not name one: the first rank that recorded an error
    for (const auto& [r, rec] : a.ranks) {
      if (!rec.error.empty()) {
        rank = r;
        break;
      }
    }
  }
  const int code = WIFEXITED(a.status) ? WEXITSTATUS(a.status) : 128 + WTERMSIG(a.status);
  if (rank < 0) return {"hfrun: job failed: mpirun exited with " + std::to_string(code), 1};
  if (rank_code < 0) rank_code = code;
  std::string line =
      "hfrun: job failed: " + describe_rank(a, rank) + ": exit " + std::to_string(rank_code);
  const std::string err = rank_error(a, rank);
  if (!err.empty()) line += ": " + err;
  // A collective timed out: the ranks that recorded no error of their own are the likely cause
  // (stuck, or cut off with their node).
  if (err.find("timed out") != std::string::npos) {
    std::string silent;
    for (int r = 0; r < options.ranks; ++r) {
      if (rank_error(a, r).empty()) silent += (silent.empty() ? "" : ", ") + describe_rank(a, r);
    }
    if (!silent.empty()) line += "; no error from " + silent;
  }
  return {line, rank_code == 2 ? 2 : 1};
}

// The launcher's line when rank 0 stopped on a signal with a committed checkpoint; "" otherwise.
// The signal named is the launcher's own when it asked the ranks to stop, else the rank's.
std::string stop_report(const Attempt& a) {
  const auto it = a.ranks.find(0);
  if (it == a.ranks.end() || !it->second.stopped) return "";
  const RankRecord& r = it->second;
  const std::string why =
      a.graceful_signal != 0 ? signal_name(a.graceful_signal) + " to the launcher" : r.signal;
  return "hfrun: job stopped after step " + std::to_string(r.step) + " on " + why +
         ": checkpoint " + r.checkpoint +
         " committed; the same command (or a requeued job) resumes from it (exit " +
         std::to_string(kExitStopped) + ")";
}

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

int run_job(std::vector<std::string> argv, const JobOptions& options) {
  argv.insert(argv.begin() + 1,
              {"--tag-output", "-x", std::string(kRecordsEnv) + "=1", "-x", "HFRUN_RESTART_COUNT"});
  // rsh agents (ssh) that mpirun leaves behind are re-parented to us, so they can be ended.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  int code = 0;
  for (int attempt = 0;; ++attempt) {
    ::setenv("HFRUN_RESTART_COUNT", std::to_string(attempt).c_str(), 1);
    const Attempt a = run_mpirun(argv, options);
    if (WIFEXITED(a.status) && WEXITSTATUS(a.status) == 0 && a.launch_timeout_s == 0 &&
        a.stop_signal == 0) {
      code = 0;
      break;
    }
    if (const std::string stop = stop_report(a); !stop.empty()) {
      std::cerr << stop << "\n" << std::flush;
      code = kExitStopped;
      break;
    }
    const auto [report, c] = failure_report(a, options);
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
