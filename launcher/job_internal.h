// The launcher's job runner, private to launcher/, split by concept:
//   job_records.cpp    the ranks' side: records (started, failed, stopped, flight) as tagged
//                      stderr lines
//   job_relay.cpp      OutputRelay: ranks' output relayed with "[rank R]", records taken out
//   job_supervise.cpp  run_mpirun: mpirun under pipes and signals, launch timeout, failure grace
//   job_diagnose.cpp   the one-line report of a failed or stopped attempt
//   job.cpp            the mpirun command line and run_job (attempts and restarts)
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "launcher/job.h"

namespace hfrun::cli::detail {

// Set by the launcher for its ranks: they then write records (started, failed, stopped) as
// single stderr lines starting with kRecordTag, which mpirun relays from every node and the
// launcher takes out of the output. (Files in a job directory would not work across nodes:
// /tmp is not shared.)
constexpr const char* kRecordsEnv = "HFRUN_RECORDS";
constexpr const char* kRecordTag = "@hfrun-record ";
// Seconds mpirun gets to end the job after a rank recorded a failure before the launcher does.
constexpr double kFailureGraceS = 15;

// What the launcher learnt about one rank from its records.
struct RankRecord {
  bool started = false;
  std::string host;
  long long pid = 0;
  std::string error;  // set when the rank failed
  bool stopped = false;
  long long step = 0;
  std::string signal, checkpoint;
  // The rank's flight record (distributed/comm/flight_recorder.h) as JSON, when it answered the
  // launcher's request after a collective timed out; "" otherwise.
  std::string flight;
  // The process state the launcher saw in /proc when a collective timed out ('T': stopped),
  // for ranks on the launcher's host; 0 when unknown.
  char proc_state = 0;
};

// The ranks' output, relayed line by line: "[J,R]<stdout>:text" becomes "[rank R] text" on the
// same stream; records are taken out; mpirun's own lines are kept for the failure report.
class OutputRelay {
 public:
  void feed(int stream, const char* data, size_t n);
  void flush();
  const std::vector<std::string>& mpirun_lines() const { return mpirun_lines_; }
  const std::map<int, RankRecord>& ranks() const { return ranks_; }
  // When the first rank recorded a failure (steady clock), or epoch.
  std::chrono::steady_clock::time_point first_failure() const { return first_failure_; }
  // Whether some rank's recorded failure is a collective's timeout.
  bool timeout_failure() const;
  // The launcher saw rank `rank`'s process in /proc in state `state`.
  void set_proc_state(int rank, char state) { ranks_[rank].proc_state = state; }
  int started() const;

 private:
  void line(const std::string& text);
  bool record(const std::string& json);
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

// Runs one attempt of the job: mpirun with argv, its output relayed, signals turned into
// graceful or hard stops, ended after a launch timeout or a rank's failure grace.
Attempt run_mpirun(const std::vector<std::string>& argv, const JobOptions& options);

// The report line and hfrun's exit code for a failed attempt: 2 for a configuration error, the
// signal's 128 + N when the launcher ended the job on a signal, else 1.
std::pair<std::string, int> failure_report(const Attempt& a, const JobOptions& options);
// The launcher's line when rank 0 stopped on a signal with a committed checkpoint; "" otherwise.
std::string stop_report(const Attempt& a);

}  // namespace hfrun::cli::detail
