// hfrun bench adamw: the optimizer step as the trainer runs it (optim::AdamW over views of one
// flat parameter buffer and one flat gradient buffer, cut like GPT-2 124M's 148 tensors) and its
// memory bandwidth, next to the device's own copy bandwidth measured in the same run (a
// same-size f32 device-to-device copy). AdamW moves 28 bytes per element (reads p, g, m, v;
// writes p, m, v), the copy 8. Then the step writing bf16 copies of the weights (mixed
// precision's, as the trainer carries them) next to the step followed by casts of them.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "common/error.h"
#include "optim/optimizer.h"
#include "tensor/ops.h"

namespace hfrun::bench {
namespace {

// Median seconds of fn() followed by a device synchronisation, after 3 warm-up calls.
template <typename Fn>
double median_synced(Fn&& fn, Device device, double min_seconds) {
  for (int i = 0; i < 3; ++i) fn();
  synchronize(device);
  return median_call_seconds(
      [&] {
        fn();
        synchronize(device);
      },
      min_seconds);
}

// Tensor sizes of GPT-2 (n_layer, n_embd, vocab 50257, 1024 positions) in named_parameters()
// order, scaled to `total` elements when total differs from the model's.
std::vector<int64_t> gpt2_sizes(int64_t layers, int64_t c, int64_t total) {
  std::vector<int64_t> sizes = {50257 * c, 1024 * c};
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t n : {c, c, c * 3 * c, 3 * c, c * c, c, c, c, c * 4 * c, 4 * c, 4 * c * c, c})
      sizes.push_back(n);
  }
  sizes.push_back(c);
  sizes.push_back(c);
  int64_t model = 0;
  for (int64_t n : sizes) model += n;
  if (total <= 0 || total == model) return sizes;
  int64_t used = 0;
  for (int64_t& n : sizes) {
    n = std::max<int64_t>(1, n * total / model);
    used += n;
  }
  sizes.back() += std::max<int64_t>(0, total - used);
  return sizes;
}

}  // namespace

std::string run_adamw_bench(const AdamWBenchOptions& o) {
  const Device device = o.device;
  const std::vector<int64_t> sizes = gpt2_sizes(12, 768, o.params);
  int64_t total = 0;
  for (int64_t n : sizes) total += n;
  Generator gen(1);
  Tensor flat_p = ops::randn({total}, gen, DType::kF32, 0.0, 0.02, device);
  Tensor flat_g = ops::randn({total}, gen, DType::kF32, 0.0, 1e-3, device);
  std::vector<optim::ParamRef> refs;
  int64_t at = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor p = ops::narrow(flat_p, 0, at, sizes[i]);
    p.set_grad(ops::narrow(flat_g, 0, at, sizes[i]));
    refs.push_back({"p" + std::to_string(i), p, i % 2 == 0});
    at += sizes[i];
  }
  optim::AdamWOptions ao;
  ao.lr = 6e-4;
  ao.betas = {0.9, 0.95};
  ao.weight_decay = 0.1;
  optim::AdamW opt(refs, ao);
  const double step_s = median_synced([&] { opt.step(); }, device, o.min_seconds);
  // Mixed precision's bf16 weight copies (every other tensor, as the decay flag above): written
  // in the update's pass (what the trainer does), against the update followed by a cast of each
  // weight (what each step's forward did before).
  std::vector<Tensor> copies(refs.size());
  for (size_t i = 0; i < refs.size(); i += 2) {
    copies[i] = ops::empty(refs[i].param.sizes(), DType::kBF16, device);
  }
  const double fused_s = median_synced([&] { opt.step(1.0, copies); }, device, o.min_seconds);
  const double cast_s = median_synced(
      [&] {
        opt.step();
        for (size_t i = 0; i < refs.size(); i += 2) {
          copies[i] = ops::to_dtype(refs[i].param, DType::kBF16);
        }
      },
      device, o.min_seconds);

  Tensor dst = ops::empty({total}, DType::kF32, device);
  const double copy_s = median_synced([&] { ops::copy_(dst, flat_g); }, device, o.min_seconds);

  const double adamw_gbps = 28.0 * static_cast<double>(total) / step_s / 1e9;
  const double copy_gbps = 8.0 * static_cast<double>(total) / copy_s / 1e9;
  char buf[640];
  std::snprintf(buf, sizeof(buf),
                "{\"bench\":\"adamw\",\"device\":\"%s\",\"params\":%lld,\"tensors\":%zu,"
                "\"step_ms\":%.3f,\"adamw_gbps\":%.1f,\"copy_ms\":%.3f,\"copy_gbps\":%.1f,"
                "\"adamw_vs_copy\":%.3f,\"step_writing_bf16_copies_ms\":%.3f,"
                "\"step_then_bf16_casts_ms\":%.3f}",
                device.str().c_str(), static_cast<long long>(total), sizes.size(), step_s * 1e3,
                adamw_gbps, copy_s * 1e3, copy_gbps, adamw_gbps / copy_gbps, fused_s * 1e3,
                cast_s * 1e3);
  return buf;
}

}  // namespace hfrun::bench
