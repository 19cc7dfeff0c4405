// Benchmarks behind `hfrun bench ...`. Each returns one JSON object (one line) with its figures
// and, where there is one, the baseline measured in the same run.
#pragma once

#include <cstdint>
#include <string>

namespace hfrun::bench {

struct MatmulBenchOptions {
  int64_t m = 1024, n = 1024, k = 1024;
  std::string dtype = "f32";  // f32 | bf16 (inputs; accumulation and output f32 for bf16)
  bool baseline = false;      // also time a raw oneDNN matmul primitive on the same problem
  int warmup = 3;
  double min_seconds = 1.0;  // time at least this long per measurement
};
std::string run_matmul_bench(const MatmulBenchOptions& opts);

// One GPT-2 block (ln_1, c_attn, causal attention, c_proj, ln_2, c_fc, gelu_new, c_proj, both
// residuals) forward + backward on [tokens, dim]: time per step and the share outside GEMMs.
struct BlockBenchOptions {
  int64_t batch = 4, seq = 64, dim = 768, heads = 12;
  int warmup = 2;
  int iters = 10;
};
std::string run_block_bench(const BlockBenchOptions& opts);

// Tokenizer encode throughput over a text file, line by line: single thread and `threads`.
struct TokenizerBenchOptions {
  std::string tokenizer;
  std::string text;
  int threads = 2;
  int repeats = 3;
};
std::string run_tokenizer_bench(const TokenizerBenchOptions& opts);

}  // namespace hfrun::bench
