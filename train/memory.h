// Where a training process's memory goes: the phase trace (HFRUN_MEMORY_TRACE=1) and the
// estimate `hfrun estimate-memory` prints.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor/device.h"
#include "train/config.h"
#include "train/model_config.h"

namespace hfrun::train {

// HFRUN_MEMORY_TRACE=1: this process's resident memory (now and peak) and the tensor
// allocator's on `device` (live, peak, cached) at a phase of a run, on stderr. Nothing otherwise.
void trace_memory(const char* phase, Device device = Device::cpu());

// This process's peak memory so far in MiB: resident on the CPU (VmHWM), the tensor
// allocator's peak on a GPU.
double peak_memory_mib(Device device);

// What one rank of a run holds at its peak, in bytes (CONTRACT.md `hfrun estimate-memory`). On
// the CPU the peak is the process's resident memory over the whole run (what
// `/usr/bin/time -f %M` reports): the runtime, tokenizer and data, the training state, the
// activations of the micro batch with the allocator's cache around them, and the transients
// of setup and export. On a GPU, the device's memory: the caching allocator's peak plus the
// CUDA context.
struct RankMemory {
  std::string ranks;        // "0", or "1-7" for ranks alike
  int64_t runtime = 0;      // libraries, the tokenizer and the training data
  int64_t parameters = 0;   // f32 parameters this rank keeps (ZeRO-3: its shard + gathered units)
  int64_t gradients = 0;    // f32 gradients (ZeRO-2/3: the shard + units in flight)
  int64_t optimizer = 0;    // AdamW's two moments or SGD's momentum, for what this rank updates
  int64_t activations = 0;  // the micro batch's peak of saved activations, logits and scratch
  int64_t cache = 0;        // blocks the tensor allocator keeps for reuse at the peak
  int64_t transient = 0;    // above the training peak at setup or export (0 when lower)
  int64_t peak = 0;         // the sum: this rank's peak
};

struct MemoryEstimate {
  std::string device;  // cpu | cuda
  int world = 1, zero_stage = 0, tensor_parallel = 1;
  int64_t micro_batch_size = 0, seq_len = 0;
  bool activation_checkpointing = false;
  std::string mixed_precision;
  int64_t parameters = 0, trainable_parameters = 0;  // the whole model's
  // What tensor_parallel must divide: the heads, the key/value heads (and the MLP width).
  int64_t tp_divisor = 1;
  std::vector<RankMemory> ranks;
  int64_t total_bytes = 0;  // the largest rank's peak

  // One JSON line (CONTRACT.md), and a table for people.
  std::string to_json() const;
  std::string to_table() const;
};

// The estimate for `config` on config.distributed.num_processes ranks, from config.json alone
// (no weights are read, nothing is allocated). `runtime_bytes`: this process's resident memory
// with hfrun's libraries loaded (the estimate adds what a training process adds to it);
// `tokenizer_bytes`: what the loaded tokenizer occupies (0 without one).
MemoryEstimate estimate_memory(const TrainConfig& config, const ModelConfig& model,
                               int64_t runtime_bytes, int64_t tokenizer_bytes);

}  // namespace hfrun::train
