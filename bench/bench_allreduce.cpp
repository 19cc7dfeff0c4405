// `hfrun bench allreduce`: our ProcessGroup's all-reduce (the path DDP uses: queued, run by the
// group's worker thread, waited on) against a blocking MPI_Allreduce on the same buffer, with
// nccl-tests' figures: algbw = bytes / time, busbw = algbw * 2 (n - 1) / n.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

#include "bench/bench.h"
#include "common/error.h"
#include "distributed/comm/mpi_process_group.h"
#include "tensor/ops.h"

namespace hfrun::bench {

namespace {

// Every rank r fills element i with (r + 1) * (i % 7 + 1); the sum over n ranks is then
// n (n + 1) / 2 * (i % 7 + 1), exact in f32 for small n. Returns the largest relative error.
void fill(Tensor& t, int rank) {
  float* d = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) d[i] = static_cast<float>((rank + 1) * (i % 7 + 1));
}
double check(const Tensor& t, int ranks, int times) {
  // After `times` in-place sums of the initial values: sum * n^(times - 1).
  const double base = ranks * (ranks + 1) / 2.0 * std::pow(ranks, times - 1);
  const float* d = t.data<float>();
  double worst = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double want = base * static_cast<double>(i % 7 + 1);
    worst = std::max(worst, std::abs(d[i] - want) / want);
  }
  return worst;
}

}  // namespace

std::string run_allreduce_bench(const AllreduceBenchOptions& o) {
  HF_CHECK_INPUT(o.bytes >= 4 && o.bytes % 4 == 0,
                 "bench allreduce: --bytes must be a positive "
                 "multiple of 4 (f32 elements), got ",
                 o.bytes);
  HF_CHECK_INPUT(o.iters > 0 && o.warmup >= 0, "bench allreduce: --iters must be positive");
  auto world = dist::create_mpi_world();
  const int n = world->size(), rank = world->rank();
  Tensor buf = ops::empty({o.bytes / 4});

  // Correctness first: one all-reduce of known values through each path.
  fill(buf, rank);
  world->allreduce(buf, dist::ReduceOp::kSum)->wait();
  const double err_ours = check(buf, n, 1);
  fill(buf, rank);
  dist::time_raw_mpi_allreduce(buf, 1);
  const double err_mpi = check(buf, n, 1);
  HF_CHECK(err_ours == 0 && err_mpi == 0, "bench allreduce: wrong sums (relative error ours ",
           err_ours, ", MPI ", err_mpi, ")");

  // Timing (values grow by n per call; small integers times powers of n stay finite for the
  // iteration counts used here, and the values do not change the time).
  auto time_ours = [&](int iters) {
    world->barrier()->wait();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) world->allreduce(buf, dist::ReduceOp::kSum)->wait();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
  };
  double ours = 1e30, mpi = 1e30;
  for (int rep = 0; rep < 3; ++rep) {  // interleaved, best of three for each
    fill(buf, rank);
    if (o.warmup > 0) time_ours(o.warmup);
    ours = std::min(ours, time_ours(o.iters));
    fill(buf, rank);
    if (o.warmup > 0) dist::time_raw_mpi_allreduce(buf, o.warmup);
    mpi = std::min(mpi, dist::time_raw_mpi_allreduce(buf, o.iters));
  }
  // Every rank reports the slowest rank's time, as nccl-tests does.
  Tensor times = ops::from_vector({static_cast<float>(ours), static_cast<float>(mpi)}, {2});
  world->allreduce(times, dist::ReduceOp::kMax)->wait();
  ours = times.to_vector()[0];
  mpi = times.to_vector()[1];
  const double bytes = static_cast<double>(o.bytes);
  const double factor = 2.0 * (n - 1) / n;
  char out[512];
  std::snprintf(out, sizeof(out),
                "{\"bench\": \"allreduce\", \"ranks\": %d, \"bytes\": %lld, \"iters\": %d, "
                "\"time_us\": %.1f, \"algbw_gbs\": %.3f, \"busbw_gbs\": %.3f, "
                "\"baseline\": \"MPI_Allreduce\", \"baseline_time_us\": %.1f, "
                "\"baseline_busbw_gbs\": %.3f, \"busbw_vs_baseline\": %.3f, \"correct\": true}",
                n, static_cast<long long>(o.bytes), o.iters, ours * 1e6, bytes / ours / 1e9,
                bytes / ours / 1e9 * factor, mpi * 1e6, bytes / mpi / 1e9 * factor, mpi / ours);
  world.reset();
  return out;
}

}  // namespace hfrun::bench
