#include "train/distributed_setup.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "autograd/node.h"
#include "common/error.h"
#include "distributed/comm/env.h"
#include "distributed/comm/mpi_process_group.h"
#include "distributed/comm/process_group.h"
#include "tensor/ops.h"

namespace hfrun::train {

namespace {

std::once_flag g_init_once;
std::shared_ptr<dist::ProcessGroup>* g_world = nullptr;  // leaked: outlives static destructors

void at_exit() {
  finalize_distributed();
}

}  // namespace

struct DataParallel::Impl {
  std::shared_ptr<dist::ProcessGroup> world;
  dist::CollectiveOptions opts;
  int64_t bucket_elements = 0;
  struct Bucket {
    Tensor view;  // of the flat gradient buffer
    int params = 0, pending = 0;
    bool issued = false;
  };
  std::vector<Bucket> buckets;
  std::vector<std::shared_ptr<dist::Work>> works;
  bool armed = false;

  void issue(Bucket& b) {
    b.issued = true;
    works.push_back(world->allreduce(b.view, dist::ReduceOp::kAvg, opts));
  }
  void grad_ready(size_t b) {
    if (!armed) return;
    Bucket& bucket = buckets[b];
    if (--bucket.pending == 0 && !bucket.issued) issue(bucket);
  }
};

DataParallel::DataParallel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DataParallel::~DataParallel() = default;

void finalize_distributed() {
  if (g_world != nullptr) g_world->reset();
  if (dist::mpi_is_initialized()) dist::finalize_mpi();
}

std::unique_ptr<DataParallel> DataParallel::from_launch_env(const TrainConfig& cfg) {
  const dist::LaunchEnv env = dist::detect_launch_env();
  if (env.world <= 1) return nullptr;
  std::call_once(g_init_once, [&] {
    dist::export_torchrun_env(env);
    dist::init_mpi();
    g_world = new std::shared_ptr<dist::ProcessGroup>(dist::create_mpi_world());
    std::atexit(at_exit);
  });
  HF_CHECK(g_world != nullptr && *g_world != nullptr,
           "data-parallel training: the MPI world group was already finalized in this process");
  auto impl = std::make_unique<Impl>();
  impl->world = *g_world;
  HF_CHECK(impl->world->size() == env.world, "data-parallel training: MPI reports ",
           impl->world->size(), " ranks but the launch environment ", env.world);
  impl->opts.timeout = std::chrono::milliseconds(
      static_cast<int64_t>(std::max(cfg.distributed.timeout_s, 0.001) * 1000.0));
  impl->bucket_elements = std::max<int64_t>(
      1, static_cast<int64_t>(cfg.distributed.bucket_mb * 1024.0 * 1024.0 / sizeof(float)));
  return std::unique_ptr<DataParallel>(new DataParallel(std::move(impl)));
}

int DataParallel::rank() const {
  return impl_->world->rank();
}
int DataParallel::world() const {
  return impl_->world->size();
}

void DataParallel::broadcast(Tensor& flat) {
  impl_->world->broadcast(flat, 0, impl_->opts)->wait();
}

void DataParallel::attach_gradient_hooks(const std::vector<Tensor>& params,
                                         const Tensor& flat_params, const Tensor& flat_grads) {
  HF_CHECK(impl_->buckets.empty(), "attach_gradient_hooks: already attached");
  HF_CHECK(flat_grads.dim() == 1 && flat_grads.is_contiguous() &&
               flat_grads.numel() == flat_params.numel(),
           "attach_gradient_hooks: the gradient buffer ", flat_grads.str(),
           " does not match the parameters ", flat_params.str());
  // Each parameter's place in the flat buffer, in buffer order.
  std::vector<std::pair<int64_t, size_t>> order;
  for (size_t i = 0; i < params.size(); ++i) {
    HF_CHECK(params[i].shares_storage_with(flat_params),
             "attach_gradient_hooks: parameters must be flattened first");
    order.emplace_back(params[i].offset() - flat_params.offset(), i);
  }
  std::sort(order.begin(), order.end());
  std::vector<size_t> bucket_of(params.size());
  int64_t begin = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    const size_t i = order[k].second;
    if (impl_->buckets.empty() || (order[k].first - begin >= impl_->bucket_elements)) {
      begin = order[k].first;
      impl_->buckets.emplace_back();
    }
    bucket_of[i] = impl_->buckets.size() - 1;
    ++impl_->buckets.back().params;
    const int64_t end = k + 1 < order.size() ? order[k + 1].first : flat_grads.numel();
    impl_->buckets.back().view =
        make_view(flat_grads, {end - begin}, {1}, flat_grads.offset() + begin);
  }
  Impl* impl = impl_.get();
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor p = params[i];
    const size_t b = bucket_of[i];
    autograd::register_grad_ready_hook(p, [impl, b](Tensor&) { impl->grad_ready(b); });
  }
}

void DataParallel::arm_gradient_hooks() {
  for (auto& b : impl_->buckets) {
    b.pending = b.params;
    b.issued = false;
  }
  impl_->works.clear();
  impl_->armed = true;
}

void DataParallel::finish_gradient_sync() {
  HF_CHECK(impl_->armed, "finish_gradient_sync: arm_gradient_hooks() was not called");
  impl_->armed = false;
  for (auto& b : impl_->buckets) {
    if (!b.issued) impl_->issue(b);
  }
  auto works = std::move(impl_->works);
  impl_->works.clear();
  for (auto& w : works) w->wait();
}

double DataParallel::sum(double v) {
  Tensor t = ops::full({1}, v, DType::kF32);
  impl_->world->allreduce(t, dist::ReduceOp::kSum, impl_->opts)->wait();
  return static_cast<double>(t.item());
}

void DataParallel::barrier() {
  impl_->world->barrier(impl_->opts)->wait();
}

}  // namespace hfrun::train
