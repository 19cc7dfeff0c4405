// DataParallel over the job's Topology: creation, and the accessors and host collectives it
// forwards (the per-step API is data_parallel_step.cpp, the units gradient_units.cpp).
#include "distributed/parallel/data_parallel.h"

#include <algorithm>

#include "common/error.h"
#include "distributed/parallel/data_parallel_impl.h"
#include "tensor/ops.h"

namespace hfrun::dist {

DataParallel::DataParallel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DataParallel::~DataParallel() = default;

std::unique_ptr<DataParallel> DataParallel::create(std::unique_ptr<Topology> topo,
                                                   const DataParallelOptions& o) {
  if (!topo) return nullptr;
  HF_CHECK_INPUT(o.zero_stage >= 0 && o.zero_stage <= 3, "distributed.zero_stage ", o.zero_stage,
                 " is not one of 0, 1, 2, 3");
  auto impl = std::make_unique<Impl>();
  impl->world = &topo->data();
  impl->tp = topo->tensor();
  impl->tensor_world = &topo->data_device();
  impl->device = topo->device();
  impl->opts = topo->options();
  impl->topo = std::move(topo);
  impl->stage = o.zero_stage;
  impl->rank = impl->world->rank();
  impl->size = impl->world->size();
  impl->bucket_elements =
      std::max<int64_t>(1, static_cast<int64_t>(o.bucket_mb * 1024.0 * 1024.0 / sizeof(float)));
  return std::unique_ptr<DataParallel>(new DataParallel(std::move(impl)));
}

int DataParallel::global_rank() const {
  return impl_->topo->global_rank();
}

int DataParallel::global_world() const {
  return impl_->topo->global_world();
}

int DataParallel::tensor_parallel_rank() const {
  return impl_->topo->tensor_parallel_rank();
}

int DataParallel::tensor_parallel_size() const {
  return impl_->topo->tensor_parallel_size();
}

nn::TensorParallelGroup* DataParallel::tensor_parallel() {
  return impl_->topo->tensor_parallel();
}

std::vector<Tensor> DataParallel::gather_tensor_parallel(const Tensor& local) {
  return impl_->topo->gather_tensor_parallel(local);
}

int DataParallel::rank() const {
  return impl_->rank;
}

int DataParallel::world() const {
  return impl_->size;
}

int DataParallel::zero_stage() const {
  return impl_->stage;
}

void DataParallel::broadcast(Tensor& flat) {
  impl_->tensor_world->broadcast(flat, 0, impl_->opts)->wait();
}

double DataParallel::sum(double v) {
  return impl_->topo->sum_over_data(v);
}

int DataParallel::max_over_job(int v) {
  return impl_->topo->max_over_job(v);
}

std::vector<std::string> DataParallel::allgather_strings(const std::string& s) {
  return impl_->topo->allgather_strings(s);
}

void DataParallel::barrier() {
  impl_->topo->barrier();
}

}  // namespace hfrun::dist
