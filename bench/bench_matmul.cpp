// hfrun bench matmul: GFLOP/s of ops::matmul on plain row-major [M, K] x [K, N] tensors, as
// models call it (output allocated per call, primitive from the cache), and optionally of a raw
// oneDNN primitive on the same problem, created once and timed the same way. The two results
// are compared, so a fast but wrong path cannot report a number.
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "tensor/backend/cpu/onednn.h"
#include "tensor/ops.h"
#include "tensor/threads.h"

namespace hfrun::bench {
namespace {

constexpr int kRounds = 3;  // measurements per side; the best median is reported

// The baseline: one oneDNN matmul primitive over plain row-major buffers holding a's and b's
// data, built once before timing.
class RawOnednnMatmul {
 public:
  RawOnednnMatmul(const Tensor& a, const Tensor& b, int64_t m, int64_t n, int64_t k)
      : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
    using tag = dnnl::memory::format_tag;
    const auto in =
        a.dtype() == DType::kBF16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
    dnnl::memory::desc a_md({m, k}, in, tag::ab), b_md({k, n}, in, tag::ab);
    dnnl::memory::desc c_md({m, n}, dnnl::memory::data_type::f32, tag::ab);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), engine_);
    impl_ = pd.impl_info_str();
    prim_ = dnnl::matmul(pd);
    a_ = dnnl::memory(a_md, engine_);
    b_ = dnnl::memory(b_md, engine_);
    c_ = dnnl::memory(c_md, engine_);
    std::memcpy(a_.get_data_handle(), a.raw_data(), a.nbytes());
    std::memcpy(b_.get_data_handle(), b.raw_data(), b.nbytes());
  }

  void run() {
    prim_.execute(stream_, {{DNNL_ARG_SRC, a_}, {DNNL_ARG_WEIGHTS, b_}, {DNNL_ARG_DST, c_}});
    stream_.wait();
  }

  const float* result() const { return static_cast<const float*>(c_.get_data_handle()); }
  const std::string& impl() const { return impl_; }

 private:
  dnnl::engine engine_;
  dnnl::stream stream_;
  dnnl::matmul prim_;
  dnnl::memory a_, b_, c_;
  std::string impl_;
};

}  // namespace

double reference_matmul_gflops(bool bf16, double min_seconds, std::string* impl) {
  constexpr int64_t kN = 1024;
  Generator gen(99);
  const DType in = bf16 ? DType::kBF16 : DType::kF32;
  Tensor a = ops::randn({kN, kN}, gen, in), b = ops::randn({kN, kN}, gen, in);
  RawOnednnMatmul raw(a, b, kN, kN, kN);
  if (impl != nullptr) *impl = raw.impl();
  for (int i = 0; i < 3; ++i) raw.run();
  return 2.0 * kN * kN * kN / median_call_seconds([&] { raw.run(); }, min_seconds) * 1e-9;
}

CpuMatmulPeak cpu_matmul_peak(bool bf16, double min_seconds) {
  CpuMatmulPeak peak;
  if (bf16) {
    try {
      peak.gflops = reference_matmul_gflops(true, min_seconds, &peak.impl);
      peak.kind = "onednn bf16 1024^3";
      return peak;
    } catch (const dnnl::error&) {
      // No bf16 matmul in this CPU's oneDNN: the run's GEMMs are f32 ones too.
    }
  }
  peak.gflops = reference_matmul_gflops(false, min_seconds, &peak.impl);
  peak.kind = "onednn f32 1024^3";
  return peak;
}

std::string run_matmul_bench(const MatmulBenchOptions& o) {
  HF_CHECK(o.dtype == "f32" || o.dtype == "bf16", "bench matmul: dtype must be f32 or bf16, got '",
           o.dtype, "'");
  HF_CHECK(o.layout.size() == 2 && (o.layout[0] == 'n' || o.layout[0] == 't') &&
               (o.layout[1] == 'n' || o.layout[1] == 't'),
           "bench matmul: layout must be nn, nt, tn or tt, got '", o.layout, "'");
  const DType in = o.dtype == "bf16" ? DType::kBF16 : DType::kF32;
  Generator gen(1234);
  // A transposed operand is a view of a contiguous tensor of the transposed shape.
  Tensor a = o.layout[0] == 't' ? ops::transpose(ops::randn({o.k, o.m}, gen, in), 0, 1)
                                : ops::randn({o.m, o.k}, gen, in);
  Tensor b = o.layout[1] == 't' ? ops::transpose(ops::randn({o.n, o.k}, gen, in), 0, 1)
                                : ops::randn({o.k, o.n}, gen, in);
  auto ours = [&] { return ops::matmul(a, b, Tensor(), DType::kF32); };
  for (int i = 0; i < o.warmup; ++i) ours();

  std::unique_ptr<RawOnednnMatmul> raw;
  try {
    if (o.baseline) {
      // The same values in plain row-major buffers.
      raw =
          std::make_unique<RawOnednnMatmul>(ops::contiguous(a), ops::contiguous(b), o.m, o.n, o.k);
      for (int i = 0; i < o.warmup; ++i) raw->run();
    }
  } catch (const dnnl::error& e) {
    HF_THROW("bench matmul: cannot build the oneDNN baseline: ", e.what());
  }

  // Alternate the two sides so drift in machine load hits both alike.
  double best_ours = INFINITY, best_raw = INFINITY;
  for (int r = 0; r < kRounds; ++r) {
    best_ours = std::min(best_ours, median_call_seconds(ours, o.min_seconds));
    if (raw) best_raw = std::min(best_raw, median_call_seconds([&] { raw->run(); }, o.min_seconds));
  }

  const double flops = 2.0 * static_cast<double>(o.m) * o.n * o.k;
  const double gflops = flops / best_ours * 1e-9;
  std::ostringstream js;
  js << std::fixed << "{\"op\":\"matmul\",\"m\":" << o.m << ",\"n\":" << o.n << ",\"k\":" << o.k
     << ",\"dtype\":\"" << o.dtype << "\",\"layout\":\"" << o.layout
     << "\",\"threads\":" << num_threads() << ",\"impl\":\"" << cpu::matmul_last_impl() << "\""
     << std::setprecision(1) << ",\"gflops\":" << gflops;
  if (raw) {
    // Same inputs, same accumulation: the two results must agree to rounding.
    std::vector<float> mine = ours().to_vector();
    double max_diff = 0;
    for (size_t i = 0; i < mine.size(); ++i) {
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(mine[i] - raw->result()[i])));
    }
    HF_CHECK(max_diff <= 1e-3 * std::sqrt(static_cast<double>(o.k)),
             "bench matmul: hfrun and "
             "the oneDNN baseline disagree by ",
             max_diff);
    const double base = flops / best_raw * 1e-9;
    js << ",\"baseline_gflops\":" << base << ",\"baseline_impl\":\"" << raw->impl() << "\""
       << std::setprecision(3) << ",\"ratio\":" << gflops / base << std::setprecision(2)
       << std::scientific << ",\"max_abs_diff\":" << max_diff;
  }
  js << "}";
  return js.str();
}

}  // namespace hfrun::bench
