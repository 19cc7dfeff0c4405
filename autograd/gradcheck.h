// Finite-difference gradient check (the flashlight jacobianTestImpl idea): compares the
// backward of f against central differences of  L(x) = sum(f(x) * R)  for a fixed random R,
// which checks the full vector-Jacobian product for every input element.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace hfrun::autograd {

struct GradcheckOptions {
  double eps = 1e-3;   // perturbation (inputs are f32)
  double atol = 2e-3;  // |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 2e-2;
  uint64_t seed = 7;
};

struct GradcheckResult {
  bool ok = true;
  std::string message;  // the first mismatches, naming input, element and both values
  double max_abs_error = 0;
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Inputs that should be checked must have requires_grad set; they may be non-contiguous views.
GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& opts = {});

}  // namespace hfrun::autograd
