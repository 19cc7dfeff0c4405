// StagedProcessGroup (policy: staged_process_group.h). Device -> host copies synchronise with
// the device's stream (ops::to_device), so a collective sees every kernel queued before it.
#include "distributed/comm/staged_process_group.h"

#include <utility>

#include "tensor/ops.h"

namespace hfrun::dist {
namespace {

bool on_host(const Tensor& t) {
  return !t.defined() || t.device().is_cpu();
}

Tensor host_copy(const Tensor& t) {
  return ops::contiguous(ops::to_device(t, Device::cpu()));
}

class StagedProcessGroup final : public ProcessGroup {
 public:
  explicit StagedProcessGroup(std::shared_ptr<ProcessGroup> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }

  std::shared_ptr<Work> allreduce(Tensor& t, ReduceOp op, const CollectiveOptions& opts,
                                  CallSite where) override {
    if (on_host(t)) return inner_->allreduce(t, op, opts, where);
    Tensor h = host_copy(t);
    return finish(inner_->allreduce(h, op, opts, where), t, h);
  }
  std::shared_ptr<Work> broadcast(Tensor& t, int root, const CollectiveOptions& opts,
                                  CallSite where) override {
    if (on_host(t)) return inner_->broadcast(t, root, opts, where);
    Tensor h = host_copy(t);
    return finish(inner_->broadcast(h, root, opts, where), t, h);
  }
  std::shared_ptr<Work> allgather(Tensor& out, const Tensor& in, const CollectiveOptions& opts,
                                  CallSite where) override {
    if (on_host(out) && on_host(in)) return inner_->allgather(out, in, opts, where);
    Tensor h_in = host_copy(in);
    Tensor h_out = ops::empty(out.sizes(), out.dtype(), Device::cpu());
    return finish(inner_->allgather(h_out, h_in, opts, where), out, h_out);
  }
  std::shared_ptr<Work> reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op,
                                       const CollectiveOptions& opts, CallSite where) override {
    if (on_host(out) && on_host(in)) return inner_->reduce_scatter(out, in, op, opts, where);
    Tensor h_in = host_copy(in);
    Tensor h_out = ops::empty(out.sizes(), out.dtype(), Device::cpu());
    return finish(inner_->reduce_scatter(h_out, h_in, op, opts, where), out, h_out);
  }
  std::shared_ptr<Work> barrier(const CollectiveOptions& opts, CallSite where) override {
    return inner_->barrier(opts, where);
  }
  std::shared_ptr<Work> send(const Tensor& t, int dst, int tag, const CollectiveOptions& opts,
                             CallSite where) override {
    if (on_host(t)) return inner_->send(t, dst, tag, opts, where);
    std::shared_ptr<Work> w = inner_->send(host_copy(t), dst, tag, opts, where);
    w->wait();  // the host copy must outlive the send
    return w;
  }
  std::shared_ptr<Work> recv(Tensor& t, int src, int tag, const CollectiveOptions& opts,
                             CallSite where) override {
    if (on_host(t)) return inner_->recv(t, src, tag, opts, where);
    Tensor h = ops::empty(t.sizes(), t.dtype(), Device::cpu());
    return finish(inner_->recv(h, src, tag, opts, where), t, h);
  }
  std::shared_ptr<ProcessGroup> split(int color, int key, const CollectiveOptions& opts,
                                      CallSite where) override {
    std::shared_ptr<ProcessGroup> g = inner_->split(color, key, opts, where);
    return g ? stage_through_host(std::move(g)) : nullptr;
  }
  Tensor node_shared_tensor(int64_t numel, DType dtype, const CollectiveOptions& opts,
                            CallSite where) override {
    return inner_->node_shared_tensor(numel, dtype, opts, where);  // host memory either way
  }
  Tensor node_shared_slices(int64_t numel, DType dtype, const CollectiveOptions& opts,
                            CallSite where) override {
    return inner_->node_shared_slices(numel, dtype, opts, where);
  }

 private:
  // Waits for the host op (rethrowing its failure) and copies its result into the device tensor.
  static std::shared_ptr<Work> finish(std::shared_ptr<Work> w, Tensor& device_tensor,
                                      const Tensor& host) {
    w->wait();
    ops::copy_(device_tensor, host);
    return w;
  }

  std::shared_ptr<ProcessGroup> inner_;
};

}  // namespace

std::shared_ptr<ProcessGroup> stage_through_host(std::shared_ptr<ProcessGroup> inner) {
  return std::make_shared<StagedProcessGroup>(std::move(inner));
}

}  // namespace hfrun::dist
