#include "nn/block.h"

#include <memory>
#include <optional>

#include "autograd/node.h"
#include "common/error.h"

namespace hfrun::nn {

namespace {

// Grad mode on for a scope (a backward runs its nodes with it off).
class EnableGradGuard {
 public:
  EnableGradGuard() : prev_(autograd::grad_enabled()) { autograd::set_grad_enabled(true); }
  ~EnableGradGuard() { autograd::set_grad_enabled(prev_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace

Tensor Block::operator()(const Tensor& x, const BlockArgs& args) {
  const bool recompute = checkpointing_ && autograd::grad_enabled() && args.cache_k == nullptr;
  return hooked([&] { return recompute ? checkpointed(x, args) : forward(x, args); });
}

Tensor Block::checkpointed(const Tensor& x, const BlockArgs& args) {
  // The dropout stream before the forward draws from it: the recompute replays it.
  std::optional<Generator> stream;
  if (args.dropout != nullptr) stream = *args.dropout;
  Tensor y;
  {
    autograd::NoGradGuard no_grad;
    y = forward(x, args);
  }
  // The node needs an input that requires grad to be recorded at all; the block's parameters
  // get their gradients from the recompute's own backward, not through this node's edges.
  Tensor input = x;
  if (!x.requires_grad()) {
    input = x.detach();
    input.set_requires_grad(true);
  }
  BlockArgs saved = args;
  Generator* live = args.dropout;
  return autograd::record(
      "CheckpointedBlock", {input}, y,
      [this, x_saved = x.detach(), saved, stream, live](const Tensor& gy) -> std::vector<Tensor> {
        Tensor xr = x_saved.detach();
        xr.set_requires_grad(true);
        // The recompute draws from the live stream rewound to where the forward drew, so that
        // every layer holding it (LoRA's dropout too) replays its masks; the stream then goes on
        // from where it was, as if nothing had been recomputed.
        std::optional<Generator> resume;
        if (live != nullptr && stream) {
          resume = *live;
          *live = *stream;
        }
        Tensor yr;
        {
          EnableGradGuard grad;
          yr = forward(xr, saved);
        }
        if (resume) *live = *resume;
        HF_CHECK(yr.requires_grad(),
                 "activation checkpointing: the block's recomputed output "
                 "does not depend on anything that trains");
        // Accumulates the block's parameter gradients (their grad-ready hooks fire here) and
        // the input's.
        autograd::backward(yr, gy);
        return {xr.grad()};
      });
}

}  // namespace hfrun::nn
