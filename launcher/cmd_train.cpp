// hfrun [launch options] CONFIG.yaml [--set key.path=value ...]  (and `hfrun train ...`):
// parses and resolves the config, then trains in this process; with -np N > 1 it re-executes
// itself under mpirun (one rank per process, data-parallel; see train/distributed_setup.h).
#include <sys/wait.h>
#include <unistd.h>

#include <malloc.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <thread>

#include "bench/bench.h"
#include "common/error.h"
#include "common/phase.h"
#include "common/process_memory.h"
#include "common/stop_signals.h"
#include "distributed/comm/env.h"
#include "launcher/commands.h"
#include "launcher/job.h"
#include "tensor/allocator.h"
#include "train/distributed_setup.h"
#include "train/memory.h"
#include "train/run_summary.h"
#include "train/trainer.h"

namespace po = boost::program_options;

namespace hfrun::cli {

namespace {

std::string shell_quote(const std::string& a) {
  if (!a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_-./=:,+@%") == std::string::npos)
    return a;
  std::string q = "'";
  for (char ch : a) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

// Fault injection for the failure tests:
//  - HFRUN_FAULT="RANK:STEP:MARKER" makes rank RANK throw after optimizer step STEP, once
//    (MARKER is created when it fires; an existing MARKER disarms it), so a restarted job runs
//    through.
//  - HFRUN_FAULT_SIGNAL="RANK:STEP:SIGNUM" makes rank RANK send itself signal SIGNUM after
//    optimizer step STEP (a preemption at a known step; SIGSTOP: a rank that stops).
//  - HFRUN_FAULT_HANG="RANK:STEP:SECONDS" makes rank RANK sleep SECONDS after optimizer step
//    STEP, in the phase "injected hang" (a rank that never enters the next collective).
std::function<void(const train::StepMetrics&)> fault_injection(int rank) {
  std::function<void(const train::StepMetrics&)> throws, signals, hangs;
  if (const char* spec = std::getenv("HFRUN_FAULT")) {
    int fault_rank = -1;
    long long step = -1;
    char marker[4096] = {0};
    if (std::sscanf(spec, "%d:%lld:%4095s", &fault_rank, &step, marker) == 3 &&
        fault_rank == rank) {
      const std::string path = marker;
      throws = [step, path](const train::StepMetrics& m) {
        if (m.step != step || m.val_loss >= 0 || std::filesystem::exists(path)) return;
        std::ofstream(path) << "fired\n";
        HF_CHECK(false, "injected fault (HFRUN_FAULT) after step ", step);
      };
    }
  }
  if (const char* spec = std::getenv("HFRUN_FAULT_SIGNAL")) {
    int fault_rank = -1, sig = 0;
    long long step = -1;
    if (std::sscanf(spec, "%d:%lld:%d", &fault_rank, &step, &sig) == 3 && fault_rank == rank) {
      signals = [step, sig](const train::StepMetrics& m) {
        if (m.step != step || m.val_loss >= 0) return;
        ::kill(::getpid(), sig);  // process-directed, as from outside
        // A stop signal is recorded by the dispatcher thread; wait for it, so that the stop
        // lands after this very step, as the tests expect.
        if (sig != SIGTERM && sig != SIGUSR1 && sig != SIGINT) return;
        for (int i = 0; i < 5000 && StopSignals::pending() == 0; ++i)
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
      };
    }
  }
  if (const char* spec = std::getenv("HFRUN_FAULT_HANG")) {
    int fault_rank = -1;
    long long step = -1;
    double seconds = 0;
    if (std::sscanf(spec, "%d:%lld:%lf", &fault_rank, &step, &seconds) == 3 && fault_rank == rank) {
      hangs = [step, seconds](const train::StepMetrics& m) {
        if (m.step != step || m.val_loss >= 0) return;
        ScopedPhase phase("injected hang");
        std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
      };
    }
  }
  if (!throws && !signals && !hangs) return nullptr;
  return [throws, signals, hangs](const train::StepMetrics& m) {
    if (signals) signals(m);
    if (hangs) hangs(m);
    if (throws) throws(m);
  };
}

// Peak resident memory of this process (VmHWM), in MiB; 0 when unknown.
double peak_rss_mib() {
  return static_cast<double>(process_memory().peak_bytes) / (1024.0 * 1024.0);
}

// Setup leaves transients (the whole model before sharding, copies into flat buffers) in the
// allocator's cache: hand them back before training, so the steps' memory is the steps' own.
void start_training_memory_count() {
  cpu_allocator().empty_cache();
  malloc_trim(0);
}

// The end-of-run summary (rank 0): MFU against the GEMM peak in the run's dtype (oneDNN's
// 1024^3 on the CPU with this rank's threads, a bf16 8192^3 on a GPU; measured now, ~0.2 s)
// times the ranks, printed and written into output_dir/summary.json.
void print_run_summary(const train::RunSummary& s, const train::TrainConfig& cfg) {
  // After the run's tensors are gone (the caller destroyed the trainer), so the GEMM's operands
  // do not raise the process's peak memory.
  cpu_allocator().empty_cache();
  malloc_trim(0);
  double peak = 0;
  const bool bf16 = cfg.train.mixed_precision == "bf16";
  try {
    if (s.device == "cuda") {
      peak = bench::reference_cuda_matmul_gflops(train::resolve_train_device(cfg));
    } else {
      peak = bench::cpu_matmul_peak(bf16, 0.2).gflops;
    }
    peak *= s.world;  // every rank computes on its own cores or GPU
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hfrun: warning: no MFU in the summary (%s)\n", e.what());
    peak = 0;
  }
  if (peak > 0) train::write_run_summary(s, peak);
  std::fputs(train::run_summary_text(s, peak).c_str(), stdout);
  std::fflush(stdout);
}

// Trains in this process. Returns 0, or kExitStopped when a stop signal ended the run early
// (after committing a checkpoint).
int train_here(train::TrainConfig cfg, bool report, int rank) {
  // Installed before setup, so a SIGTERM while the model loads stops after the first step
  // (with a checkpoint) instead of killing the process.
  StopSignals stop_signals;
  if (restart_count() > 0 && cfg.checkpoint.resume == "never") {
    // A restarted (--max-restarts) or requeued (Slurm) job continues the work of its first
    // attempt, whose checkpoints are in output_dir.
    cfg.checkpoint.resume = "auto";
    if (report) {
      std::printf("restart %d of this job: checkpoint.resume never -> auto\n", restart_count());
    }
  }
  auto trainer = std::make_unique<train::Trainer>(cfg);
  start_training_memory_count();
  // The peak resident memory of the process up to the last step (before the final checkpoint
  // and export, which gather whole parameters), setup included.
  double steps_peak = 0;
  auto fault = fault_injection(rank);
  const train::RunSummary s = trainer->run([&](const train::StepMetrics& m) {
    if (m.val_loss < 0) steps_peak = peak_rss_mib();
    if (fault) fault(m);
  });
  train::trace_memory("run returned");
  std::atexit([] { train::trace_memory("exit"); });
  if (cfg.distributed.num_processes > 1) {  // every rank's, for the ZeRO memory comparison
    std::printf("peak resident memory %.1f MiB (setup and training steps)\n", steps_peak);
    std::fflush(stdout);
  }
  trainer.reset();  // its memory back before the summary measures the GEMM peak
  if (s.stop_signal != 0) {
    if (report) print_run_summary(s, cfg);
    job_rank_stopped(rank, s.steps, signal_name(s.stop_signal), s.last_checkpoint);
    return kExitStopped;
  }
  if (report && !s.already_complete) print_run_summary(s, cfg);
  return 0;
}

}  // namespace

int cmd_train(const Args& args) {
  std::string config_path;
  std::vector<std::string> overrides;
  int64_t nproc = 0, nnodes = 0, per_node = 0;
  bool dry_run = false, oversubscribe = false, standalone = false;
  std::string hostfile;
  int max_restarts = 0;
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")("config", po::value(&config_path), "train.yaml")(
      "set", po::value(&overrides)->composing(),
      "override a config key: key.path=value (repeatable)")(
      "np", po::value(&nproc), "number of processes (default: distributed.num_processes)")(
      "nproc", po::value(&nproc), "alias of -np")("hostfile", po::value(&hostfile),
                                                  "hosts for a multi-node run (Open MPI hostfile)")(
      "oversubscribe", po::bool_switch(&oversubscribe), "allow more ranks than cores")(
      "max-restarts", po::value(&max_restarts), "restarts after a failure")(
      "dry-run", po::bool_switch(&dry_run),
      "print the resolved config and the launch, start nothing")(
      "nproc-per-node", po::value(&per_node),
      "torchrun: ranks per node (-np N alone when there is one node)")(
      "nnodes", po::value(&nnodes),
      "torchrun: nodes, from --hostfile or the Slurm allocation; ranks = nnodes x nproc-per-node")(
      "standalone", po::bool_switch(&standalone), "torchrun: accepted; hfrun needs no rendezvous");
  // torchrun's per-node launch options: hfrun starts every node from one command instead.
  const char* per_node_launch[] = {"node-rank",    "master-addr",   "master-port",
                                   "rdzv-backend", "rdzv-endpoint", "rdzv-id"};
  for (const char* name : per_node_launch) {
    desc.add_options()(name, po::value<std::string>(), "torchrun: refused (see README, Clusters)");
  }
  po::positional_options_description pos;
  pos.add("config", 1);
  // `-np 4` is mpirun's spelling: accept it as --np; torchrun's underscores as dashes.
  Args fixed;
  for (const auto& a : args) {
    std::string f = a == "-np" ? "--np" : a;
    if (f.rfind("--", 0) == 0) {
      const size_t end = std::min(f.find('='), f.size());
      std::replace(f.begin() + 2, f.begin() + static_cast<std::ptrdiff_t>(end), '_', '-');
    }
    fixed.push_back(f);
  }
  po::variables_map vm;
  po::store(po::command_line_parser(fixed).options(desc).positional(pos).run(), vm);
  if (vm.count("help") || !vm.count("config")) {
    std::cout << "Usage: hfrun [-np N] CONFIG.yaml [--set key.path=value ...] [--dry-run]\n"
                 "Trains the model CONFIG.yaml describes (keys: see CONTRACT.md / README).\n"
              << desc;
    return vm.count("help") ? 0 : 2;
  }
  po::notify(vm);
  for (const char* name : per_node_launch) {
    HF_CHECK_INPUT(!vm.count(name), "--", name,
                   " is torchrun's one-launcher-per-node option; hfrun starts every node from one "
                   "command: list the nodes in --hostfile FILE (with --nnodes N --nproc-per-node P "
                   "or -np N), or inside a Slurm allocation run `srun --mpi=pmix hfrun train "
                   "CONFIG.yaml` (cluster/slurm/)");
  }
  HF_CHECK_INPUT(!(vm.count("np") || vm.count("nproc")) || nproc >= 1, "-np ", nproc,
                 ": the number of processes must be at least 1");
  HF_CHECK_INPUT(nnodes >= 0 && per_node >= 0, "--nnodes and --nproc-per-node must be positive");
  if (per_node > 0) {
    const int64_t total = per_node * std::max<int64_t>(1, nnodes);
    HF_CHECK_INPUT(nproc == 0 || nproc == total, "-np ", nproc, " contradicts --nnodes ",
                   std::max<int64_t>(1, nnodes), " x --nproc-per-node ", per_node);
    nproc = total;
  }
  HF_CHECK_INPUT(nnodes <= 1 || per_node > 0, "--nnodes ", nnodes,
                 " needs --nproc-per-node (ranks on each node)");
  HF_CHECK_INPUT(nnodes <= 1 || !hostfile.empty() || std::getenv("SLURM_JOB_ID") != nullptr,
                 "--nnodes ", nnodes,
                 " needs the nodes: --hostfile FILE, or run inside a Slurm allocation");
  train::TrainConfig cfg = train::TrainConfig::load(config_path, overrides);
  if (nproc > 0) cfg.distributed.num_processes = nproc;

  const dist::LaunchEnv env = dist::detect_launch_env();
  const int world = env.world;
  if (world > 1) {  // a rank started by mpirun/srun: train here, never launch again
    if (dry_run) {
      std::cout << cfg.to_yaml() << "# launch: rank of a " << world << "-rank job\n";
      return 0;
    }
    // Stop signals are caught from here on: the launcher forwards one (as SIGUSR1, whose default
    // action would end the process) only after every rank recorded its start, below.
    StopSignals stop_signals;
    job_rank_started(env.rank, env.local_world);
    try {
      const int rc = train_here(cfg, env.rank == 0, env.rank);
      train::finalize_distributed();
      return rc;
    } catch (const std::exception& e) {
      // Exit without MPI_Finalize: mpirun then ends the other ranks instead of letting them
      // wait in a collective.
      std::cerr << (std::string("hfrun: error: ") + e.what() + "\n") << std::flush;
      job_rank_failed(env.rank, e.what());
      const auto* he = dynamic_cast<const Error*>(&e);
      std::_Exit(he != nullptr && he->kind() == ErrorKind::kInvalidInput ? 2 : 1);
    }
  }
  const int64_t n = cfg.distributed.num_processes;
  if (n <= 1 && hostfile.empty()) {
    if (dry_run) {
      std::cout << cfg.to_yaml() << "# launch: in this process (1 rank)\n";
      return 0;
    }
    return train_here(cfg, true, 0);
  }
  std::vector<std::string> cmd = mpirun_command(static_cast<int>(n), oversubscribe, hostfile,
                                                nnodes > 1 ? static_cast<int>(per_node) : 0);
  cmd.insert(cmd.end(), {"train", config_path});
  for (const auto& o : overrides) cmd.insert(cmd.end(), {"--set", o});
  cmd.insert(cmd.end(), {"--set", "distributed.num_processes=" + std::to_string(n)});
  if (dry_run) {
    std::cout << cfg.to_yaml() << "# launch: " << n << " ranks with:\n";
    for (size_t i = 0; i < cmd.size(); ++i) std::cout << (i ? " " : "") << shell_quote(cmd[i]);
    std::cout << "\n";
    return 0;
  }
  JobOptions job;
  job.max_restarts = max_restarts;
  job.ranks = static_cast<int>(n);
  job.launch_timeout_s = cfg.distributed.timeout_s;
  return run_job(cmd, job);
}

}  // namespace hfrun::cli
