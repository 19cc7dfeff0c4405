// hfrun bench attention: forward + backward of ops::attention on the CPU, the backend's fused
// kernel next to the composed path (matmul + masked softmax keeping [B, H, T, S] probabilities)
// on the same inputs, alternated. Both results are compared, so a fast but wrong kernel cannot
// report a number. q, k, v are split out of one [B, T, 3, H, D]-like projection as models feed
// them (strided views), gout is a view of a [B, T, H, D] gradient.
#include <cmath>
#include <iomanip>
#include <sstream>
#include <string>

#include "bench/bench.h"
#include "tensor/backend/cpu/onednn.h"
#include "tensor/ops.h"
#include "tensor/threads.h"

namespace hfrun::bench {
namespace {

constexpr int kRounds = 3;  // measurements per side; the best median is reported

struct Inputs {
  Tensor q, k, v, gout;
};

// [B, heads, T, D] views of a [B, T, heads, D] tensor, as a model's split projection gives them.
Tensor heads_view(const Tensor& x) {
  return ops::transpose(x, 1, 2);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    m = std::max(m, static_cast<double>(std::fabs(x[i] - y[i])));
  }
  return m;
}

}  // namespace

std::string run_attention_bench(const AttentionBenchOptions& o) {
  HF_CHECK(o.dtype == "f32" || o.dtype == "bf16",
           "bench attention: dtype must be f32 or bf16, got '", o.dtype, "'");
  HF_CHECK(o.heads % o.kv_heads == 0, "bench attention: kv heads must divide heads");
  const DType dt = o.dtype == "bf16" ? DType::kBF16 : DType::kF32;
  Generator gen(4321);
  Inputs in;
  in.q = heads_view(ops::randn({o.batch, o.seq, o.heads, o.head_dim}, gen, dt));
  in.k = heads_view(ops::randn({o.batch, o.seq, o.kv_heads, o.head_dim}, gen, dt));
  in.v = heads_view(ops::randn({o.batch, o.seq, o.kv_heads, o.head_dim}, gen, dt));
  in.gout = heads_view(ops::randn({o.batch, o.seq, o.heads, o.head_dim}, gen, dt));
  const double scale = 1.0 / std::sqrt(static_cast<double>(o.head_dim));
  const int64_t window = o.causal ? o.window : 0;

  struct Result {
    ops::AttentionResult fwd;
    ops::AttentionGrads grads;
  };
  auto run = [&](bool fused) {
    const bool before = ops::set_fused_attention(fused);
    Result r;
    r.fwd = ops::attention(in.q, in.k, in.v, o.causal, scale, Tensor(), true, window);
    const Tensor& q = r.fwd.q.defined() ? r.fwd.q : in.q;
    const Tensor& k = r.fwd.k.defined() ? r.fwd.k : in.k;
    const Tensor& v = r.fwd.v.defined() ? r.fwd.v : in.v;
    r.grads = ops::attention_backward(in.gout, q, k, v, r.fwd, o.causal, scale);
    ops::set_fused_attention(before);
    return r;
  };
  for (int i = 0; i < o.warmup; ++i) {
    run(true);
    run(false);
  }
  double fused_s = INFINITY, composed_s = INFINITY;
  for (int r = 0; r < kRounds; ++r) {
    fused_s = std::min(fused_s, median_call_seconds([&] { run(true); }, o.min_seconds));
    composed_s = std::min(composed_s, median_call_seconds([&] { run(false); }, o.min_seconds));
  }
  const Result a = run(true), b = run(false);
  HF_CHECK(a.fwd.lse.defined(), "bench attention: the CPU backend took no fused kernel for ",
           in.q.str());
  const double d_out = max_abs_diff(a.fwd.out, b.fwd.out);
  const double d_grad =
      std::max({max_abs_diff(a.grads.gq, b.grads.gq), max_abs_diff(a.grads.gk, b.grads.gk),
                max_abs_diff(a.grads.gv, b.grads.gv)});
  const double tol = dt == DType::kBF16 ? 0.1 : 1e-3;
  HF_CHECK(d_out <= tol && d_grad <= tol * 10, "bench attention: fused and composed disagree (out ",
           d_out, ", gradients ", d_grad, ")");
  // Multiply-adds of the composed path: 2 products forward, 4 backward, each B H T S D.
  const double flops = 6.0 * 2.0 * o.batch * o.heads * o.seq * o.seq * o.head_dim;
  const double probs_mb = 4.0 * o.batch * o.heads * o.seq * o.seq / 1e6;
  std::ostringstream js;
  js << std::fixed << "{\"op\":\"attention\",\"batch\":" << o.batch << ",\"heads\":" << o.heads
     << ",\"kv_heads\":" << o.kv_heads << ",\"seq\":" << o.seq << ",\"head_dim\":" << o.head_dim
     << ",\"causal\":" << (o.causal ? "true" : "false") << ",\"window\":" << window
     << ",\"dtype\":\"" << o.dtype << "\",\"threads\":" << num_threads() << ",\"gemm_impl\":\""
     << cpu::matmul_last_impl() << "\"" << std::setprecision(2) << ",\"fused_ms\":" << fused_s * 1e3
     << ",\"composed_ms\":" << composed_s * 1e3 << std::setprecision(3)
     << ",\"speedup\":" << composed_s / fused_s << std::setprecision(1)
     << ",\"composed_dense_gflops\":" << flops / composed_s * 1e-9
     << ",\"composed_probs_mb\":" << probs_mb << std::scientific << std::setprecision(2)
     << ",\"max_abs_diff_out\":" << d_out << ",\"max_abs_diff_grads\":" << d_grad << "}";
  return js.str();
}

}  // namespace hfrun::bench
