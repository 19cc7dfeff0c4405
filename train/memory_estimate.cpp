// hfrun estimate-memory: a rank's peak from the model's shape (models/shape.h) and the
// configuration, following what the runtime allocates: every rank builds the whole model in f32
// and keeps its part (tensor parallelism) in flat buffers, with gradients and optimizer state
// as the ZeRO stage shards them (distributed/parallel/data_parallel.h); a step's activations
// are those autograd saves for the micro batch, with the logits and their gradient on top; the
// CPU allocator keeps freed blocks for reuse up to 1.25x the peak of live tensors
// (tensor/allocator.cpp). The per-token constants were measured with HFRUN_MEMORY_TRACE=1 on
// each family (README "Memory").
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <regex>
#include <set>
#include <sstream>

#include "autograd/functions.h"
#include "common/error.h"
#include "models/peft.h"
#include "models/shape.h"
#include "nn/lora.h"
#include "train/memory.h"
#include "train/task_data.h"

namespace hfrun::train {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kMiB = int64_t{1} << 20;
// A training process beyond the libraries: OpenMP's threads, oneDNN's kernels and caches.
constexpr int64_t kProcessBytes = 2 * kMiB;
// Open MPI in each rank of a multi-process run (its libraries and shared-memory segments).
constexpr int64_t kMpiBytes = 9 * kMiB;
// Small allocations around a step and at exit (autograd's graph, scratch, teardown).
constexpr int64_t kSlackBytes = 4 * kMiB;
// The end-of-run summary times a 1024^3 oneDNN GEMM for MFU once the run's tensors are freed:
// its operands, packed copies and scratch (hfrun's main process, rank 0).
constexpr int64_t kSummaryGemmBytes = 32 * kMiB;
// The CUDA context and cuBLASLt's workspace on a GPU.
constexpr int64_t kCudaContextBytes = 600 * kMiB;

int64_t file_bytes(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    int64_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(path, ec)) {
      if (e.is_regular_file(ec)) n += static_cast<int64_t>(e.file_size(ec));
    }
    return n;
  }
  const auto n = fs::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

// What the data occupies: text is read and tokenized (the text, then 4-byte ids); token
// shards are read whole.
int64_t data_bytes(const TrainConfig& c) {
  int64_t n = 4 * kMiB;
  for (const auto* list : {&c.data.train, &c.data.val}) {
    for (const std::string& p : *list) {
      const bool shards = p.ends_with(".bin") || fs::is_directory(p);
      n += (shards ? 1 : 2) * file_bytes(p);
    }
  }
  return n;
}

// The weights file of a pretrained model (mapped while it loads).
int64_t weights_bytes(const std::string& dir) {
  int64_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".safetensors") n += static_cast<int64_t>(e.file_size(ec));
  }
  return n;
}

struct Trainable {
  int64_t total = 0, block = 0, other = 0;  // parameters that get gradients
  int64_t adapters = 0;                     // LoRA's A and B (added to the model)
};

// The parameters that train: all of them, or with LoRA the adapters on the targeted Linears
// (PEFT's matching, all-linear expanded) and the modules to save.
Trainable trainable_parameters(const TrainConfig& c, const nn::ModelShape& s) {
  Trainable t;
  if (c.peft.type != "lora") {
    t.total = s.parameters();
    t.block = s.block_params;
    t.other = s.other_params;
    return t;
  }
  nn::LoraOptions o;
  o.r = c.peft.r;
  o.target_modules = c.peft.target_modules;
  o.modules_to_save = c.peft.modules_to_save;
  if (!c.peft.adapter.empty()) o = nn::read_peft_config(c.peft.adapter);
  if (s.task == nn::Task::kSequenceClassification) {
    for (const std::string& head : s.lora_exclusions) o.modules_to_save.push_back(head);
  }
  std::vector<std::string> targets = o.target_modules;
  const bool regex = !o.target_regex.empty();
  if (!regex && targets.size() == 1 && targets[0] == "all-linear") {
    std::set<std::string> leaves;
    for (const nn::LinearShape& l : s.linears) {
      if (std::find(s.lora_exclusions.begin(), s.lora_exclusions.end(), l.path) ==
          s.lora_exclusions.end()) {
        leaves.insert(l.path.substr(l.path.rfind('.') + 1));
      }
    }
    targets.assign(leaves.begin(), leaves.end());
  }
  std::regex pattern;
  if (regex) {
    try {
      pattern = std::regex(o.target_regex);
    } catch (const std::regex_error&) {
      HF_CHECK_INPUT(false, c.source, ": peft: target_modules '", o.target_regex,
                     "' is not a regular expression");
    }
  }
  for (const nn::LinearShape& l : s.linears) {
    bool saved = false;
    for (const std::string& m : o.modules_to_save)
      saved = saved || nn::lora_target_matches(l.path, m);
    if (saved) {
      t.total += l.params();
      (l.block ? t.block : t.other) += l.params();
      continue;
    }
    bool adapted = regex ? std::regex_match(l.path, pattern) : false;
    for (const std::string& m : targets) adapted = adapted || nn::lora_target_matches(l.path, m);
    if (!adapted) continue;
    const int64_t n = o.r * (l.in + l.out);
    t.adapters += n;
    t.total += n;
    (l.block ? t.block : t.other) += n / std::max<int64_t>(1, l.block ? s.layers : 1);
  }
  return t;
}

std::string human(int64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * kMiB) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * kMiB));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / kMiB);
  }
  return buf;
}

}  // namespace

MemoryEstimate estimate_memory(const TrainConfig& c, const ModelConfig& model,
                               int64_t runtime_bytes, int64_t tokenizer_bytes) {
  const nn::ModelShape s = nn::model_shape(model.json, model.source, model.model_type, model.task);
  MemoryEstimate e;
  e.world = static_cast<int>(std::max<int64_t>(1, c.distributed.num_processes));
  e.tensor_parallel = static_cast<int>(std::max<int64_t>(1, c.distributed.tensor_parallel));
  e.zero_stage = static_cast<int>(c.distributed.zero_stage);
  e.micro_batch_size = c.train.micro_batch_size;
  e.seq_len = c.data.seq_len;
  e.activation_checkpointing = c.train.activation_checkpointing;
  e.mixed_precision = c.train.mixed_precision;
  e.device = c.train.device == "cuda" ? "cuda" : "cpu";
  HF_CHECK_INPUT(e.world % e.tensor_parallel == 0, c.source, ": distributed.tensor_parallel ",
                 e.tensor_parallel, " does not divide the ", e.world, " processes");
  const Trainable tr = trainable_parameters(c, s);
  e.parameters = s.parameters();
  e.tp_divisor = std::gcd(std::gcd(s.heads, s.kv_heads), s.intermediate);
  e.trainable_parameters = tr.total;

  const double T = e.tensor_parallel;            // tensor-parallel ranks
  const double N = e.world / e.tensor_parallel;  // data-parallel ranks
  const double Z = e.zero_stage;
  const bool lora = c.peft.type == "lora";
  // This rank's part under tensor parallelism: the Linears and the token embedding split,
  // norms and position embeddings whole.
  int64_t split = s.embedding_params;
  for (const nn::LinearShape& l : s.linears) split += l.in * l.out;
  auto local = [&](double n, double splittable_fraction) {
    return n * splittable_fraction / T + n * (1 - splittable_fraction);
  };
  const double frac = std::min(1.0, static_cast<double>(split) / s.parameters());
  const double P = local(static_cast<double>(s.parameters() + tr.adapters), frac);
  const double Pblock = local(static_cast<double>(s.block_params), 1.0);
  const double Pother = local(static_cast<double>(s.other_params), frac);
  const double Ptr = local(static_cast<double>(tr.total), frac);
  const double Ptr_units = local(static_cast<double>(tr.block + tr.other), frac);

  RankMemory r;
  // Parameters (f32). ZeRO-3: this rank's shard plus the gathered units in flight: the root
  // (embeddings, norm, heads) for the whole forward and backward, and two blocks (the one
  // running and the next).
  r.parameters = static_cast<int64_t>(Z >= 3 ? 4 * (P / N + Pother + 2 * Pblock) : 4 * P);
  // Gradients of what trains. ZeRO-2 keeps its shard and stages communication units;
  // ZeRO-3 also holds the gathered units' gradients until they are reduce-scattered.
  const double bucket = std::min(c.distributed.bucket_mb * kMiB, 4 * Ptr);
  if (Z >= 3) {
    r.gradients = static_cast<int64_t>(4 * Ptr / N + std::min(4 * Ptr_units, 4 * Ptr) / 2);
  } else if (Z >= 2) {
    r.gradients = static_cast<int64_t>(4 * Ptr / N + 2 * bucket);
  } else {
    r.gradients = static_cast<int64_t>(4 * Ptr);
  }
  const double moments = c.optimizer.type == "adamw" ? 2 : (c.optimizer.momentum != 0 ? 1 : 0);
  r.optimizer = static_cast<int64_t>(4 * moments * (Z >= 1 ? Ptr / N : Ptr));

  // Activations of one micro batch (f32 bytes per token and layer, measured per family).
  const double B = static_cast<double>(c.train.micro_batch_size);
  const double S = static_cast<double>(c.data.seq_len);
  const double n = B * S;
  const double d = static_cast<double>(s.hidden), I = static_cast<double>(s.intermediate);
  double per_token;  // floats saved per token in one layer
  if (s.model_type == "bert") {
    per_token = 6 * d + (6 * d + 2.4 * I) / T;
  } else if (s.gated_mlp) {
    per_token = 2.7 * d + (2.3 * d + 3.4 * I) / T;
  } else {
    per_token = 4.25 * d + (4.25 * d + 1.7 * I) / T;
  }
  const double heads = std::max(1.0, std::floor(static_cast<double>(s.heads) / T));
  const bool bf16 = c.train.mixed_precision == "bf16" || c.train.mixed_precision == "fp16";
  const DType gemm = c.train.mixed_precision == "bf16"   ? DType::kBF16
                     : c.train.mixed_precision == "fp16" ? DType::kF16
                                                         : DType::kF32;
  // Attention keeps its f32 scores and probabilities for the backward where it is composed,
  // each row's log-sum-exp where a fused kernel runs it (ops::attention): the CPU's takes f32
  // and bf16 (where oneDNN computes bf16), with or without attention dropout, CUDA's bf16 and
  // f16 heads of 16 to 128 without dropout.
  const int64_t head_dim = s.head_dim > 0 ? s.head_dim : s.hidden / std::max<int64_t>(1, s.heads);
  const bool fused_attention =
      e.device == "cuda"
          ? gemm != DType::kF32 && s.attention_dropout == 0 &&
                (head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128)
          : ops::cpu_attention_fused(gemm, head_dim);
  const double layer =
      4 * n * per_token + (fused_attention ? 4 * B * heads * S : 6 * B * heads * S * S);
  const double L = static_cast<double>(s.layers);
  double act = c.train.activation_checkpointing ? 4 * n * d * L + layer : L * layer;
  if (bf16) act *= 0.9;
  // The logits, whose gradient the loss's backward writes over them, and under mixed precision
  // the gradient's low-precision copy that the output projection's backward GEMMs read (the
  // logits themselves come out in f32). Under tensor parallelism each rank has its vocabulary
  // slice, and the loss gathers one whole f32 copy; its backward, composed from ops, makes the
  // gradient beside the logits.
  const double per_logit = (bf16 ? 6.5 : 4.5) + (T > 1 ? 3.0 : 0.0);
  // Where the output layer fuses its loss (nn::Model::fuses_token_loss: a whole head whose
  // device takes the blocked loss, the CPU's bf16 GEMMs on AMX for 2^25 logits or more), no
  // logits are held: a block of them (4 MB of f32, with its bf16 gradient) and the head input's
  // f32 gradient.
  // The rows the head multiplies: the counted positions (nn::Model::has_token_loss). BERT's
  // masked LM counts about mlm_probability of them; SFT's prompts and padding vary by batch, so
  // every position is budgeted (a batch of completions only).
  const double rows = s.task == nn::Task::kMaskedLM ? n * c.data.mlm_probability : n;
  const bool fused_loss =
      e.device != "cuda" && T == 1 && s.token_outputs &&
      fuses_linear_cross_entropy(Device::cpu(), gemm, static_cast<int64_t>(rows) * s.outputs);
  const bool padded = is_sft(c) || s.task != nn::Task::kCausalLM;
  if (fused_loss) {
    double held = 6.0 * kMiB + 4 * rows * d;
    if (padded) {
      // A padded batch is as long as its longest record: the longest one that stays below the
      // backend's threshold keeps its logits (the composed loss).
      int64_t lo = 0, hi = static_cast<int64_t>(rows);  // fuses at hi, not at lo
      while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        (fuses_linear_cross_entropy(Device::cpu(), gemm, mid * s.outputs) ? hi : lo) = mid;
      }
      held = std::max(held, static_cast<double>(lo) * static_cast<double>(s.outputs) * per_logit);
    }
    act += held;
  } else if (s.token_outputs) {
    act += rows * static_cast<double>(s.outputs) * (per_logit / T + 4 * (1 - 1 / T));
  } else {
    act += n * d * per_logit;
  }
  act += 16 * n * d;  // embeddings and the final norm
  r.activations = static_cast<int64_t>(act);

  const double state = static_cast<double>(r.parameters + r.gradients + r.optimizer);
  // Freed activations stay cached for the next step, up to 1.25x the peak of live tensors. A
  // step of fixed shapes holds blocks of sizes not live at its peak (15-35% more, and much more
  // when activation checkpointing recomputes a block); padded batches peak on their longest
  // batch, which reuses or evicts what shorter ones left.
  const double fixed = s.gated_mlp ? 0.2 : 0.35;  // measured: Llama 1.13-1.16x, GPT-2 1.3-1.37x
  const double natural = (padded ? 0.1 : c.train.activation_checkpointing ? 0.9 : fixed) * act;
  r.cache = static_cast<int64_t>(std::min(natural, 0.25 * (state + act)));

  const bool gpu = e.device == "cuda";
  r.runtime = gpu ? kCudaContextBytes
                  : runtime_bytes + kProcessBytes + (e.world > 1 ? kMpiBytes : 0) +
                        tokenizer_bytes + data_bytes(c) + kSlackBytes;
  const int64_t training = r.runtime + static_cast<int64_t>(state) + r.activations + r.cache;

  // Setup: every rank builds the whole model in f32 (mapping the pretrained weights while they
  // load), then copies its part into the flat buffers: ZeRO-3 through a whole flat buffer.
  const double full = 4.0 * (s.parameters() + tr.adapters);
  const double sharded = 4 * P / N + 4 * Ptr / N + static_cast<double>(r.optimizer);
  double setup = full + (Z >= 3 ? 4 * P + sharded : state);
  if (!c.model.from_pretrained.empty() && !gpu) {
    setup = std::max(setup, full + static_cast<double>(weights_bytes(pretrained_dir(c))));
  }
  // Export to final/: ZeRO-3 gathers every parameter; tensor parallelism gathers the whole
  // model on rank 0. LoRA exports the adapters only.
  double gathered = 0;
  if (!lora && Z >= 3) gathered += 4 * P;
  const double rank0_gathered = gathered + (!lora && T > 1 ? full : 0);
  const int64_t setup_peak = r.runtime + static_cast<int64_t>(setup);
  // After the run (rank 0): the libraries, and the summary's GEMM.
  const int64_t summary_peak =
      gpu ? 0 : runtime_bytes + kProcessBytes + (e.world > 1 ? kMpiBytes : 0) + kSummaryGemmBytes;
  auto with_export = [&](double g, int64_t after) {
    const int64_t export_peak = r.runtime + static_cast<int64_t>(state + g) + r.cache;
    RankMemory x = r;
    const int64_t top = std::max({training, setup_peak, export_peak, after});
    x.transient = top - training;
    x.peak = top;
    return x;
  };
  RankMemory r0 = with_export(rank0_gathered, summary_peak);
  r0.ranks = "0";
  e.ranks.push_back(r0);
  if (e.world > 1) {
    RankMemory rest = with_export(gathered, 0);
    rest.ranks = e.world == 2 ? "1" : "1-" + std::to_string(e.world - 1);
    e.ranks.push_back(rest);
  }
  for (const RankMemory& x : e.ranks) e.total_bytes = std::max(e.total_bytes, x.peak);
  return e;
}

std::string MemoryEstimate::to_json() const {
  std::ostringstream o;
  o << "{\"device\": \"" << device << "\", \"world\": " << world
    << ", \"zero_stage\": " << zero_stage << ", \"tensor_parallel\": " << tensor_parallel
    << ", \"micro_batch_size\": " << micro_batch_size << ", \"seq_len\": " << seq_len
    << ", \"mixed_precision\": \"" << mixed_precision
    << "\", \"activation_checkpointing\": " << (activation_checkpointing ? "true" : "false")
    << ", \"parameters\": " << parameters << ", \"trainable_parameters\": " << trainable_parameters
    << ", \"per_rank\": [";
  for (size_t i = 0; i < ranks.size(); ++i) {
    const RankMemory& r = ranks[i];
    o << (i ? ", " : "") << "{\"ranks\": \"" << r.ranks << "\", \"runtime_bytes\": " << r.runtime
      << ", \"parameters_bytes\": " << r.parameters << ", \"gradients_bytes\": " << r.gradients
      << ", \"optimizer_bytes\": " << r.optimizer << ", \"activations_bytes\": " << r.activations
      << ", \"cache_bytes\": " << r.cache << ", \"transient_bytes\": " << r.transient
      << ", \"peak_bytes\": " << r.peak << "}";
  }
  o << "], \"total_bytes\": " << total_bytes << "}";
  return o.str();
}

std::string MemoryEstimate::to_table() const {
  std::ostringstream o;
  o << "memory per rank on " << device << ": " << world << " process" << (world > 1 ? "es" : "")
    << ", zero_stage " << zero_stage << ", tensor_parallel " << tensor_parallel << ", micro batch "
    << micro_batch_size << " x " << seq_len << ", mixed_precision " << mixed_precision
    << (activation_checkpointing ? ", activation checkpointing" : "") << "\n"
    << "parameters " << parameters << " (trainable " << trainable_parameters << ")\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-8s %11s %11s %11s %11s %11s %11s %11s %11s\n", "ranks",
                "runtime", "parameters", "gradients", "optimizer", "activations", "cache",
                "transient", "peak");
  o << line;
  for (const RankMemory& r : ranks) {
    std::snprintf(line, sizeof line, "%-8s %11s %11s %11s %11s %11s %11s %11s %11s\n",
                  r.ranks.c_str(), human(r.runtime).c_str(), human(r.parameters).c_str(),
                  human(r.gradients).c_str(), human(r.optimizer).c_str(),
                  human(r.activations).c_str(), human(r.cache).c_str(), human(r.transient).c_str(),
                  human(r.peak).c_str());
    o << line;
  }
  return o.str();
}

}  // namespace hfrun::train
