// hfrun bench: parses the options and prints the benchmark's JSON line.
#include <boost/program_options.hpp>
#include <iostream>
#include <thread>

#include "bench/bench.h"
#include "common/error.h"
#include "distributed/comm/env.h"
#include "distributed/comm/mpi_process_group.h"
#include "launcher/commands.h"
#include "launcher/job.h"

namespace po = boost::program_options;

namespace hfrun::cli {
namespace {

bool parse(const Args& args, po::options_description& desc, po::variables_map& vm,
           const char* usage) {
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << usage << "\n" << desc;
    return false;
  }
  po::notify(vm);
  return true;
}

int bench_matmul(const Args& args) {
  bench::MatmulBenchOptions o;
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")("m", po::value(&o.m)->default_value(o.m),
                                                 "rows of A and C")(
      "n", po::value(&o.n)->default_value(o.n), "columns of B and C")(
      "k", po::value(&o.k)->default_value(o.k), "inner dimension")(
      "dtype", po::value(&o.dtype)->default_value(o.dtype), "input dtype: f32 | bf16")(
      "layout", po::value(&o.layout)->default_value(o.layout),
      "nn | nt | tn | tt: A, B row-major (n) or transposed views (t)")(
      "baseline", po::bool_switch(&o.baseline), "also time a raw oneDNN primitive")(
      "min-seconds", po::value(&o.min_seconds)->default_value(o.min_seconds),
      "time each measurement for at least this long");
  po::variables_map vm;
  if (!parse(args, desc, vm,
             "Usage: hfrun bench matmul --m M --n N --k K --dtype f32|bf16 "
             "[--layout nn|nt|tn|tt] [--baseline]\nTimes hfrun's matmul op (row-major tensors or "
             "transposed views, as models call it) after warm-up; prints one JSON line with "
             "\"gflops\"; --baseline times a raw oneDNN primitive on plain row-major copies.")) {
    return 0;
  }
  HF_CHECK_INPUT(o.m > 0 && o.n > 0 && o.k > 0, "bench matmul: --m, --n, --k must be positive");
  HF_CHECK_INPUT(o.layout == "nn" || o.layout == "nt" || o.layout == "tn" || o.layout == "tt",
                 "bench matmul: --layout must be nn, nt, tn or tt, got '", o.layout, "'");
  HF_CHECK_INPUT(o.min_seconds > 0 && o.min_seconds <= 3600,
                 "bench matmul: --min-seconds must be "
                 "in (0, 3600]");
  HF_CHECK_INPUT(o.dtype == "f32" || o.dtype == "bf16",
                 "bench matmul: --dtype must be f32 or "
                 "bf16, got '",
                 o.dtype, "'");
  std::cout << bench::run_matmul_bench(o) << std::endl;
  return 0;
}

int bench_block(const Args& args) {
  bench::BlockBenchOptions o;
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")(
      "batch", po::value(&o.batch)->default_value(o.batch), "sequences")(
      "seq", po::value(&o.seq)->default_value(o.seq), "tokens per sequence")(
      "dim", po::value(&o.dim)->default_value(o.dim), "model width C")(
      "heads", po::value(&o.heads)->default_value(o.heads), "attention heads")(
      "iters", po::value(&o.iters)->default_value(o.iters), "timed steps");
  po::variables_map vm;
  if (!parse(args, desc, vm,
             "Usage: hfrun bench block [--batch B] [--seq T] [--dim C] "
             "[--heads H]\nTimes forward+backward of one GPT-2 block in f32 and reports the "
             "fraction of time outside oneDNN matmuls.")) {
    return 0;
  }
  HF_CHECK_INPUT(o.batch > 0 && o.seq > 0 && o.dim > 0 && o.heads > 0 && o.dim % o.heads == 0,
                 "bench block: sizes must be positive and --dim divisible by --heads");
  HF_CHECK_INPUT(o.iters > 0, "bench block: --iters must be positive");
  std::cout << bench::run_block_bench(o) << std::endl;
  return 0;
}

int bench_attention(const Args& args) {
  bench::AttentionBenchOptions o;
  bool full = false;
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")(
      "batch", po::value(&o.batch)->default_value(o.batch), "sequences")(
      "heads", po::value(&o.heads)->default_value(o.heads), "query heads")(
      "kv-heads", po::value(&o.kv_heads)->default_value(o.kv_heads),
      "key/value heads (dividing --heads: grouped-query attention)")(
      "seq", po::value(&o.seq)->default_value(o.seq), "tokens per sequence")(
      "head-dim", po::value(&o.head_dim)->default_value(o.head_dim), "head size")(
      "window", po::value(&o.window)->default_value(o.window), "sliding window (0: none)")(
      "full", po::bool_switch(&full), "bidirectional attention (default causal)")(
      "dtype", po::value(&o.dtype)->default_value(o.dtype), "f32 | bf16")(
      "min-seconds", po::value(&o.min_seconds)->default_value(o.min_seconds),
      "time each measurement for at least this long");
  po::variables_map vm;
  if (!parse(args, desc, vm,
             "Usage: hfrun bench attention [--batch B] [--heads H] [--kv-heads G] [--seq T] "
             "[--head-dim D] [--window W] [--full] [--dtype f32|bf16]\nTimes forward + backward "
             "of CPU attention, the fused kernel next to the composed path on the same inputs.")) {
    return 0;
  }
  o.causal = !full;
  HF_CHECK_INPUT(o.batch > 0 && o.heads > 0 && o.kv_heads > 0 && o.seq > 0 && o.head_dim > 0 &&
                     o.heads % o.kv_heads == 0,
                 "bench attention: sizes must be positive and --kv-heads must divide --heads");
  HF_CHECK_INPUT(o.window >= 0 && (o.window == 0 || o.causal),
                 "bench attention: --window needs causal attention and must be >= 0");
  HF_CHECK_INPUT(o.dtype == "f32" || o.dtype == "bf16",
                 "bench attention: --dtype must be f32 or bf16, got '", o.dtype, "'");
  HF_CHECK_INPUT(o.min_seconds > 0 && o.min_seconds <= 3600,
                 "bench attention: --min-seconds must be in (0, 3600]");
  std::cout << bench::run_attention_bench(o) << std::endl;
  return 0;
}

int bench_tokenizer(const Args& args) {
  bench::TokenizerBenchOptions o;
  o.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")("tokenizer", po::value(&o.tokenizer)->required(),
                                                 "tokenizer.json")(
      "text", po::value(&o.text)->required(), "text file, encoded line by line")(
      "threads", po::value(&o.threads)->default_value(o.threads), "threads for the parallel run")(
      "repeats", po::value(&o.repeats)->default_value(o.repeats), "repetitions (best counts)");
  po::variables_map vm;
  if (!parse(args, desc, vm,
             "Usage: hfrun bench tokenizer --tokenizer tokenizer.json --text FILE "
             "[--threads N]\nEncode throughput (MB/s, tokens/s) on one thread and on N threads. "
             "bench/tokenizer_vs_hf.sh prints it next to Hugging Face tokenizers.")) {
    return 0;
  }
  HF_CHECK_INPUT(o.threads >= 1 && o.threads <= 1024,
                 "bench tokenizer: --threads must be in [1, 1024]");
  HF_CHECK_INPUT(o.repeats >= 1, "bench tokenizer: --repeats must be positive");
  std::cout << bench::run_tokenizer_bench(o) << std::endl;
  return 0;
}

int bench_train(const Args& args) {
  bench::TrainBenchOptions o;
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")("config", po::value(&o.config)->required(),
                                                 "train.yaml")(
      "set", po::value(&o.overrides)->composing(), "override a config key: key.path=value")(
      "warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed steps first")(
      "steps", po::value(&o.steps)->default_value(o.steps), "timed steps (median counts)");
  po::positional_options_description pos;
  pos.add("config", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << "Usage: hfrun bench train CONFIG.yaml [--steps N] [--warmup W] [--set k=v]\n"
                 "Times optimizer steps of the real trainer; JSON with tokens_per_s and mfu. "
                 "bench/train_vs_torch.sh prints it next to PyTorch.\n"
              << desc;
    return 0;
  }
  po::notify(vm);
  std::cout << bench::run_train_bench(o) << std::endl;
  return 0;
}

int bench_allreduce(const Args& args) {
  bench::AllreduceBenchOptions o;
  int np = 0;
  bool oversubscribe = false;
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")(
      "np", po::value(&np), "ranks to start under mpirun (when not already a rank)")(
      "oversubscribe", po::bool_switch(&oversubscribe), "more ranks than cores")(
      "bytes", po::value(&o.bytes)->default_value(o.bytes), "buffer size in bytes (f32)")(
      "iters", po::value(&o.iters)->default_value(o.iters), "timed all-reduces")(
      "warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed all-reduces first");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << "Usage: hfrun bench allreduce --np N [--bytes B] [--iters I]\n"
                 "All-reduce (sum, f32) over N ranks: hfrun's process group next to a blocking "
                 "MPI_Allreduce on the same buffer, both checked for correct sums; algbw and busbw "
                 "as nccl-tests define them (busbw = algbw * 2(n-1)/n).\n"
              << desc;
    return 0;
  }
  po::notify(vm);
  if (dist::detect_launch_env().world <= 1 && np > 1) {
    std::vector<std::string> cmd = mpirun_command(np, oversubscribe, "");
    cmd.insert(cmd.end(), {"bench", "allreduce", "--bytes", std::to_string(o.bytes), "--iters",
                           std::to_string(o.iters), "--warmup", std::to_string(o.warmup)});
    return run_job(cmd, JobOptions{});
  }
  const std::string line = bench::run_allreduce_bench(o);
  if (dist::detect_launch_env().rank == 0) std::cout << line << std::endl;
  dist::finalize_mpi();
  return 0;
}

int bench_adamw(const Args& args) {
  bench::AdamWBenchOptions o;
  std::string device = "cpu";
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")(
      "device", po::value(&device)->default_value(device), "cpu | cuda | cuda:N")(
      "params", po::value(&o.params)->default_value(o.params),
      "parameter elements (0: GPT-2 124M's 124,439,808)")(
      "min-seconds", po::value(&o.min_seconds)->default_value(o.min_seconds),
      "time each measurement for at least this long");
  po::variables_map vm;
  if (!parse(args, desc, vm,
             "Usage: hfrun bench adamw [--device cpu|cuda[:N]] [--params N]\nTimes one fused "
             "AdamW step over GPT-2-shaped views of a flat buffer and prints its memory "
             "bandwidth next to the device's copy bandwidth, as one JSON line.")) {
    return 0;
  }
  HF_CHECK_INPUT(o.params >= 0, "bench adamw: --params must not be negative");
  HF_CHECK_INPUT(o.min_seconds > 0 && o.min_seconds <= 3600,
                 "bench adamw: --min-seconds must be in (0, 3600]");
  if (device == "cpu") {
    o.device = Device::cpu();
  } else if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
    int index = 0;
    if (device != "cuda") {
      const std::string n = device.substr(5);
      HF_CHECK_INPUT(
          !n.empty() && n.size() <= 4 && n.find_first_not_of("0123456789") == std::string::npos,
          "bench adamw: --device '", device, "' is not cpu, cuda or cuda:N");
      index = std::stoi(n);
    }
    HF_CHECK_INPUT(index < cuda_device_count(), "bench adamw: --device ", device, ": ",
                   cuda_status());
    o.device = Device::cuda(index);
  } else {
    HF_CHECK_INPUT(false, "bench adamw: --device '", device, "' is not cpu, cuda or cuda:N");
  }
  std::cout << bench::run_adamw_bench(o) << std::endl;
  return 0;
}

int bench_checkpoint(const Args& args) {
  bench::CheckpointBenchOptions o;
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")("mb", po::value(&o.mb)->default_value(o.mb),
                                                 "megabytes to write, hash and read")(
      "dir", po::value(&o.dir), "directory on the disk to measure (default: a temporary one)");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << "Usage: hfrun bench checkpoint [--mb N] [--dir DIR]\n"
                 "Checkpoint I/O next to the disk: a safetensors write (fsynced, checksum taken "
                 "while writing) vs dd conv=fdatasync and vs write-then-SHA-256; the checksums' "
                 "speeds (XXH3-128, SHA-256 by OpenSSL and by the portable code); the load from "
                 "disk (checksum from the mapping, tensors copied out) vs dd, vs a plain read "
                 "into memory and vs SHA-256-then-load; one JSON line.\n"
              << desc;
    return 0;
  }
  po::notify(vm);
  std::cout << bench::run_checkpoint_bench(o) << std::endl;
  return 0;
}

}  // namespace

int cmd_bench(const Args& args) {
  const char* usage =
      "Usage: hfrun bench matmul|attention|block|tokenizer|train|allreduce|adamw|checkpoint "
      "[options]   "
      "(hfrun bench "
      "WHAT "
      "--help)\n";
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << usage;
    return args.empty() ? 2 : 0;
  }
  Args rest(args.begin() + 1, args.end());
  if (args[0] == "matmul") return bench_matmul(rest);
  if (args[0] == "attention") return bench_attention(rest);
  if (args[0] == "block") return bench_block(rest);
  if (args[0] == "tokenizer") return bench_tokenizer(rest);
  if (args[0] == "train") return bench_train(rest);
  if (args[0] == "allreduce") return bench_allreduce(rest);
  if (args[0] == "adamw") return bench_adamw(rest);
  if (args[0] == "checkpoint") return bench_checkpoint(rest);
  HF_CHECK_INPUT(false, "bench: unknown benchmark '", args[0],
                 "' (expected matmul, attention, block, tokenizer, train, allreduce, adamw or "
                 "checkpoint)");
  return 2;
}

}  // namespace hfrun::cli
