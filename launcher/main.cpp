// hfrun: the command-line entry point. Dispatches to a subcommand and maps errors to exit
// codes: 2 for bad usage or invalid input, 1 for runtime failures.
#include <malloc.h>

#include <boost/program_options/errors.hpp>
#include <cstring>
#include <iostream>

#include "common/error.h"
#include "common/stop_signals.h"
#include "common/version.h"
#include "launcher/commands.h"

namespace {

const char* kUsage = R"(hfrun: distributed training for transformer models, natively.

Train
  hfrun [-np N] CONFIG.yaml [--set key.path=value ...] [--dry-run]   (also: hfrun train ...)
      hfrun -np 4 train.yaml --set train.max_steps=100
      options: --hostfile FILE, --max-restarts N, torchrun's --nnodes/--nproc-per-node
  hfrun estimate-memory CONFIG.yaml [-np N] [--set ...] [--memory-gb G]   peak memory per rank
      hfrun estimate-memory train.yaml -np 8 --memory-gb 16     (and what to change to fit)
  hfrun merge --base DIR --adapter DIR --output DIR      fold a LoRA adapter into its base
      hfrun merge --base smollm --adapter runs/lora/final --output smollm-merged

Prepare data
  hfrun prepare --tokenizer tokenizer.json --output DIR INPUT...    .txt/.jsonl -> .bin shards
      hfrun prepare --tokenizer tok.json --output data/shards corpus.jsonl notes.txt
  hfrun tokenize --tokenizer tokenizer.json [--decode] [--whole] [--add-special] [FILE ...]
      echo "Hello world" | hfrun tokenize --tokenizer tok.json

Inspect and use a model
  hfrun generate --model DIR [--adapter DIR] [--prompt TEXT] [--max-new-tokens N]
                 [--greedy | --temperature T --top-k K --top-p P] [--seed S] [--ids]
      hfrun generate --model runs/x/final --prompt "Once upon a time" --greedy
  hfrun report RUN_DIR... [--output report.html]    curves of runs overlaid, one HTML file
      hfrun report runs/lr_1e-3 runs/lr_3e-4 --output lr.html
  hfrun env                      versions, CPU ISA, threads, devices

Benchmark (each prints its figure next to its baseline, one JSON line)
  hfrun bench train CONFIG.yaml [--steps N] [--warmup N]        tokens/s, MFU, peak RSS, setup
      HFRUN_PROFILE=1 hfrun bench train train.yaml --steps 3     (+ time per backend op)
      HFRUN_PROFILE=shapes ...                                   (+ GFLOP/s per GEMM shape)
  hfrun bench matmul | block | adamw | allreduce | tokenizer | checkpoint   (COMMAND --help)

  hfrun --version | --help | COMMAND --help

Exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid input,
3 stopped by a signal (SIGTERM, SIGUSR1, Ctrl-C) after committing a checkpoint.
Errors say what was wrong; HFRUN_DEBUG=1 adds hfrun's source location to each.
)";

}  // namespace

int main(int argc, char** argv) {
  using namespace hfrun;
  std::vector<std::string> args(argv + 1, argv + argc);
  // A fixed mmap threshold: glibc otherwise raises it each time a large block is freed, after
  // which blocks up to 32 MB (oneDNN's scratchpads, loader buffers) come from the heap and
  // fragment it, and a training process's resident memory creeps up by ~5 MB per step until it
  // plateaus tens of MB higher. With it the resident memory is flat from the first step on, so
  // `hfrun estimate-memory` can be held to the measured peak.
  mallopt(M_MMAP_THRESHOLD, 256 << 10);
  // Before any thread exists: stop signals go to one dispatcher thread (common/stop_signals.h).
  start_signal_dispatcher();
  try {
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
      std::cout << kUsage;
      return args.empty() ? 2 : 0;
    }
    if (args[0] == "--version" || args[0] == "-V") {
      std::cout << "hfrun " << version() << "\n";
      return 0;
    }
    const std::string cmd = args[0];
    cli::Args rest(args.begin() + 1, args.end());
    if (cmd == "env") return cli::cmd_env(rest);
    if (cmd == "bench") return cli::cmd_bench(rest);
    if (cmd == "tokenize") return cli::cmd_tokenize(rest);
    if (cmd == "prepare") return cli::cmd_prepare(rest);
    if (cmd == "train") return cli::cmd_train(rest);
    if (cmd == "generate") return cli::cmd_generate(rest);
    if (cmd == "merge") return cli::cmd_merge(rest);
    if (cmd == "report") return cli::cmd_report(rest);
    if (cmd == "estimate-memory") return cli::cmd_estimate_memory(rest);
    // The headline form: hfrun [launch options] CONFIG.yaml [--set ...]
    if (cmd[0] == '-' || cmd.ends_with(".yaml") || cmd.ends_with(".yml"))
      return cli::cmd_train(args);
    std::cerr << "hfrun: unknown command '" << cmd << "'\n\n" << kUsage;
    return 2;
  } catch (const Error& e) {
    std::cerr << "hfrun: error: " << e.what() << "\n";
    return e.kind() == ErrorKind::kInvalidInput ? 2 : 1;
  } catch (const boost::program_options::error& e) {
    std::cerr << "hfrun: " << e.what() << " (see 'hfrun " << args[0] << " --help')\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "hfrun: error: " << e.what() << "\n";
    return 1;
  }
}
