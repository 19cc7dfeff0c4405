// CPU vs CUDA parity for every op, as a table (in the style of ggml's test-backend-ops): each
// case builds the same seeded inputs on both devices, runs the op forward and, where autograd
// differentiates it, backward (through a random projection of the output, so every gradient
// element matters), and compares every output and gradient with the CPU's by relative L2 error
// against a per-case tolerance. One row is printed per output:
//   op | shape | dtype | output | rel L2 error | tolerance | PASS/FAIL
// Shapes include non-contiguous (transposed, narrowed) and broadcast (stride 0) inputs, and bf16
// variants; f32 tolerances are near rounding level, bf16 ones allow for its 8-bit mantissa.
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "tensor/cuda/cuda_test_util.h"

namespace hfrun {
namespace {

using testing::make_input;
using testing::rel_l2;
using Outputs = std::vector<std::pair<std::string, Tensor>>;

struct Case {
  std::string op, shape;
  DType dtype;
  double tol;
  std::function<Outputs(Device)> run;
};

constexpr double kTolF32 = 2e-6;     // elementwise f32 (libm differences)
constexpr double kTolF32Red = 1e-5;  // f32 reductions, GEMMs, normalisations
constexpr double kTolBf16 = 1e-2;    // bf16 outputs (8-bit mantissa)

Tensor leaf(const Shape& s, uint64_t seed, Device d, DType t = DType::kF32, double scale = 1.0,
            double shift = 0.0) {
  Tensor x = make_input(s, seed, d, t, scale, shift);
  x.set_requires_grad(true);
  return x;
}

// y, then backward of sum(y * r) for a random r; the gradients of the named leaves.
Outputs with_grads(const Tensor& y, const std::vector<std::pair<std::string, Tensor>>& leaves,
                   uint64_t seed) {
  Outputs out{{"y", y.detach()}};
  const Tensor r = make_input(y.sizes(), seed ^ 0x5eedu, y.device());
  autograd::backward(sum(mul(to_dtype(y, DType::kF32), r)));
  for (const auto& [name, t] : leaves) out.emplace_back("d" + name, t.grad());
  return out;
}

std::vector<Case> make_cases() {
  std::vector<Case> cases;
  const DType f32 = DType::kF32, bf16 = DType::kBF16;
  auto tol_for = [](DType t, double f32_tol) { return t == DType::kF32 ? f32_tol : kTolBf16; };

  // ---- copies, casts, fills, random ----
  cases.push_back({"cast f32->bf16", "[33, 65]", bf16, 0, [](Device d) {
                     return Outputs{{"y", ops::to_dtype(make_input({33, 65}, 1, d), DType::kBF16)}};
                   }});
  cases.push_back({"cast bf16->f32", "[33, 65]", bf16, 0, [](Device d) {
                     Tensor x = make_input({33, 65}, 2, d, DType::kBF16);
                     return Outputs{{"y", ops::to_dtype(x, DType::kF32)}};
                   }});
  cases.push_back({"cast f32->f16->i32", "[1000]", f32, 0, [](Device d) {
                     Tensor x = ops::mul_scalar(make_input({1000}, 3, d), 100.0);
                     return Outputs{{"f16", ops::to_dtype(x, DType::kF16)},
                                    {"i32", ops::to_dtype(x, DType::kI32)},
                                    {"bool", ops::to_dtype(x, DType::kBool)}};
                   }});
  cases.push_back({"contiguous", "transpose [17, 40] + narrow", f32, 0, [](Device d) {
                     Tensor x = make_input({40, 17, 3}, 4, d);
                     Tensor v = ops::narrow(ops::transpose(x, 0, 1), 2, 1, 2);
                     return Outputs{{"y", ops::contiguous(v)}};
                   }});
  cases.push_back({"copy_ broadcast", "[1, 7] -> [5, 7] bf16 dst", bf16, 0, [](Device d) {
                     Tensor dst = ops::zeros({5, 7}, DType::kBF16, d);
                     ops::copy_(dst, make_input({1, 7}, 5, d));
                     return Outputs{{"y", dst}};
                   }});
  cases.push_back({"fill/full", "[3, 1000]", f32, 0, [](Device d) {
                     return Outputs{{"f32", ops::full({3, 1000}, 0.1, DType::kF32, d)},
                                    {"bf16", ops::full({3, 1000}, 0.1, DType::kBF16, d)},
                                    {"i64", ops::full({3, 1000}, -7, DType::kI64, d)}};
                   }});
  cases.push_back({"rand/randn", "[1001] seed 9", f32, 0, [](Device d) {
                     Generator g(9);
                     Tensor u = ops::rand({1001}, g, DType::kF32, -2, 3, d);
                     Tensor n = ops::randn({1001}, g, DType::kF32, 0.5, 2, d);
                     Tensor b = ops::randn({1001}, g, DType::kBF16, 0, 1, d);
                     return Outputs{{"uniform", u}, {"normal", n}, {"normal_bf16", b}};
                   }});
  cases.push_back({"dropout", "[999] p 0.3", f32, 0, [](Device d) {
                     Tensor x = make_input({999}, 6, d);
                     return Outputs{{"y", ops::dropout(x, 0.3, 1234)},
                                    {"gx", ops::dropout_backward(x, 0.3, 1234)}};
                   }});

  // ---- unary ----
  const UnaryOp unary_ops[] = {UnaryOp::kNeg,   UnaryOp::kExp,   UnaryOp::kLog,      UnaryOp::kTanh,
                               UnaryOp::kSqrt,  UnaryOp::kRsqrt, UnaryOp::kSigmoid,  UnaryOp::kRelu,
                               UnaryOp::kSilu,  UnaryOp::kGelu,  UnaryOp::kGeluTanh, UnaryOp::kAbs,
                               UnaryOp::kSquare};
  for (UnaryOp op : unary_ops) {
    const bool positive = op == UnaryOp::kLog || op == UnaryOp::kSqrt || op == UnaryOp::kRsqrt;
    for (DType t : {f32, bf16}) {
      cases.push_back(
          {ops::unary_op_name(op), "[37, 129]", t, tol_for(t, kTolF32 * 4),
           [op, t, positive](Device d) {
             Tensor x = leaf({37, 129}, 10 + static_cast<int>(op), d, t, 1.0, positive ? 3.0 : 0.0);
             return with_grads(unary(op, x), {{"x", x}}, 11);
           }});
    }
  }
  cases.push_back({"pow_scalar", "[64, 33] p 3, 0.5", f32, kTolF32Red, [](Device d) {
                     Tensor x = leaf({64, 33}, 12, d, DType::kF32, 1.0, 3.0);
                     return with_grads(add(pow_scalar(x, 3.0), pow_scalar(x, 0.5)), {{"x", x}}, 13);
                   }});

  // ---- binary, broadcast and strided ----
  for (DType t : {f32, bf16}) {
    cases.push_back(
        {"add/sub/mul/div", "[4, 1, 8] . [5, 8]", t, tol_for(t, kTolF32), [t](Device d) {
           Tensor a = leaf({4, 1, 8}, 20, d, t), b = leaf({5, 8}, 21, d, t, 1.0, 4.0);
           Tensor y = add(mul(sub(a, b), b), div(a, b));
           return with_grads(y, {{"a", a}, {"b", b}}, 22);
         }});
  }
  cases.push_back({"mul transposed", "[48, 32]^T . [32, 48]", f32, kTolF32, [](Device d) {
                     Tensor a = leaf({48, 32}, 23, d), b = leaf({32, 48}, 24, d);
                     return with_grads(mul(transpose(a, 0, 1), b), {{"a", a}, {"b", b}}, 25);
                   }});
  cases.push_back({"scalar ops", "[100] + 2.5, * -3", f32, kTolF32, [](Device d) {
                     Tensor x = leaf({100}, 26, d);
                     return with_grads(mul_scalar(add_scalar(x, 2.5), -3.0), {{"x", x}}, 27);
                   }});
  cases.push_back({"maximum/eq/gt/lt", "[6, 1] . [1, 9]", f32, 0, [](Device d) {
                     Tensor a = make_input({6, 1}, 28, d), b = make_input({1, 9}, 29, d);
                     return Outputs{{"max", ops::maximum(a, b)},
                                    {"eq", ops::eq(a, a)},
                                    {"gt", ops::gt(a, b)},
                                    {"lt", ops::lt(a, b)}};
                   }});
  cases.push_back({"integer add/div", "i64 [50] . [1]", f32, 0, [](Device d) {
                     Tensor a = ops::to_device(ops::arange(50), d);
                     Tensor b = ops::to_device(ops::from_ints({7}, {1}), d);
                     return Outputs{{"add", ops::add(a, b)}, {"div", ops::div(a, b)}};
                   }});
  cases.push_back({"where/masked_fill", "cond [3, 1, 5] . [4, 5]", f32, kTolF32, [](Device d) {
                     Tensor a = leaf({4, 5}, 30, d), b = leaf({3, 4, 5}, 31, d);
                     Tensor cond = ops::gt(make_input({3, 1, 5}, 32, d), ops::scalar(0.0));
                     Tensor y = add(where(cond, a, b), masked_fill(b, cond, -1.5));
                     return with_grads(y, {{"a", a}, {"b", b}}, 33);
                   }});

  // ---- reductions ----
  for (DType t : {f32, bf16}) {
    cases.push_back(
        {"sum rows/cols/all, mean", "[7, 300, 5]", t, tol_for(t, kTolF32Red), [t](Device d) {
           Tensor x = leaf({7, 300, 5}, 40, d, t);
           Tensor y = add(sum(x, {1}), mean(x, {1}));
           Outputs o = with_grads(y, {{"x", x}}, 41);
           o.emplace_back("sum_last", ops::sum(x.detach(), {2}));
           o.emplace_back("sum_all", ops::sum(x.detach()));
           return o;
         }});
  }
  // Long columns (a bias gradient: tokens x features summed over tokens) take the chunked
  // two-pass kernel; a ragged last chunk and a ragged column tile included.
  for (DType t : {f32, bf16}) {
    cases.push_back({"sum long columns", "[2, 1300, 70] dim 1; [5000, 33] dim 0", t,
                     tol_for(t, kTolF32Red), [t](Device d) {
                       Tensor x = leaf({2, 1300, 70}, 44, d, t);
                       Outputs o = with_grads(sum(x, {1}), {{"x", x}}, 45);
                       o.emplace_back("sum_dim0", ops::sum(make_input({5000, 33}, 46, d, t), {0}));
                       return o;
                     }});
  }
  cases.push_back({"max", "[9, 257] dim 1 and dim 0", f32, 0, [](Device d) {
                     Tensor x = leaf({9, 257}, 42, d);
                     ops::MaxResult r1 = ops::max(x.detach(), 1), r0 = ops::max(x.detach(), 0);
                     Outputs o = with_grads(max(x, 1), {{"x", x}}, 43);
                     o.emplace_back("idx1", r1.indices);
                     o.emplace_back("val0", r0.values);
                     o.emplace_back("idx0", r0.indices);
                     return o;
                   }});

  // ---- matmul (cuBLASLt) ----
  struct MM {
    std::string name;
    Shape a, b;
    bool ta, tb, bias;
  };
  const MM mms[] = {
      {"[64, 96] x [96, 80] + bias", {64, 96}, {96, 80}, false, false, true},
      {"a^T [96, 64]^T x [96, 80]", {96, 64}, {96, 80}, true, false, false},
      {"[64, 96] x b^T [80, 96]^T + bias", {64, 96}, {80, 96}, false, true, true},
      {"[3, 17, 33] x [33, 29] (folded)", {3, 17, 33}, {33, 29}, false, false, false},
      {"[2, 3, 17, 8] x [2, 3, 8, 19]", {2, 3, 17, 8}, {2, 3, 8, 19}, false, false, false},
      {"[4, 16, 8] x [1, 8, 12] broadcast", {4, 16, 8}, {1, 8, 12}, false, false, false},
      {"[1, 5] x [5, 1]", {1, 5}, {5, 1}, false, false, false}};
  for (const MM& m : mms) {
    for (DType t : {f32, bf16}) {
      cases.push_back({"matmul", m.name, t, tol_for(t, kTolF32Red), [m, t](Device d) {
                         Tensor a = leaf(m.a, 50, d, t), b = leaf(m.b, 51, d, t);
                         Tensor av = m.ta ? transpose(a, -1, -2) : a;
                         Tensor bv = m.tb ? transpose(b, -1, -2) : b;
                         Tensor bias;
                         if (m.bias) bias = leaf({bv.size(-1)}, 52, d, DType::kF32);
                         Tensor y = matmul(av, bv, bias, DType::kF32);
                         std::vector<std::pair<std::string, Tensor>> leaves{{"a", a}, {"b", b}};
                         if (m.bias) leaves.emplace_back("bias", bias);
                         return with_grads(y, leaves, 53);
                       }});
    }
  }
  cases.push_back(
      {"matmul bf16 out", "[32, 64] x [64, 48] + f32 bias", bf16, kTolBf16, [](Device d) {
         Tensor a = make_input({32, 64}, 54, d, DType::kBF16);
         Tensor b = make_input({64, 48}, 55, d, DType::kBF16);
         Tensor bias = make_input({48}, 56, d);
         return Outputs{{"y", ops::matmul(a, b, bias)}};
       }});
  cases.push_back({"linear", "[2, 9, 40] x [40, 24] + bias", f32, kTolF32Red, [](Device d) {
                     Tensor x = leaf({2, 9, 40}, 57, d), w = leaf({40, 24}, 58, d);
                     Tensor b = leaf({24}, 59, d);
                     return with_grads(linear(x, w, b), {{"x", x}, {"w", w}, {"b", b}}, 60);
                   }});

  // linear + tanh GELU as one GEMM (cuBLASLt's GELU epilogue) against the CPU's composition.
  for (DType t : {f32, bf16}) {
    for (bool with_bias : {true, false}) {
      cases.push_back({"linear_gelu",
                       with_bias ? "[2, 40, 64] x [64, 96] + bias" : "[80, 64] x [64, 96]", t,
                       tol_for(t, kTolF32Red), [t, with_bias](Device d) {
                         Tensor x = leaf({80, 64}, 64, d), w = leaf({64, 96}, 65, d);
                         Tensor b = leaf({96}, 66, d);
                         Tensor xi = with_bias ? reshape(x, {2, 40, 64}) : x;
                         Tensor y = linear_gelu(xi, w, with_bias ? b : Tensor(), t, t);
                         Outputs o = with_grads(y, {{"x", x}, {"w", w}, {"b", b}}, 67);
                         if (!with_bias) o.pop_back();
                         return o;
                       }});
    }
  }

  // ---- softmax, attention ----
  for (DType t : {f32, bf16}) {
    cases.push_back({"softmax/log_softmax", "[6, 50, 7] dims -1 and 1", t, tol_for(t, kTolF32Red),
                     [t](Device d) {
                       Tensor x = leaf({6, 50, 7}, 70, d, t, 3.0);
                       Tensor y = add(softmax(x, -1), log_softmax(x, 1));
                       return with_grads(y, {{"x", x}}, 71);
                     }});
    cases.push_back({"softmax long row", "[3, 5000]", t, tol_for(t, kTolF32Red), [t](Device d) {
                       Tensor x = leaf({3, 5000}, 72, d, t, 4.0);
                       return with_grads(log_softmax(x, -1), {{"x", x}}, 73);
                     }});
    cases.push_back(
        {"attention causal", "q, k, v [2, 3, 17, 16]", t, tol_for(t, kTolF32Red), [t](Device d) {
           Tensor q = leaf({2, 3, 17, 16}, 74, d, t), k = leaf({2, 3, 17, 16}, 75, d, t);
           Tensor v = leaf({2, 3, 17, 16}, 76, d, t);
           Tensor y = scaled_dot_product_attention(q, k, v, true);
           return with_grads(y, {{"q", q}, {"k", k}, {"v", v}}, 77);
         }});
  }
  cases.push_back(
      {"attention S > T", "q [1, 2, 5, 8], k, v [1, 2, 11, 8]", f32, kTolF32Red, [](Device d) {
         Tensor q = leaf({1, 2, 5, 8}, 78, d), k = leaf({1, 2, 11, 8}, 79, d);
         Tensor v = leaf({1, 2, 11, 8}, 80, d);
         Tensor y = scaled_dot_product_attention(q, k, v, true);
         return with_grads(y, {{"q", q}, {"k", k}, {"v", v}}, 81);
       }});

  // Fused attention (the CUDA backend's flash kernels take 16-bit q, k, v with head size 16, 32,
  // 64 or 128) against the CPU's composed attention: several tiles with T and S not multiples
  // of 64, causal with S > T and with S < T (rows that see no key), non-causal, and q, k, v
  // split out of one [B, T, 3C] projection as the model does.
  struct AttnShape {
    int64_t b, h, t, s, d;
    bool causal;
    DType dt;
  };
  const AttnShape attn_shapes[] = {{2, 3, 150, 150, 64, true, bf16},
                                   {1, 2, 70, 70, 32, false, DType::kF16},
                                   {1, 2, 50, 130, 64, true, bf16},
                                   {1, 2, 90, 40, 16, true, bf16},
                                   {1, 2, 80, 80, 128, true, DType::kF16}};
  for (const AttnShape& a : attn_shapes) {
    const std::string shape = "q [" + std::to_string(a.b) + ", " + std::to_string(a.h) + ", " +
                              std::to_string(a.t) + ", " + std::to_string(a.d) + "] S " +
                              std::to_string(a.s) + (a.causal ? " causal" : "");
    cases.push_back({"attention (fused)", shape, a.dt, kTolBf16, [a](Device d) {
                       Tensor q = leaf({a.b, a.h, a.t, a.d}, 82, d, a.dt);
                       Tensor k = leaf({a.b, a.h, a.s, a.d}, 83, d, a.dt);
                       Tensor v = leaf({a.b, a.h, a.s, a.d}, 84, d, a.dt);
                       Tensor y = scaled_dot_product_attention(q, k, v, a.causal);
                       return with_grads(y, {{"q", q}, {"k", k}, {"v", v}}, 85);
                     }});
  }
  // Grouped-query attention: 6 query heads over 2 KV heads (the fused kernels read each KV head
  // for its group; dK, dV sum the group in registers), fused in bf16 and composed in f32.
  for (DType t : {bf16, f32}) {
    cases.push_back({t == bf16 ? "attention GQA (fused)" : "attention GQA",
                     "q [2, 6, 100, 64], k, v [2, 2, 130, 64] causal", t,
                     t == bf16 ? kTolBf16 : kTolF32Red, [t](Device d) {
                       Tensor q = leaf({2, 6, 100, 64}, 88, d, t);
                       Tensor k = leaf({2, 2, 130, 64}, 89, d, t);
                       Tensor v = leaf({2, 2, 130, 64}, 90, d, t);
                       Tensor y = scaled_dot_product_attention(q, k, v, true);
                       return with_grads(y, {{"q", q}, {"k", k}, {"v", v}}, 91);
                     }});
  }
  cases.push_back(
      {"attention (fused)", "q, k, v from [2, 100, 3*4*64]", bf16, kTolBf16, [](Device d) {
         const int64_t B = 2, T = 100, H = 4, D = 64, C = H * D;
         Tensor qkv = leaf({B, T, 3 * C}, 86, d, bf16, 2.0);
         auto heads = [&](int64_t i) {
           return transpose(reshape(narrow(qkv, 2, i * C, C), {B, T, H, D}), 1, 2);
         };
         Tensor y = scaled_dot_product_attention(heads(0), heads(1), heads(2), true);
         y = reshape(transpose(y, 1, 2), {B, T, C});
         return with_grads(y, {{"qkv", qkv}}, 87);
       }});

  // ---- rotary embeddings (Llama family): rotate-half RoPE on [B, H, T, D] and on a transposed
  // [B, T, H, D] view, as the models pass it ----
  for (DType t : {f32, bf16}) {
    cases.push_back({"rotary_embedding", "[2, 3, 17, 64] and a transposed view", t,
                     tol_for(t, kTolF32Red), [t](Device d) {
                       Tensor x = leaf({2, 3, 17, 64}, 92, d, t);
                       Tensor xt = leaf({2, 17, 3, 64}, 93, d, t);
                       Tensor cs = make_input({17, 64}, 94, d);
                       Tensor sn = make_input({17, 64}, 95, d);
                       Tensor y = add(rotary_embedding(x, cs, sn),
                                      rotary_embedding(transpose(xt, 1, 2), cs, sn));
                       return with_grads(y, {{"x", x}, {"xt", xt}}, 96);
                     }});
  }

  // ---- normalisation ----
  for (DType t : {f32, bf16}) {
    for (int64_t C : {64, 768, 1500}) {
      const std::string shape = "[3, 41, " + std::to_string(C) + "]";
      cases.push_back({"layer_norm", shape, t, tol_for(t, kTolF32Red), [t, C](Device d) {
                         Tensor x = leaf({3, 41, C}, 90, d, t, 2.0, 1.0);
                         Tensor w = leaf({C}, 91, d), b = leaf({C}, 92, d);
                         return with_grads(layer_norm(x, w, b), {{"x", x}, {"w", w}, {"b", b}}, 93);
                       }});
      cases.push_back({"rms_norm", shape, t, tol_for(t, kTolF32Red), [t, C](Device d) {
                         Tensor x = leaf({3, 41, C}, 94, d, t);
                         Tensor w = leaf({C}, 95, d);
                         return with_grads(rms_norm(x, w), {{"x", x}, {"w", w}}, 96);
                       }});
    }
  }

  // ---- embedding, cross-entropy ----
  for (DType idt : {DType::kI64, DType::kI32}) {
    cases.push_back({"embedding", std::string("[50, 32] ids [4, 30] ") + dtype_name(idt), f32,
                     kTolF32, [idt](Device d) {
                       Tensor w = leaf({50, 32}, 100, d);
                       std::vector<int64_t> ids;
                       for (int i = 0; i < 120; ++i)
                         ids.push_back((i * 7 + i / 5) % 50 / (i % 3 + 1));
                       Tensor id = ops::to_device(ops::from_ints(ids, {4, 30}, idt), d);
                       return with_grads(embedding(w, id), {{"w", w}}, 101);
                     }});
  }
  for (DType t : {f32, bf16}) {
    cases.push_back(
        {"cross_entropy", "[37, 1000] ignore -100", t, tol_for(t, kTolF32Red), [t](Device d) {
           Tensor x = leaf({37, 1000}, 110, d, t, 3.0);
           std::vector<int64_t> tg;
           for (int i = 0; i < 37; ++i) tg.push_back(i % 5 == 0 ? -100 : (i * 131) % 1000);
           Tensor target = ops::to_device(ops::from_ints(tg, {37}), d);
           Tensor loss = cross_entropy(x, target);
           autograd::backward(loss);
           return Outputs{{"loss", loss.detach()}, {"dx", x.grad()}};
         }});
  }
  cases.push_back({"cross_entropy all ignored", "[4, 10]", f32, 0, [](Device d) {
                     Tensor x = leaf({4, 10}, 111, d);
                     Tensor target = ops::to_device(ops::from_ints({-1, -1, -1, -1}, {4}), d);
                     Tensor loss = cross_entropy(x, target, -1);
                     autograd::backward(loss);
                     return Outputs{{"loss", loss.detach()}, {"dx", x.grad()}};
                   }});

  // ---- cat / split ----
  cases.push_back({"cat/split", "[3, 4] + [3, 6] dim 1", f32, 0, [](Device d) {
                     Tensor a = leaf({3, 4}, 120, d), b = leaf({3, 6}, 121, d);
                     Tensor y = cat({a, b}, 1);
                     std::vector<Tensor> parts = split(y, 5, 1);
                     return with_grads(mul(parts[0], parts[1]), {{"a", a}, {"b", b}}, 122);
                   }});
  return cases;
}

TEST(CudaParity, EveryOpMatchesCpu) {
  HF_REQUIRE_CUDA();
  std::printf("%s\n", cuda_status().c_str());
  std::printf("%-26s %-36s %-5s %-12s %-10s %-8s %s\n", "op", "shape", "dtype", "output", "rel_l2",
              "tol", "result");
  int failures = 0, rows = 0;
  for (const Case& c : make_cases()) {
    Outputs cpu, gpu;
    std::string error;
    try {
      cpu = c.run(Device::cpu());
      gpu = c.run(testing::cuda0());
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty() || cpu.size() != gpu.size()) {
      ++failures;
      std::printf("%-26s %-36s %-5s %-12s %-10s %-8s FAIL: %s\n", c.op.c_str(), c.shape.c_str(),
                  dtype_name(c.dtype), "-", "-", "-",
                  error.empty() ? "output counts differ" : error.c_str());
      ADD_FAILURE() << c.op << " " << c.shape << " " << dtype_name(c.dtype) << ": " << error;
      continue;
    }
    for (size_t i = 0; i < cpu.size(); ++i) {
      ++rows;
      const std::string& name = cpu[i].first;
      const Tensor& want = cpu[i].second;
      const Tensor& got = gpu[i].second;
      std::string why;
      double err = 0;
      if (!want.defined() || !got.defined()) {
        why = want.defined() == got.defined() ? "" : "defined on one device only";
      } else if (!got.device().is_cuda()) {
        why = "result is on " + got.device().str() + ", not cuda";
      } else if (got.dtype() != want.dtype()) {
        why = std::string("dtype ") + dtype_name(got.dtype()) + " vs " + dtype_name(want.dtype());
      } else {
        err = rel_l2(got, want);
      }
      const bool pass = why.empty() && err <= c.tol;
      if (!pass) ++failures;
      std::printf("%-26s %-36s %-5s %-12s %-10.3g %-8.1g %s%s\n", c.op.c_str(), c.shape.c_str(),
                  dtype_name(c.dtype), name.c_str(), err, c.tol, pass ? "PASS" : "FAIL",
                  why.empty() ? "" : (": " + why).c_str());
      EXPECT_TRUE(pass) << c.op << " " << c.shape << " " << dtype_name(c.dtype) << " output "
                        << name << ": rel L2 error " << err << " > tolerance " << c.tol << " "
                        << why;
    }
  }
  std::printf("%d rows, %d failures\n", rows, failures);
  std::fflush(stdout);
}

}  // namespace
}  // namespace hfrun
