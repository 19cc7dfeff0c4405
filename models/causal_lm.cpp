#include "models/causal_lm.h"

#include "autograd/functions.h"
#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::nn {

Tensor CausalLM::token_loss(const ModelInputs& in, const Tensor& targets) {
  const ParallelLayer& out = *output_layer();
  const CountedRows r = counted_rows(hidden(in.ids), targets);
  if (out.fuses_loss(r.x.size(0))) return out.fused_loss(r.x, r.targets);
  return logits_loss(head(r.x), r.targets, &out);
}

int64_t CausalLM::check_cached_input(const Tensor& ids, const KvCache& cache, size_t layers) const {
  HF_CHECK(ids.dim() == 2, model_type(), ": ids must be [B, T], got ", ids.str());
  HF_CHECK(cache.k.size() == layers && cache.v.size() == layers, model_type(), ": kv cache has ",
           cache.k.size(), " layers, the model ", layers);
  HF_CHECK(ids.size(0) == cache.batch, model_type(), ": ids ", ids.str(),
           " do not match the cache's batch ", cache.batch);
  const int64_t T = ids.size(1);
  HF_CHECK_INPUT(cache.length + T <= cache.capacity, model_type(), ": sequence length ",
                 cache.length + T, " exceeds the model's context ", cache.capacity);
  return T;
}

KvCache CausalLM::allocate_kv_cache(int64_t batch, int64_t capacity, size_t layers, int64_t heads,
                                    int64_t head_dim) const {
  HF_CHECK(batch > 0, model_type(), ": kv cache batch must be positive, got ", batch);
  HF_CHECK(capacity >= 0 && capacity <= max_positions(), model_type(), ": kv cache capacity ",
           capacity, " must be in [0, ", max_positions(), "]");
  KvCache cache;
  cache.batch = batch;
  cache.capacity = capacity > 0 ? capacity : max_positions();
  for (size_t l = 0; l < layers; ++l) {
    cache.k.push_back(ops::empty({batch, heads, cache.capacity, head_dim}, DType::kF32, device()));
    cache.v.push_back(ops::empty({batch, heads, cache.capacity, head_dim}, DType::kF32, device()));
  }
  return cache;
}

}  // namespace hfrun::nn
