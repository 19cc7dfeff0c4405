// hfrun bench block: forward + backward of one GPT-2 block in f32 through the differentiable
// API (what a model runs), timed per step, with the profiler attributing time to oneDNN matmuls
// so the share of the step spent outside GEMMs is visible.
//   h   = x + c_proj(attn(split_heads(c_attn(ln_1(x)))))
//   out = h + mlp_c_proj(gelu_tanh(c_fc(ln_2(h))))
//   loss = sum(out * r) for a fixed random r
#include <chrono>
#include <iomanip>
#include <sstream>
#include <vector>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "bench/bench.h"
#include "tensor/profiler.h"
#include "tensor/threads.h"

namespace hfrun::bench {
namespace {

// GPT-2 block parameters in HF Conv1D layout (weight [in, out]).
struct BlockParams {
  Tensor ln1_w, ln1_b, attn_w, attn_b, attn_proj_w, attn_proj_b;
  Tensor ln2_w, ln2_b, fc_w, fc_b, mlp_proj_w, mlp_proj_b;

  std::vector<Tensor*> all() {
    return {&ln1_w, &ln1_b, &attn_w, &attn_b, &attn_proj_w, &attn_proj_b,
            &ln2_w, &ln2_b, &fc_w,   &fc_b,   &mlp_proj_w,  &mlp_proj_b};
  }
};

// GPT-2's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm gains.
BlockParams init_params(int64_t c, Generator& gen) {
  BlockParams p;
  auto weight = [&](int64_t in, int64_t out) {
    return ops::randn({in, out}, gen, DType::kF32, 0, 0.02);
  };
  p.ln1_w = ops::ones({c});
  p.ln1_b = ops::zeros({c});
  p.attn_w = weight(c, 3 * c);
  p.attn_b = ops::zeros({3 * c});
  p.attn_proj_w = weight(c, c);
  p.attn_proj_b = ops::zeros({c});
  p.ln2_w = ops::ones({c});
  p.ln2_b = ops::zeros({c});
  p.fc_w = weight(c, 4 * c);
  p.fc_b = ops::zeros({4 * c});
  p.mlp_proj_w = weight(4 * c, c);
  p.mlp_proj_b = ops::zeros({c});
  for (Tensor* t : p.all()) t->set_requires_grad(true);
  return p;
}

// x [B, T, C] -> block output [B, T, C].
Tensor block_forward(const Tensor& x, BlockParams& p, int64_t heads) {
  const int64_t b = x.size(0), t = x.size(1), c = x.size(2), d = c / heads;
  Tensor qkv = linear(layer_norm(x, p.ln1_w, p.ln1_b), p.attn_w, p.attn_b);  // [B, T, 3C]
  std::vector<Tensor> parts = split(qkv, c, 2);
  // [B, T, C] -> [B, H, T, D] as views: no copies before attention.
  auto heads_of = [&](const Tensor& part) { return transpose(view(part, {b, t, heads, d}), 1, 2); };
  Tensor y = scaled_dot_product_attention(heads_of(parts[0]), heads_of(parts[1]),
                                          heads_of(parts[2]), /*causal=*/true);
  y = reshape(transpose(y, 1, 2), {b, t, c});
  Tensor h = add(x, linear(y, p.attn_proj_w, p.attn_proj_b));
  Tensor m = gelu(linear(layer_norm(h, p.ln2_w, p.ln2_b), p.fc_w, p.fc_b), /*tanh_approx=*/true);
  return add(h, linear(m, p.mlp_proj_w, p.mlp_proj_b));
}

void train_step(const Tensor& x, const Tensor& r, BlockParams& p, int64_t heads) {
  for (Tensor* t : p.all()) t->set_grad(Tensor());
  autograd::backward(sum(mul(block_forward(x, p, heads), r)));
}

}  // namespace

std::string run_block_bench(const BlockBenchOptions& o) {
  HF_CHECK(o.dim % o.heads == 0, "bench block: dim ", o.dim, " is not divisible by heads ",
           o.heads);
  Generator gen(1234);
  BlockParams params = init_params(o.dim, gen);
  Tensor x = ops::randn({o.batch, o.seq, o.dim}, gen);
  Tensor r = ops::randn({o.batch, o.seq, o.dim}, gen);
  for (int i = 0; i < o.warmup; ++i) train_step(x, r, params, o.heads);

  profiler::reset();
  profiler::set_enabled(true);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < o.iters; ++i) train_step(x, r, params, o.heads);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  profiler::set_enabled(false);
  auto stats = profiler::snapshot();
  const double matmul_seconds = stats.count("matmul") ? stats["matmul"].seconds : 0.0;

  // Forward GEMM FLOPs: 2 * tokens * (C*3C + C*C + C*4C + 4C*C) for the projections plus
  // 2 * 2 * B * T^2 * C for q k^T and probs v; the backward does twice the forward.
  const double tokens = static_cast<double>(o.batch * o.seq), c = static_cast<double>(o.dim);
  const double forward_flops = 24.0 * tokens * c * c + 4.0 * tokens * o.seq * c;
  const double step_s = seconds / o.iters, matmul_s = matmul_seconds / o.iters;
  std::ostringstream js;
  js << std::fixed << std::setprecision(2) << "{\"bench\":\"block\",\"tokens\":" << o.batch * o.seq
     << ",\"batch\":" << o.batch << ",\"seq\":" << o.seq << ",\"dim\":" << o.dim
     << ",\"heads\":" << o.heads << ",\"threads\":" << num_threads()
     << ",\"step_ms\":" << step_s * 1e3 << ",\"matmul_ms\":" << matmul_s * 1e3
     << std::setprecision(3) << ",\"outside_matmul_fraction\":" << 1.0 - matmul_s / step_s
     << std::setprecision(1) << ",\"gflops\":" << 3.0 * forward_flops / step_s * 1e-9 << "}";
  return js.str();
}

}  // namespace hfrun::bench
