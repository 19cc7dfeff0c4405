// `hfrun bench train CONFIG.yaml`: the real trainer's optimizer steps, timed.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "bench/bench.h"
#include "common/error.h"
#include "models/gpt2/gpt2.h"
#include "tensor/allocator.h"
#include "tensor/ops.h"
#include "tensor/profiler.h"
#include "tensor/storage.h"
#include "tensor/threads.h"
#include "train/trainer.h"

namespace hfrun::bench {

// GFLOP/s of a large bf16 GEMM on `device` through our matmul op (cuBLASLt, f32 accumulation):
// the GPU's practical bf16 peak, measured in the same run as the training steps. n = 8192 keeps
// an H100/H200 busy long enough that launch overheads vanish.
double reference_cuda_matmul_gflops(Device device, int64_t n) {
  Generator gen(99);
  Tensor a = ops::randn({n, n}, gen, DType::kBF16, 0, 1, device);
  Tensor b = ops::randn({n, n}, gen, DType::kBF16, 0, 1, device);
  for (int i = 0; i < 3; ++i) ops::matmul(a, b);
  synchronize(device);
  double best = 1e30;
  for (int round = 0; round < 3; ++round) {
    constexpr int kIters = 10;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kIters; ++i) ops::matmul(a, b);
    synchronize(device);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / kIters;
    best = std::min(best, s);
  }
  const double nd = static_cast<double>(n);
  return 2.0 * nd * nd * nd / best * 1e-9;
}

namespace {}  // namespace

std::string run_train_bench(const TrainBenchOptions& o) {
  HF_CHECK_INPUT(o.warmup >= 0 && o.steps >= 1, "bench train: --steps must be >= 1, --warmup >= 0");
  std::vector<std::string> overrides = o.overrides;
  // Nothing of the run is kept: no resume, and enough max_steps for the schedule.
  overrides.push_back("checkpoint.resume=never");
  overrides.push_back("train.max_steps=" + std::to_string(o.warmup + o.steps));
  train::TrainConfig cfg = train::TrainConfig::load(o.config, overrides);
  // Start-up next to the steps: the trainer's setup (model built or loaded, prepared, data
  // opened) and the first step (first-touch memory, primitive creation), warm-up or timed.
  const auto setup_start = std::chrono::steady_clock::now();
  train::Trainer trainer(cfg);
  const double setup_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - setup_start).count();
  double first_step_s = 0;
  for (int i = 0; i < o.warmup; ++i) {
    const double s = trainer.step().elapsed_s;
    if (i == 0) first_step_s = s;
  }
  std::vector<double> times;
  // This rank's tokens trained on (padding excluded: padded tasks' batches are as long as their
  // longest record, not seq_len), over the timed steps; the metrics count every rank's.
  double trained = 0;
  for (int i = 0; i < o.steps; ++i) {
    const train::StepMetrics m = trainer.step();
    if (o.warmup == 0 && i == 0) first_step_s = m.elapsed_s;
    times.push_back(m.elapsed_s);
    trained += static_cast<double>(m.tokens) / trainer.data_parallel_world();
  }
  std::sort(times.begin(), times.end());
  const double step_s = times[times.size() / 2];
  // Live tensor bytes at their peak over setup and the steps, read before the profiled step and
  // the reference GEMM add their own (the RSS adds the caching allocator's spare blocks).
  const AllocatorStats alloc = allocator_for(trainer.device()).stats();
  // HFRUN_PROFILE=1: one more step with every backend call timed (device calls synchronised),
  // printed as a second JSON line: seconds per step by backend method, largest first.
  // HFRUN_PROFILE=shapes: the same, with each GEMM keyed by its operands and its GFLOP/s.
  std::string profile;
  const char* profile_env = std::getenv("HFRUN_PROFILE");
  const std::string profile_mode = profile_env != nullptr ? profile_env : "";
  if (profile_mode == "1" || profile_mode == "shapes") {
    profiler::reset();
    profiler::set_shapes(profile_mode == "shapes");
    profiler::set_enabled(true);
    const double profiled_s = trainer.step().elapsed_s;
    profiler::set_enabled(false);
    profiler::set_shapes(false);
    std::vector<std::pair<double, std::string>> rows;
    double total = 0;
    for (const auto& [name, st] : profiler::snapshot()) {
      std::string row = name + "\":{\"s\":" + std::to_string(st.seconds) +
                        ",\"calls\":" + std::to_string(st.calls);
      if (st.flops > 0 && st.seconds > 0) {
        row += ",\"gflops\":" + std::to_string(st.flops / st.seconds * 1e-9);
      }
      rows.emplace_back(st.seconds, row + "}");
      if (name.starts_with("op:")) total += st.seconds;
    }
    std::sort(rows.rbegin(), rows.rend());
    profile = "\n{\"profile_step_s\":" + std::to_string(profiled_s) +
              ",\"backend_s\":" + std::to_string(total) + ",\"ops\":{";
    for (size_t i = 0; i < rows.size(); ++i) profile += (i ? ",\"" : "\"") + rows[i].second;
    profile += "}}";
  }

  // Forward + backward: 3 x 2 flops per multiply-add of the forward's GEMMs (attention's T x T
  // products included, T the mean tokens per sequence: seq_len for token windows; a padded
  // batch runs at its longest record's). The output layer counts for every token, though SFT
  // and masked LM run it on the counted positions only: their achieved figure is an upper one.
  const double tokens = trained / o.steps;
  const double sequences =
      static_cast<double>(cfg.train.micro_batch_size * cfg.train.grad_accum_steps);
  const auto mean_length = static_cast<int64_t>(std::max(1.0, tokens / sequences + 0.5));
  const double flops_per_token = 6 * trainer.model().matmul_flops_per_token(mean_length);
  const double achieved = flops_per_token * tokens / step_s * 1e-9;
  const bool bf16 = cfg.train.mixed_precision == "bf16";
  // fp16's GEMMs: f16 on a GPU; through f32 on the CPU (oneDNN here has no f16 GEMM).
  const char* dtype = bf16 ? "bf16" : cfg.train.mixed_precision == "fp16" ? "fp16" : "f32";
  // The CPU's oneDNN GEMM in the run's dtype; on a GPU its bf16 tensor-core peak (the usual
  // MFU denominator there, also for f32 runs).
  const Device device = trainer.device();
  CpuMatmulPeak peak_of{0, "cublaslt bf16 8192^3", "cublaslt"};
  if (device.is_cuda()) {
    peak_of.gflops = reference_cuda_matmul_gflops(device);
  } else {
    peak_of = cpu_matmul_peak(bf16);
  }
  const double peak = peak_of.gflops;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  char buf[1024];
  std::snprintf(buf, sizeof(buf),
                "{\"bench\":\"train\",\"impl\":\"hfrun\",\"device\":\"%s\",\"dtype\":\"%s\","
                "\"threads\":%d,"
                "\"params\":%lld,\"tokens_per_step\":%.0f,\"step_s\":%.4f,\"tokens_per_s\":%.1f,"
                "\"flops_per_token\":%.4g,\"achieved_gflops\":%.1f,\"peak_gflops\":%.1f,"
                "\"peak_kind\":\"%s\",\"mfu\":%.3f,\"peak_rss_mb\":%.1f,\"alloc_peak_mb\":%.1f,"
                "\"peak_impl\":\"%s\",\"setup_s\":%.3f,\"first_step_s\":%.3f}",
                device.str().c_str(), dtype, num_threads(),
                static_cast<long long>(trainer.num_parameters()), tokens, step_s, tokens / step_s,
                flops_per_token, achieved, peak, peak_of.kind.c_str(), achieved / peak,
                ru.ru_maxrss / 1024.0, alloc.peak_allocated_bytes / 1048576.0, peak_of.impl.c_str(),
                setup_s, first_step_s);
  return buf + profile;
}

}  // namespace hfrun::bench
