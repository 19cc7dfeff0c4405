// hfrun estimate-memory CONFIG.yaml [-np N] [--set k=v ...] [--memory-gb G]: each rank's peak
// memory for the run the config describes, from config.json alone (train/memory.h), as one
// JSON line (and a table on a terminal). With --memory-gb, whether it fits and, if not, the
// smallest change that does: a higher ZeRO stage, activation checkpointing, a smaller micro
// batch (with more accumulation, the same global batch), or tensor parallelism.
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "common/error.h"
#include "common/process_memory.h"
#include "data/records.h"
#include "data/tokenizer/tokenizer.h"
#include "launcher/commands.h"
#include "train/config.h"
#include "train/memory.h"
#include "train/model_config.h"
#include "train/task_data.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace hfrun::cli {
namespace {

struct Suggestion {
  std::string change;  // "--set a=b --set c=d"
  train::MemoryEstimate estimate;
};

// Candidate changes in the order a user would try them, each alone and then with the earlier
// ones; the first that fits wins.
std::vector<Suggestion> smallest_change_that_fits(const train::TrainConfig& base,
                                                  const train::ModelConfig& model, int64_t runtime,
                                                  int64_t tokenizer, int64_t limit,
                                                  int tp_divisor) {
  std::vector<Suggestion> out;
  auto try_config = [&](train::TrainConfig c, const std::string& change) {
    train::MemoryEstimate e = train::estimate_memory(c, model, runtime, tokenizer);
    if (e.total_bytes <= limit && out.empty()) out.push_back({change, e});
  };
  const int world = static_cast<int>(base.distributed.num_processes);
  std::string change;
  train::TrainConfig c = base;
  for (int64_t z = c.distributed.zero_stage + 1; z <= 3 && world > 1; ++z) {
    train::TrainConfig t = c;
    t.distributed.zero_stage = z;
    try_config(t, "--set distributed.zero_stage=" + std::to_string(z));
  }
  if (world > 1) {
    c.distributed.zero_stage = 3;
    change = "--set distributed.zero_stage=3 ";
  }
  if (!c.train.activation_checkpointing) {
    c.train.activation_checkpointing = true;
    change += "--set train.activation_checkpointing=true ";
    try_config(c, change.substr(0, change.size() - 1));
  }
  for (int64_t mb = c.train.micro_batch_size / 2; mb >= 1; mb /= 2) {
    train::TrainConfig t = c;
    t.train.micro_batch_size = mb;
    t.train.grad_accum_steps = c.train.grad_accum_steps * (c.train.micro_batch_size / mb);
    try_config(t, change + "--set train.micro_batch_size=" + std::to_string(mb) +
                      " --set train.grad_accum_steps=" + std::to_string(t.train.grad_accum_steps));
  }
  for (int tp = 2; tp <= world; tp *= 2) {
    if (world % tp != 0 || tp_divisor % tp != 0) continue;
    train::TrainConfig t = c;
    t.distributed.tensor_parallel = tp;
    try_config(t, change + "--set distributed.tensor_parallel=" + std::to_string(tp));
  }
  return out;
}

// Record tasks (sft, sequence classification, masked LM) pad each micro batch to its longest
// example: the activations of the longest in the training data, not of seq_len, are the peak.
// Returns that length (at most seq_len), or seq_len for the other tasks.
int64_t longest_batch(const train::TrainConfig& c, const data::Tokenizer* tok, nn::Task task) {
  const bool records = train::is_sft(c) || task != nn::Task::kCausalLM;
  if (!records || tok == nullptr) return c.data.seq_len;
  const data::Records r = data::Records::read(c.data.train);
  const bool sft = train::is_sft(c);
  size_t longest = 1;
  std::optional<std::string_view> pair;
  for (size_t i = 0; i < r.size(); ++i) {
    size_t n;
    if (sft) {
      // prompt (with special tokens) + completion + end of text, inputs one shorter.
      n = tok->encode(r.require(i, c.data.prompt_field), true).size() +
          tok->encode(r.require(i, c.data.completion_field)).size();
    } else {
      if (!c.data.text_pair_field.empty()) pair = r.get(i, c.data.text_pair_field);
      n = tok->encode_pair(r.require(i, c.data.text_field), pair, true).ids.size();
    }
    longest = std::max(longest, n);
  }
  return std::min<int64_t>(c.data.seq_len, static_cast<int64_t>(longest));
}

}  // namespace

int cmd_estimate_memory(const Args& args) {
  // What this process holds with hfrun's libraries loaded, before it reads anything: a
  // training process starts from the same.
  const int64_t runtime = process_memory().resident_bytes;
  std::string config_path;
  std::vector<std::string> overrides;
  int64_t nproc = 0;
  double memory_gb = 0;
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")("config", po::value(&config_path), "train.yaml")(
      "set", po::value(&overrides)->composing(), "override a config key: key.path=value")(
      "np", po::value(&nproc), "number of processes (default: distributed.num_processes)")(
      "nproc", po::value(&nproc), "alias of -np")(
      "memory-gb", po::value(&memory_gb),
      "memory per rank (GiB): say whether the run fits, and what to change if not");
  po::positional_options_description pos;
  pos.add("config", 1);
  Args fixed;
  for (const auto& a : args) fixed.push_back(a == "-np" ? "--np" : a);
  po::variables_map vm;
  po::store(po::command_line_parser(fixed).options(desc).positional(pos).run(), vm);
  if (vm.count("help") || !vm.count("config")) {
    std::cout << "Usage: hfrun estimate-memory CONFIG.yaml [-np N] [--set key.path=value ...] "
                 "[--memory-gb G]\n"
                 "Each rank's peak memory for the run CONFIG.yaml describes (resident memory on "
                 "the CPU, device memory on a GPU), from config.json alone: one JSON line with "
                 "\"total_bytes\" (the largest rank's), and a table on a terminal.\n"
              << desc;
    return vm.count("help") ? 0 : 2;
  }
  po::notify(vm);
  train::TrainConfig cfg = train::TrainConfig::load(config_path, overrides);
  if (vm.count("np") || vm.count("nproc")) {
    HF_CHECK_INPUT(nproc >= 1, "-np: the number of processes must be at least 1, got ", nproc);
    cfg.distributed.num_processes = nproc;
  }
  HF_CHECK_INPUT(memory_gb >= 0, "--memory-gb must be positive, got ", memory_gb);

  // The tokenizer as the Trainer loads it (its vocabulary sizes a model from scratch); what it
  // occupies is measured.
  std::unique_ptr<data::Tokenizer> tok;
  int64_t tokenizer_bytes = 0;
  if (const std::string path = train::tokenizer_to_load(cfg); !path.empty()) {
    const int64_t before = process_memory().resident_bytes;
    tok = std::make_unique<data::Tokenizer>(data::Tokenizer::from_file(path));
    tokenizer_bytes = std::max<int64_t>(0, process_memory().resident_bytes - before);
  }
  const train::ModelConfig model = train::resolve_model_config(cfg, tok.get());
  cfg.data.seq_len = longest_batch(cfg, tok.get(), model.task);
  const train::MemoryEstimate e = train::estimate_memory(cfg, model, runtime, tokenizer_bytes);
  const bool tty = isatty(STDOUT_FILENO) != 0;
  if (tty) std::cout << e.to_table();
  if (memory_gb <= 0) {
    std::cout << e.to_json() << "\n";
    return 0;
  }
  const auto limit = static_cast<int64_t>(memory_gb * 1024 * 1024 * 1024);
  std::string json = e.to_json();
  json.pop_back();  // the closing brace
  json += ", \"memory_gb\": " + std::to_string(memory_gb) +
          ", \"fits\": " + (e.total_bytes <= limit ? "true" : "false");
  if (e.total_bytes > limit) {
    const std::vector<Suggestion> s = smallest_change_that_fits(
        cfg, model, runtime, tokenizer_bytes, limit, static_cast<int>(e.tp_divisor));
    if (!s.empty()) {
      json += ", \"suggestion\": \"" + s[0].change +
              "\", \"suggestion_total_bytes\": " + std::to_string(s[0].estimate.total_bytes);
      if (tty) {
        std::printf("does not fit in %.1f GiB per rank; fits with: %s (peak %.2f GiB)\n", memory_gb,
                    s[0].change.c_str(),
                    static_cast<double>(s[0].estimate.total_bytes) / (1 << 30));
      }
    } else {
      json += ", \"suggestion\": null";
      if (tty) {
        std::printf(
            "does not fit in %.1f GiB per rank, even with ZeRO-3, activation "
            "checkpointing and a micro batch of 1: use more processes\n",
            memory_gb);
      }
    }
  } else if (tty) {
    std::printf("fits in %.1f GiB per rank\n", memory_gb);
  }
  std::cout << json << "}\n";
  return 0;
}

}  // namespace hfrun::cli
