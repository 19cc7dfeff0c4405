// A Backend that times every call of another (profiler entries "op:<method>") and,
// for a device backend, synchronises after each call so the time is the device's. backend_for()
// hands it out while the profiler is enabled (HFRUN_PROFILE=1 in `hfrun bench train`).
// Internal to tensor/.
#pragma once

#include "tensor/backend.h"

namespace hfrun {

class ProfilingBackend final : public Backend {
 public:
  ProfilingBackend(Backend& inner, Device device) : inner_(inner), device_(device) {}
  const char* name() const override { return inner_.name(); }
  void copy(const Tensor& src, Tensor& dst) override;
  void fill(Tensor& dst, double value) override;
  void fill_random(Tensor& dst, RandomKind kind, uint64_t seed, uint64_t offset, double a,
                   double b) override;
  void axpy(Tensor& dst, const Tensor& src, double alpha) override;
  void scale(Tensor& dst, double alpha) override;
  void unary(ops::UnaryOp op, const Tensor& x, Tensor& y) override;
  void unary_backward(ops::UnaryOp op, const Tensor& gy, const Tensor& x, const Tensor& y,
                      Tensor& gx) override;
  void pow_scalar(const Tensor& x, double p, Tensor& y) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) override;
  void reduce_sum(const Tensor& x, int64_t outer, int64_t n, int64_t inner, Tensor& out) override;
  void reduce_max(const Tensor& x, int64_t outer, int64_t n, int64_t inner, Tensor& values,
                  Tensor& indices) override;
  void matmul(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& out) override;
  void matmul_add(const Tensor& a, const Tensor& b, Tensor& out) override;
  void matmul_gelu(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& out,
                   Tensor& pre) override;
  void softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log,
               Tensor& y) override;
  void softmax_backward(const Tensor& gy, const Tensor& y, int64_t outer, int64_t n, int64_t inner,
                        bool log, Tensor& gx) override;
  void scaled_masked_softmax(const Tensor& scores, double scale, bool causal, int64_t window,
                             const Tensor& key_lengths, Tensor& probs) override;
  void attention_scores_backward(const Tensor& gp, const Tensor& probs, int64_t n, double scale,
                                 Tensor& gscores) override;
  bool fused_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v, int64_t window,
                                 const DropoutMask& dropout) override;
  void fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale,
                       const Tensor& key_lengths, int64_t window, const DropoutMask& dropout,
                       Tensor& out, Tensor& lse) override;
  void fused_attention_backward(const Tensor& gout, const Tensor& q, const Tensor& k,
                                const Tensor& v, const Tensor& out, const Tensor& lse, bool causal,
                                double scale, const Tensor& key_lengths, int64_t window,
                                const DropoutMask& dropout, Tensor& gq, Tensor& gk,
                                Tensor& gv) override;
  void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& y,
                  Tensor& mean, Tensor& rstd) override;
  void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& mean,
                           const Tensor& rstd, Tensor& gx, Tensor& gw, Tensor& gb) override;
  void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) override;
  void rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                         Tensor& gx, Tensor& gw) override;
  void embedding(const Tensor& weight, const Tensor& ids, Tensor& out) override;
  void embedding_backward(const Tensor& gy, const Tensor& ids, Tensor& gweight) override;
  void embedding_backward_add(const Tensor& gy, const Tensor& ids, Tensor& gweight) override;
  Tensor rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, bool backward) override;
  Tensor swiglu(const Tensor& gate, const Tensor& up) override;
  std::pair<Tensor, Tensor> swiglu_backward(const Tensor& g, const Tensor& gate,
                                            const Tensor& up) override;
  void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     Tensor& loss, Tensor& lse) override;
  void cross_entropy_backward(const Tensor& gloss, const Tensor& logits, const Tensor& targets,
                              const Tensor& lse, int64_t ignore_index, Tensor& glogits) override;
  bool cross_entropy_blocks() const override;
  bool prefers_cross_entropy_blocks(DType gemm_dtype, int64_t logits) const override;
  void cross_entropy_fold(const Tensor& logits, int64_t col0, const Tensor& targets,
                          int64_t ignore_index, Tensor& state) override;
  void cross_entropy_finish(const Tensor& state, const Tensor& targets, int64_t ignore_index,
                            Tensor& loss, Tensor& lse) override;
  void cross_entropy_block_backward(const Tensor& gloss, const Tensor& logits, int64_t col0,
                                    const Tensor& targets, const Tensor& lse, int64_t ignore_index,
                                    int64_t count, Tensor& glogits) override;
  void dropout(const Tensor& x, double p, uint64_t seed, Tensor& y) override;
  void adamw_update(const std::vector<AdamWUpdate>& updates) override;
  void sgd_update(const std::vector<SGDUpdate>& updates) override;
  double sum_squares(const std::vector<Tensor>& xs, float inv_scale) override;
  bool unscale_grads(const std::vector<Tensor>& xs, float inv_scale) override;
  void synchronize(Device device) override;

 private:
  Backend& inner_;
  Device device_;
};

}  // namespace hfrun
