#include "tensor/backend/profiling_backend.h"

#include <chrono>
#include <string>

#include "tensor/profiler.h"

namespace hfrun {

namespace {

// "bf16 4x12x256x64^T/98304,64,2304,1": a matrix whose rows are not unit-strided is a
// transposed view (^T); a tensor that is not contiguous shows its strides.
std::string operand_key(const Tensor& t) {
  std::string s = dtype_name(t.dtype());
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? "x" : " ") + std::to_string(t.size(d));
  if (t.dim() >= 2 && t.strides()[t.dim() - 1] != 1 && t.size(-1) > 1) s += "^T";
  if (!t.is_contiguous()) {
    for (int64_t d = 0; d < t.dim(); ++d) s += (d ? "," : "/") + std::to_string(t.strides()[d]);
  }
  return s;
}

// Times one call; synchronises a device backend first so queued kernels count. Given `detail`
// (the operands' description) and profiler::shapes() on, the entry is name + " " + detail(),
// with the call's flops where it counts them.
class Timed {
 public:
  Timed(const char* name, Backend& inner, Device device)
      : inner_(inner), device_(device), scope_(name) {}
  template <typename Detail>
  Timed(const char* name, Backend& inner, Device device, Detail&& detail, double flops = 0)
      : inner_(inner), device_(device), scope_(profiler::shapes() ? nullptr : name) {
    if (!profiler::enabled() || !profiler::shapes()) return;
    key_ = std::string(name) + " " + detail();
    flops_ = flops;
    start_ = std::chrono::steady_clock::now();
  }
  ~Timed() {
    if (!device_.is_cpu()) inner_.synchronize(device_);
    if (!key_.empty()) {
      profiler::add(
          key_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(),
          flops_);
    }
  }
  Timed(const Timed&) = delete;
  Timed& operator=(const Timed&) = delete;

 private:
  Backend& inner_;
  Device device_;
  profiler::Scope scope_;
  std::string key_;
  double flops_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// A GEMM's key and flops (2 per multiply-add).
std::string gemm_key(const Tensor& a, const Tensor& b, bool bias, const Tensor& out) {
  return operand_key(a) + " @ " + operand_key(b) + (bias ? " +bias" : "") + " -> " +
         dtype_name(out.dtype());
}
double gemm_flops(const Tensor& a, const Tensor& out) {
  return 2.0 * static_cast<double>(out.numel()) * static_cast<double>(a.size(-1));
}

}  // namespace

// Copies are split by kind: between devices, dtype casts, and same-dtype layout changes, each
// contiguous or strided (a transposed or broadcast side).
void ProfilingBackend::copy(const Tensor& src, Tensor& dst) {
  const bool dense = src.is_contiguous() && dst.is_contiguous();
  const char* name = "op:copy strided";
  if (src.device() != dst.device()) {
    name = "op:copy between devices";
  } else if (src.dtype() != dst.dtype()) {
    name = dense ? "op:copy cast" : "op:copy cast strided";
  } else if (dense) {
    name = "op:copy";
  }
  Timed t(name, inner_, device_, [&] { return operand_key(src) + " -> " + operand_key(dst); });
  inner_.copy(src, dst);
}

void ProfilingBackend::fill(Tensor& dst, double value) {
  Timed t("op:fill", inner_, device_);
  inner_.fill(dst, value);
}

void ProfilingBackend::fill_random(Tensor& dst, RandomKind kind, uint64_t seed, uint64_t offset,
                                   double a, double b) {
  Timed t("op:fill_random", inner_, device_);
  inner_.fill_random(dst, kind, seed, offset, a, b);
}

void ProfilingBackend::axpy(Tensor& dst, const Tensor& src, double alpha) {
  Timed t("op:axpy", inner_, device_);
  inner_.axpy(dst, src, alpha);
}

void ProfilingBackend::scale(Tensor& dst, double alpha) {
  Timed t("op:scale", inner_, device_);
  inner_.scale(dst, alpha);
}

void ProfilingBackend::unary(ops::UnaryOp op, const Tensor& x, Tensor& y) {
  Timed t("op:unary", inner_, device_);
  inner_.unary(op, x, y);
}

void ProfilingBackend::unary_backward(ops::UnaryOp op, const Tensor& gy, const Tensor& x,
                                      const Tensor& y, Tensor& gx) {
  Timed t("op:unary_backward", inner_, device_);
  inner_.unary_backward(op, gy, x, y, gx);
}

void ProfilingBackend::pow_scalar(const Tensor& x, double p, Tensor& y) {
  Timed t("op:pow_scalar", inner_, device_);
  inner_.pow_scalar(x, p, y);
}

void ProfilingBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  Timed t("op:binary", inner_, device_, [&] {
    return std::to_string(static_cast<int>(op)) + " " + operand_key(a) + ", " + operand_key(b);
  });
  inner_.binary(op, a, b, out);
}

void ProfilingBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  Timed t("op:where", inner_, device_);
  inner_.where(cond, a, b, out);
}

void ProfilingBackend::reduce_sum(const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                                  Tensor& out) {
  Timed t("op:reduce_sum", inner_, device_);
  inner_.reduce_sum(x, outer, n, inner, out);
}

void ProfilingBackend::reduce_max(const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                                  Tensor& values, Tensor& indices) {
  Timed t("op:reduce_max", inner_, device_);
  inner_.reduce_max(x, outer, n, inner, values, indices);
}

void ProfilingBackend::matmul(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& out) {
  Timed t(
      "op:matmul", inner_, device_, [&] { return gemm_key(a, b, bias.defined(), out); },
      gemm_flops(a, out));
  inner_.matmul(a, b, bias, out);
}

void ProfilingBackend::matmul_add(const Tensor& a, const Tensor& b, Tensor& out) {
  Timed t(
      "op:matmul_add", inner_, device_, [&] { return gemm_key(a, b, false, out); },
      gemm_flops(a, out));
  inner_.matmul_add(a, b, out);
}

void ProfilingBackend::softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log,
                               Tensor& y) {
  Timed t("op:softmax", inner_, device_);
  inner_.softmax(x, outer, n, inner, log, y);
}

void ProfilingBackend::softmax_backward(const Tensor& gy, const Tensor& y, int64_t outer, int64_t n,
                                        int64_t inner, bool log, Tensor& gx) {
  Timed t("op:softmax_backward", inner_, device_);
  inner_.softmax_backward(gy, y, outer, n, inner, log, gx);
}

void ProfilingBackend::scaled_masked_softmax(const Tensor& scores, double scale, bool causal,
                                             int64_t window, const Tensor& key_lengths,
                                             Tensor& probs) {
  Timed t("op:scaled_masked_softmax", inner_, device_);
  inner_.scaled_masked_softmax(scores, scale, causal, window, key_lengths, probs);
}

void ProfilingBackend::attention_scores_backward(const Tensor& gp, const Tensor& probs, int64_t n,
                                                 double scale, Tensor& gscores) {
  Timed t("op:attention_scores_backward", inner_, device_);
  inner_.attention_scores_backward(gp, probs, n, scale, gscores);
}

void ProfilingBackend::matmul_gelu(const Tensor& a, const Tensor& b, const Tensor& bias,
                                   Tensor& out, Tensor& pre) {
  Timed t(
      "op:matmul_gelu", inner_, device_, [&] { return gemm_key(a, b, bias.defined(), out); },
      gemm_flops(a, out));
  inner_.matmul_gelu(a, b, bias, out, pre);
}

bool ProfilingBackend::fused_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v,
                                                 int64_t window, const DropoutMask& dropout) {
  return inner_.fused_attention_supported(q, k, v, window, dropout);
}

void ProfilingBackend::fused_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                       bool causal, double scale, const Tensor& key_lengths,
                                       int64_t window, const DropoutMask& dropout, Tensor& out,
                                       Tensor& lse) {
  Timed t("op:fused_attention", inner_, device_);
  inner_.fused_attention(q, k, v, causal, scale, key_lengths, window, dropout, out, lse);
}

void ProfilingBackend::fused_attention_backward(const Tensor& gout, const Tensor& q,
                                                const Tensor& k, const Tensor& v, const Tensor& out,
                                                const Tensor& lse, bool causal, double scale,
                                                const Tensor& key_lengths, int64_t window,
                                                const DropoutMask& dropout, Tensor& gq, Tensor& gk,
                                                Tensor& gv) {
  Timed t("op:fused_attention_backward", inner_, device_);
  inner_.fused_attention_backward(gout, q, k, v, out, lse, causal, scale, key_lengths, window,
                                  dropout, gq, gk, gv);
}

void ProfilingBackend::layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps,
                                  Tensor& y, Tensor& mean, Tensor& rstd) {
  Timed t("op:layer_norm", inner_, device_);
  inner_.layer_norm(x, w, b, eps, y, mean, rstd);
}

void ProfilingBackend::layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w,
                                           const Tensor& mean, const Tensor& rstd, Tensor& gx,
                                           Tensor& gw, Tensor& gb) {
  Timed t("op:layer_norm_backward", inner_, device_);
  inner_.layer_norm_backward(gy, x, w, mean, rstd, gx, gw, gb);
}

void ProfilingBackend::rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y,
                                Tensor& rstd) {
  Timed t("op:rms_norm", inner_, device_);
  inner_.rms_norm(x, w, eps, y, rstd);
}

void ProfilingBackend::rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w,
                                         const Tensor& rstd, Tensor& gx, Tensor& gw) {
  Timed t("op:rms_norm_backward", inner_, device_);
  inner_.rms_norm_backward(gy, x, w, rstd, gx, gw);
}

void ProfilingBackend::embedding(const Tensor& weight, const Tensor& ids, Tensor& out) {
  Timed t("op:embedding", inner_, device_);
  inner_.embedding(weight, ids, out);
}

void ProfilingBackend::embedding_backward(const Tensor& gy, const Tensor& ids, Tensor& gweight) {
  Timed t("op:embedding_backward", inner_, device_);
  inner_.embedding_backward(gy, ids, gweight);
}

void ProfilingBackend::embedding_backward_add(const Tensor& gy, const Tensor& ids,
                                              Tensor& gweight) {
  Timed t("op:embedding_backward_add", inner_, device_);
  inner_.embedding_backward_add(gy, ids, gweight);
}

Tensor ProfilingBackend::rotary(const Tensor& x, const Tensor& cos, const Tensor& sin,
                                bool backward) {
  Timed t(backward ? "op:rotary_backward" : "op:rotary", inner_, device_);
  return inner_.rotary(x, cos, sin, backward);
}

Tensor ProfilingBackend::swiglu(const Tensor& gate, const Tensor& up) {
  Timed t("op:swiglu", inner_, device_);
  return inner_.swiglu(gate, up);
}

std::pair<Tensor, Tensor> ProfilingBackend::swiglu_backward(const Tensor& g, const Tensor& gate,
                                                            const Tensor& up) {
  Timed t("op:swiglu_backward", inner_, device_);
  return inner_.swiglu_backward(g, gate, up);
}

void ProfilingBackend::cross_entropy(const Tensor& logits, const Tensor& targets,
                                     int64_t ignore_index, Tensor& loss, Tensor& lse) {
  Timed t("op:cross_entropy", inner_, device_);
  inner_.cross_entropy(logits, targets, ignore_index, loss, lse);
}

void ProfilingBackend::cross_entropy_backward(const Tensor& gloss, const Tensor& logits,
                                              const Tensor& targets, const Tensor& lse,
                                              int64_t ignore_index, Tensor& glogits) {
  Timed t("op:cross_entropy_backward", inner_, device_);
  inner_.cross_entropy_backward(gloss, logits, targets, lse, ignore_index, glogits);
}

bool ProfilingBackend::cross_entropy_blocks() const {
  return inner_.cross_entropy_blocks();
}

bool ProfilingBackend::prefers_cross_entropy_blocks(DType gemm_dtype, int64_t logits) const {
  return inner_.prefers_cross_entropy_blocks(gemm_dtype, logits);
}

void ProfilingBackend::cross_entropy_fold(const Tensor& logits, int64_t col0, const Tensor& targets,
                                          int64_t ignore_index, Tensor& state) {
  Timed t("op:cross_entropy_fold", inner_, device_);
  inner_.cross_entropy_fold(logits, col0, targets, ignore_index, state);
}

void ProfilingBackend::cross_entropy_finish(const Tensor& state, const Tensor& targets,
                                            int64_t ignore_index, Tensor& loss, Tensor& lse) {
  Timed t("op:cross_entropy_finish", inner_, device_);
  inner_.cross_entropy_finish(state, targets, ignore_index, loss, lse);
}

void ProfilingBackend::cross_entropy_block_backward(const Tensor& gloss, const Tensor& logits,
                                                    int64_t col0, const Tensor& targets,
                                                    const Tensor& lse, int64_t ignore_index,
                                                    int64_t count, Tensor& glogits) {
  Timed t("op:cross_entropy_block_backward", inner_, device_);
  inner_.cross_entropy_block_backward(gloss, logits, col0, targets, lse, ignore_index, count,
                                      glogits);
}

void ProfilingBackend::dropout(const Tensor& x, double p, uint64_t seed, Tensor& y) {
  Timed t("op:dropout", inner_, device_);
  inner_.dropout(x, p, seed, y);
}

void ProfilingBackend::adamw_update(const std::vector<AdamWUpdate>& updates) {
  Timed t("op:adamw_update", inner_, device_);
  inner_.adamw_update(updates);
}

void ProfilingBackend::sgd_update(const std::vector<SGDUpdate>& updates) {
  Timed t("op:sgd_update", inner_, device_);
  inner_.sgd_update(updates);
}

double ProfilingBackend::sum_squares(const std::vector<Tensor>& xs, float inv_scale) {
  Timed t(inv_scale == 1.0f ? "op:sum_squares" : "op:unscale_sum_squares", inner_, device_);
  return inner_.sum_squares(xs, inv_scale);
}

bool ProfilingBackend::unscale_grads(const std::vector<Tensor>& xs, float inv_scale) {
  Timed t("op:unscale_grads", inner_, device_);
  return inner_.unscale_grads(xs, inv_scale);
}

void ProfilingBackend::synchronize(Device device) {
  inner_.synchronize(device);
}

}  // namespace hfrun
