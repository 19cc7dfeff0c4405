// A tiny byte-level transformer language model trained with hfrun's tensor library and
// autograd only: embedding + one pre-LayerNorm attention/MLP block + tied output projection,
// cross-entropy, and Adam written out in a few lines. It shows what embedding the library
// looks like until models/, optim/ and the trainer (issue "GPT-2 end to end") arrive.
//
//   train_tiny_lm TEXT_FILE [--steps N] [--seed S]
// Prints the loss every 20 steps; exits 1 if the loss did not fall.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "hfrun/hfrun.h"

using namespace hfrun;

namespace {

constexpr int64_t kVocab = 256, kDim = 64, kHeads = 4, kSeq = 32, kBatch = 8;

struct Param {
  std::string name;
  Tensor value, m, v;  // Adam moments
};

Tensor make_param(std::vector<Param>& params, const std::string& name, const Shape& shape,
                  Generator& gen, double std, double constant = 0) {
  Tensor t = std > 0 ? ops::randn(shape, gen, DType::kF32, 0, std) : ops::full(shape, constant);
  t.set_requires_grad(true);
  params.push_back({name, t, ops::zeros(shape), ops::zeros(shape)});
  return t;
}

struct TinyLM {
  Tensor wte, wpe, ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, fc2_w,
      fc2_b, lnf_w, lnf_b;

  TinyLM(std::vector<Param>& p, Generator& gen) {
    wte = make_param(p, "wte", {kVocab, kDim}, gen, 0.02);
    wpe = make_param(p, "wpe", {kSeq, kDim}, gen, 0.01);
    ln1_w = make_param(p, "ln1.w", {kDim}, gen, 0, 1);
    ln1_b = make_param(p, "ln1.b", {kDim}, gen, 0);
    attn_w = make_param(p, "attn.w", {kDim, 3 * kDim}, gen, 0.02);
    attn_b = make_param(p, "attn.b", {3 * kDim}, gen, 0);
    proj_w = make_param(p, "proj.w", {kDim, kDim}, gen, 0.02 / std::sqrt(2.0));
    proj_b = make_param(p, "proj.b", {kDim}, gen, 0);
    ln2_w = make_param(p, "ln2.w", {kDim}, gen, 0, 1);
    ln2_b = make_param(p, "ln2.b", {kDim}, gen, 0);
    fc_w = make_param(p, "fc.w", {kDim, 4 * kDim}, gen, 0.02);
    fc_b = make_param(p, "fc.b", {4 * kDim}, gen, 0);
    fc2_w = make_param(p, "fc2.w", {4 * kDim, kDim}, gen, 0.02 / std::sqrt(2.0));
    fc2_b = make_param(p, "fc2.b", {kDim}, gen, 0);
    lnf_w = make_param(p, "lnf.w", {kDim}, gen, 0, 1);
    lnf_b = make_param(p, "lnf.b", {kDim}, gen, 0);
  }

  // ids, targets [B, T] -> mean cross-entropy.
  Tensor loss(const Tensor& ids, const Tensor& targets) const {
    const int64_t B = ids.size(0), T = ids.size(1), C = kDim, H = kHeads, D = kDim / kHeads;
    Tensor pos = ops::arange(T);
    Tensor x = add(embedding(wte, ids), embedding(wpe, pos));  // [B, T, C]
    // attention: qkv [B, T, 3C] -> q, k, v [B, H, T, D]
    Tensor qkv = linear(layer_norm(x, ln1_w, ln1_b), attn_w, attn_b);
    auto heads = [&](int64_t i) {
      return transpose(reshape(narrow(qkv, 2, i * C, C), {B, T, H, D}), 1, 2);
    };
    Tensor y = scaled_dot_product_attention(heads(0), heads(1), heads(2), /*causal=*/true);
    y = reshape(transpose(y, 1, 2), {B, T, C});
    x = add(x, linear(y, proj_w, proj_b));
    Tensor h = gelu(linear(layer_norm(x, ln2_w, ln2_b), fc_w, fc_b), /*tanh_approx=*/true);
    x = add(x, linear(h, fc2_w, fc2_b));
    // Tied head: the table [V, C] in nn.Linear's [out, in] layout.
    Tensor logits = linear(layer_norm(x, lnf_w, lnf_b), wte, Tensor(), std::nullopt, std::nullopt,
                           WeightLayout::kOutIn);
    return cross_entropy(logits, targets);
  }
};

// Adam (torch.optim.Adam semantics, no weight decay) over every parameter.
void adam_step(std::vector<Param>& params, int step, double lr) {
  autograd::NoGradGuard no_grad;
  const double b1 = 0.9, b2 = 0.99, eps = 1e-8;
  const double c1 = 1 - std::pow(b1, step), c2 = 1 - std::pow(b2, step);
  for (Param& p : params) {
    Tensor g = p.value.grad();
    ops::scale_(p.m, b1);
    ops::add_(p.m, g, 1 - b1);
    ops::scale_(p.v, b2);
    ops::add_(p.v, ops::mul(g, g), 1 - b2);
    Tensor denom = ops::add_scalar(ops::mul_scalar(ops::sqrt(p.v), 1 / std::sqrt(c2)), eps);
    ops::add_(p.value, ops::div(p.m, denom), -lr / c1);
    p.value.set_grad(Tensor());
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0) {
      std::cerr << "usage: train_tiny_lm TEXT_FILE [--steps N] [--seed S]\n";
      return 2;
    }
    int steps = 200;
    uint64_t seed = 1234;
    for (int i = 2; i + 1 < argc; i += 2) {
      if (std::strcmp(argv[i], "--steps") == 0)
        steps = std::atoi(argv[i + 1]);
      else if (std::strcmp(argv[i], "--seed") == 0)
        seed = std::strtoull(argv[i + 1], nullptr, 10);
      else {
        std::cerr << "train_tiny_lm: unknown option " << argv[i] << "\n";
        return 2;
      }
    }
    std::ifstream in(argv[1], std::ios::binary);
    if (!in) {
      std::cerr << "train_tiny_lm: cannot open " << argv[1] << "\n";
      return 2;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    if (static_cast<int64_t>(text.size()) < kSeq + 2) {
      std::cerr << "train_tiny_lm: " << argv[1] << " is shorter than " << kSeq + 2 << " bytes\n";
      return 2;
    }

    Generator gen(seed);
    std::vector<Param> params;
    TinyLM model(params, gen);
    int64_t n_params = 0;
    for (auto& p : params) n_params += p.value.numel();
    std::printf("tiny LM: %lld parameters, %zu bytes of text, %d steps, %d threads\n",
                static_cast<long long>(n_params), text.size(), steps, num_threads());

    std::vector<int64_t> ids(kBatch * kSeq), targets(kBatch * kSeq);
    double first = 0, last = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int step = 1; step <= steps; ++step) {
      for (int64_t b = 0; b < kBatch; ++b) {
        int64_t start = static_cast<int64_t>(gen.next_u32() % (text.size() - kSeq - 1));
        for (int64_t t = 0; t < kSeq; ++t) {
          ids[b * kSeq + t] = static_cast<unsigned char>(text[start + t]);
          targets[b * kSeq + t] = static_cast<unsigned char>(text[start + t + 1]);
        }
      }
      Tensor loss =
          model.loss(ops::from_ints(ids, {kBatch, kSeq}), ops::from_ints(targets, {kBatch, kSeq}));
      autograd::backward(loss);
      adam_step(params, step, 3e-3);
      double l = loss.item();
      if (step == 1) first = l;
      last = l;
      if (step == 1 || step % 20 == 0) {
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("step %4d  loss %.4f  %.0f tok/s\n", step, l, step * kBatch * kSeq / secs);
      }
    }
    std::printf("loss %.4f -> %.4f (uniform over bytes would be %.4f)\n", first, last,
                std::log(256.0));
    return last < first ? 0 : 1;
  } catch (const Error& e) {
    std::cerr << "train_tiny_lm: error: " << e.what() << "\n";
    return 1;
  }
}
