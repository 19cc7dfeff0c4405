// The CUDA backend: cuBLASLt for matmul, hand-written kernels for the rest, one stream per device
// (cuda_common.h) on which every kernel, copy and allocation is ordered. Arithmetic follows the
// CPU backend (the reference): 16-bit types load into f32, long reductions accumulate in f32 or
// double, random numbers come from the same Philox counters. This header is free of CUDA headers
// so that backend.cpp and storage.cpp, plain C++, can reach the backend and its allocator.
#pragma once

#include <cstdint>
#include <string>

#include "tensor/allocator.h"
#include "tensor/backend.h"

namespace hfrun::cuda {

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  // Also copies between the host and a device (either side may be the CPU tensor).
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
  void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     Tensor& loss, Tensor& lse) override;
  void cross_entropy_backward(const Tensor& gloss, const Tensor& logits, const Tensor& targets,
                              const Tensor& lse, int64_t ignore_index, Tensor& glogits) override;
  void dropout(const Tensor& x, double p, uint64_t seed, Tensor& y) override;
  void adamw_update(const std::vector<AdamWUpdate>& updates) override;
  void sgd_update(const std::vector<SGDUpdate>& updates) override;
  double sum_squares(const std::vector<Tensor>& xs, float inv_scale) override;
  bool unscale_grads(const std::vector<Tensor>& xs, float inv_scale) override;
  void synchronize(Device device) override;

 private:
  // Same-device strided copy with cast (copy_fill.cu); copy() routes host transfers around it.
  void copy_on_device(const Tensor& src, Tensor& dst);
};

// The process-wide backend (created on first use) and the caching allocator of one device.
Backend& backend();
Allocator& allocator(int device);
// GEMMs run with cuBLASLt's GELU epilogue so far in this process (matmul_gelu calls that did
// not fall back to the composition): lets tests check the fused path is the one taken.
int64_t gelu_epilogue_calls();
// Number of CUDA devices the driver reports; 0 when there is no driver or no device.
int device_count();
// The PCI bus id of device `index`, or "" when it cannot be read.
std::string pci_bus_id(int index);
// One line for logs and test skips: "N CUDA device(s): NAME (sm_XY), ..." or why there is none.
std::string device_status();

}  // namespace hfrun::cuda
