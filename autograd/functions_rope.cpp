// Rotary position embeddings in the rotate-half form of HF's Llama family:
//   y = x * cos + rotate_half(x) * sin,   rotate_half([x1, x2]) = [-x2, x1]   (halves of D)
// rotate_half is linear with transpose -rotate_half, so
//   gx = g * cos - rotate_half(g * sin).
// One node that keeps only cos and sin; ops::rotary computes either direction (in one pass on
// the CPU, composed from device ops elsewhere, the same bits).
#include "autograd/functions.h"
#include "autograd/node.h"

namespace hfrun {

Tensor rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  HF_CHECK(x.defined() && cos.defined() && sin.defined(), "rotary_embedding: undefined input");
  HF_CHECK(x.dim() >= 2 && x.size(-1) % 2 == 0, "rotary_embedding: x ", x.str(),
           " must be [..., T, D] with an even D");
  HF_CHECK(cos.dim() == 2 && cos.sizes() == sin.sizes() && cos.size(0) == x.size(-2) &&
               cos.size(1) == x.size(-1),
           "rotary_embedding: cos ", cos.str(), " and sin ", sin.str(), " must be [T, D] of x ",
           x.str());
  // The tables in x's dtype, as HF casts them (cos.to(x.dtype)).
  const Tensor c = ops::contiguous(ops::to_dtype(cos, x.dtype()));
  const Tensor s = ops::contiguous(ops::to_dtype(sin, x.dtype()));
  Tensor y = ops::rotary(x, c, s, /*backward=*/false);
  if (!autograd::needs_grad({&x})) return y;
  return autograd::record("rotary_embedding", {x}, y, [c, s](const Tensor& g) {
    Tensor gc = ops::to_dtype(g, c.dtype());
    return std::vector<Tensor>{ops::rotary(gc, c, s, /*backward=*/true)};
  });
}

}  // namespace hfrun
