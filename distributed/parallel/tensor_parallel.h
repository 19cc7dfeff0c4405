// Tensor parallelism applied to any module tree: the model's plan (Module::
// tensor_parallel_plan(), module-path pattern -> style, as HF's base_model_tp_plan) is matched
// against its modules, and each planned Linear, Embedding or norm keeps this rank's part of its
// parameters and switches its forward to the parallel form (nn/layers.h). No family writes a
// second forward for tensor parallelism.
#pragma once

#include "nn/module.h"
#include "nn/tensor_parallel.h"

namespace hfrun::dist {

// Applies `model`'s plan over `group` (rank t of T keeps part t). Call after loading weights
// and before flatten_parameters(). Every rule must match at least one module, and every
// matched module must be a layer that can take its style; otherwise an error names the rule.
// Returns the number of modules parallelised.
int apply_tensor_parallel(nn::Module& model, nn::TensorParallelGroup& group);

}  // namespace hfrun::dist
