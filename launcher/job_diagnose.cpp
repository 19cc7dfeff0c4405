// The launcher's one-line reports of a failed or stopped attempt (job_internal.h), from the
// ranks' records and mpirun's own lines.
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/stop_signals.h"
#include "launcher/job_internal.h"

namespace hfrun::cli::detail {

namespace {

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

// A number for a report: "3.1".
std::string seconds_str(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", s);
  return buf;
}

// After a collective timed out (`err`: "rank R: OP #SEQ (N bytes, group G) timed out after Ts"):
// the ranks that never entered that op, from their flight records, or what is known of those that
// did not answer (stopped, silent), appended to the report line; then one line per rank with its
// flight record.
std::string hang_diagnosis(const Attempt& a, const JobOptions& options, const std::string& err) {
  static const std::regex op_re(R"((\w+) #(\d+) \(\d+ bytes, group (\S+)\) timed out)");
  std::smatch m;
  if (!std::regex_search(err, m, op_re)) return "";
  const std::string op = m[1].str(), group = m[3].str();
  const uint64_t seq = std::stoull(m[2].str());
  std::string culprits, records;
  for (int r = 0; r < options.ranks; ++r) {
    const auto it = a.ranks.find(r);
    const RankRecord rec = it == a.ranks.end() ? RankRecord{} : it->second;
    const nlohmann::json flight =
        rec.flight.empty() ? nlohmann::json() : nlohmann::json::parse(rec.flight, nullptr, false);
    std::string why;
    const bool stopped = rec.proc_state == 'T' || rec.proc_state == 't';
    if (stopped) why = "was stopped (SIGSTOP or a debugger) when the collective timed out";
    if (flight.is_object()) {
      const std::string phase = flight.value("phase", "");
      std::string mine;
      bool entered = false;
      for (const nlohmann::json& g : flight.value("groups", nlohmann::json::array())) {
        const uint64_t issued = g.value("issued", uint64_t{0});
        const uint64_t completed = g.value("completed", uint64_t{0});
        std::string d = g.value("group", "?") + ": ";
        if (issued > completed) {
          d += "in " + g.value("issued_op", "?") + " #" + std::to_string(issued) +
               " (issued in \"" + g.value("issued_phase", "") + "\") for " +
               seconds_str(g.value("issued_s_ago", 0.0)) + " s";
        } else {
          d += "no collective in flight";
        }
        if (completed > 0) {
          d += ", completed #" + std::to_string(completed) + " " +
               seconds_str(g.value("completed_s_ago", 0.0)) + " s ago";
        }
        mine += (mine.empty() ? "" : "; ") + d;
        if (g.value("group", "") == group && issued >= seq) entered = true;
      }
      records += "\nhfrun: flight record of " + describe_rank(a, r) + ": " +
                 (mine.empty() ? "no collective yet" : mine) +
                 (phase.empty() ? "" : "; phase \"" + phase + "\"");
      if (!entered && !stopped) why = "never entered it (phase \"" + phase + "\")";
    } else if (stopped) {
      why += " and did not answer";
    } else if (rec.error.empty() && rec.started) {
      why = "did not answer (hung in a system call, or its node is cut off)";
    }
    if (!why.empty()) culprits += "; " + describe_rank(a, r) + " " + why;
  }
  return (culprits.empty() ? "" : culprits) + records;
}

}  // namespace

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
  if (err.find(" timed out after ") != std::string::npos) line += hang_diagnosis(a, options, err);
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

}  // namespace hfrun::cli::detail
