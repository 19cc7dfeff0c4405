#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/node.h"
#include "tensor/ops.h"

namespace hfrun::autograd {
namespace {

// Storage element offset of the k-th element (row-major over sizes) of t.
int64_t element_offset(const Tensor& t, int64_t k) {
  int64_t off = t.offset();
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    off += (k % t.sizes()[d]) * t.strides()[d];
    k /= t.sizes()[d];
  }
  return off;
}

float& f32_at(const Tensor& t, int64_t k) {
  return static_cast<float*>(t.storage()->data())[element_offset(t, k)];
}

double weighted_sum(const Tensor& y, const std::vector<float>& r) {
  std::vector<float> v = y.to_vector();
  double acc = 0;
  for (size_t i = 0; i < v.size(); ++i) acc += static_cast<double>(v[i]) * r[i];
  return acc;
}

}  // namespace

GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& opts) {
  GradcheckResult result;
  for (const Tensor& x : inputs) {
    HF_CHECK(!x.requires_grad() || x.dtype() == DType::kF32, "gradcheck: input ", x.str(),
             " must be f32");
  }
  // Analytic: one backward with grad_output = R.
  for (const Tensor& x : inputs) const_cast<Tensor&>(x).set_grad(Tensor());
  Tensor y = f(inputs);
  Generator gen(opts.seed);
  Tensor r = ops::randn(y.sizes(), gen);
  std::vector<float> rv = r.to_vector();
  backward(y, ops::to_dtype(r, y.dtype()));

  std::ostringstream msg;
  int reported = 0;
  NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.requires_grad()) continue;
    Tensor g = x.grad();
    std::vector<float> analytic = g.defined() ? g.to_vector() : std::vector<float>(x.numel(), 0.0f);
    for (int64_t k = 0; k < x.numel(); ++k) {
      float& slot = f32_at(x, k);
      const float orig = slot;
      slot = static_cast<float>(orig + opts.eps);
      double plus = weighted_sum(f(inputs), rv);
      slot = static_cast<float>(orig - opts.eps);
      double minus = weighted_sum(f(inputs), rv);
      slot = orig;
      double numeric = (plus - minus) / (2 * opts.eps);
      double err = std::fabs(analytic[k] - numeric);
      result.max_abs_error = std::max(result.max_abs_error, err);
      if (err > opts.atol + opts.rtol * std::fabs(numeric)) {
        result.ok = false;
        if (reported++ < 5) {
          msg << "input " << i << " " << x.str() << " element " << k << ": analytic " << analytic[k]
              << " vs numeric " << numeric << "\n";
        }
      }
    }
  }
  result.message = msg.str();
  return result;
}

}  // namespace hfrun::autograd
