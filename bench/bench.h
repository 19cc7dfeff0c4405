// Benchmarks behind `hfrun bench ...`. Each returns one JSON object (one line) with its figures
// and, where there is one, the baseline measured in the same run.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "tensor/device.h"

namespace hfrun::bench {

// Median wall time of one call of fn, over at least min_seconds (and at least 5 calls).
template <typename Fn>
double median_call_seconds(Fn&& fn, double min_seconds) {
  using Clock = std::chrono::steady_clock;
  std::vector<double> times;
  const Clock::time_point start = Clock::now();
  auto since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  while (times.size() < 5 || since(start) < min_seconds) {
    const Clock::time_point t0 = Clock::now();
    fn();
    times.push_back(since(t0));
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

struct MatmulBenchOptions {
  int64_t m = 1024, n = 1024, k = 1024;
  std::string dtype = "f32";  // f32 | bf16 (inputs; accumulation and output f32 for bf16)
  // Operand layouts as BLAS names them: "nn" (both row-major), "nt" (b a transposed view, as a
  // tied lm_head reads the embedding table), "tn" (a transposed: weight gradients), "tt".
  std::string layout = "nn";
  bool baseline = false;  // also time a raw oneDNN matmul primitive on the same problem
  int warmup = 3;
  double min_seconds = 1.0;  // time at least this long per measurement
};
std::string run_matmul_bench(const MatmulBenchOptions& opts);
// GFLOP/s of a raw oneDNN 1024^3 matmul primitive (f32, or bf16 inputs): the machine's
// practical GEMM peak, the denominator of `bench train`'s MFU.
// `impl`, where given, receives oneDNN's implementation of it ("brg:avx512_core_amx_bf16").
double reference_matmul_gflops(bool bf16, double min_seconds = 0.5, std::string* impl = nullptr);
// The MFU denominator of a CPU run: reference_matmul_gflops in the run's dtype, or, where this
// CPU's oneDNN has no bf16 matmul (no AVX-512: hfrun's bf16 GEMMs then run in f32), the f32
// one; `kind` says which ("onednn bf16 1024^3", "onednn f32 1024^3").
struct CpuMatmulPeak {
  double gflops = 0;
  std::string kind;
  std::string impl;  // oneDNN's implementation of the reference GEMM
};
CpuMatmulPeak cpu_matmul_peak(bool bf16, double min_seconds = 0.5);
// GFLOP/s of a large bf16 GEMM (n x n x n) on a CUDA device through hfrun's matmul: the GPU's
// practical bf16 peak, the denominator of MFU there.
double reference_cuda_matmul_gflops(Device device, int64_t n = 8192);

// One GPT-2 block (ln_1, c_attn, causal attention, c_proj, ln_2, c_fc, gelu_new, c_proj, both
// residuals) forward + backward on [tokens, dim]: time per step and the share outside GEMMs.
struct BlockBenchOptions {
  int64_t batch = 4, seq = 64, dim = 768, heads = 12;
  int warmup = 2;
  int iters = 10;
};
std::string run_block_bench(const BlockBenchOptions& opts);

// ops::attention forward + backward on the CPU: the backend's fused kernel next to the composed
// path (matmul + masked softmax with stored probabilities), alternated, results compared.
struct AttentionBenchOptions {
  int64_t batch = 4, heads = 12, kv_heads = 12, seq = 256, head_dim = 64;
  bool causal = true;
  int64_t window = 0;          // a sliding window (causal only); 0: none
  std::string dtype = "bf16";  // f32 | bf16
  int warmup = 2;
  double min_seconds = 1.0;
};
std::string run_attention_bench(const AttentionBenchOptions& opts);

// The fused AdamW step over a GPT-2 124M-sized flat buffer (optim::AdamW on views, as the
// trainer runs it) and its memory bandwidth, next to the device's copy bandwidth.
struct AdamWBenchOptions {
  Device device = Device::cpu();
  int64_t params = 0;  // elements; 0: GPT-2 124M's 124,439,808
  double min_seconds = 1.0;
};
std::string run_adamw_bench(const AdamWBenchOptions& opts);

// All-reduce bandwidth over the ranks of this MPI job (run under mpirun: hfrun -np N bench
// allreduce): our ProcessGroup against a raw MPI_Allreduce on the same buffer, after checking
// both produce the right sums.
struct AllreduceBenchOptions {
  int64_t bytes = 64 << 20;
  int iters = 20;
  int warmup = 3;
};
std::string run_allreduce_bench(const AllreduceBenchOptions& opts);

// Tokenizer encode throughput over a text file, line by line: single thread and `threads`.
struct TokenizerBenchOptions {
  std::string tokenizer;
  std::string text;
  int threads = 2;
  int repeats = 3;
};
std::string run_tokenizer_bench(const TokenizerBenchOptions& opts);

// Training throughput of a train.yaml: optimizer steps of the real trainer (data, model,
// optimizer), median step time after warm-up, FLOPs per token (6 N_matmul + 12 L T C), MFU
// against reference_matmul_gflops, peak RSS.
struct TrainBenchOptions {
  std::string config;
  std::vector<std::string> overrides;
  int warmup = 2;
  int steps = 5;
};
std::string run_train_bench(const TrainBenchOptions& opts);

// Checkpoint I/O against the disk (bench_checkpoint.cpp): a --mb MB safetensors write next to
// dd conv=fdatasync, its SHA-256 (OpenSSL) next to the portable implementation, the read back
// next to dd. In --dir (default: a temporary directory).
struct CheckpointBenchOptions {
  int64_t mb = 256;
  std::string dir;
};
std::string run_checkpoint_bench(const CheckpointBenchOptions& opts);

}  // namespace hfrun::bench
