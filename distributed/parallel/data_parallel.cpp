// DataParallel: the job's Topology plus the Strategy of its zero_stage (strategy.h), and the
// host collectives it forwards.
#include "distributed/parallel/data_parallel.h"

#include <algorithm>

#include "common/error.h"
#include "distributed/parallel/strategy.h"
#include "tensor/ops.h"

namespace hfrun::dist {

struct DataParallel::Impl {
  std::unique_ptr<Topology> topo;
  std::unique_ptr<Strategy> strategy;
  StrategyContext ctx;
  int stage = 0;
};

DataParallel::DataParallel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DataParallel::~DataParallel() = default;

std::unique_ptr<DataParallel> DataParallel::create(std::unique_ptr<Topology> topo,
                                                   const DataParallelOptions& o) {
  if (!topo) return nullptr;
  HF_CHECK_INPUT(o.zero_stage >= 0 && o.zero_stage <= 3, "distributed.zero_stage ", o.zero_stage,
                 " is not one of 0, 1, 2, 3");
  auto impl = std::make_unique<Impl>();
  StrategyContext& ctx = impl->ctx;
  ctx.data = &topo->data();
  ctx.tensor = topo->tensor();
  ctx.data_device = &topo->data_device();
  ctx.device = topo->device();
  ctx.opts = topo->options();
  ctx.rank = ctx.data->rank();
  ctx.size = ctx.data->size();
  ctx.bucket_elements =
      std::max<int64_t>(1, static_cast<int64_t>(o.bucket_mb * 1024.0 * 1024.0 / sizeof(float)));
  HF_CHECK_INPUT(o.reduce_dtype == DType::kF32 || o.reduce_dtype == DType::kBF16,
                 "distributed.reduce_dtype ", dtype_name(o.reduce_dtype), " is not f32 or bf16");
  ctx.reduce_dtype = o.reduce_dtype;
  impl->topo = std::move(topo);
  impl->stage = o.zero_stage;
  impl->strategy = Strategy::create(o.zero_stage, ctx);
  return std::unique_ptr<DataParallel>(new DataParallel(std::move(impl)));
}

int DataParallel::rank() const {
  return impl_->ctx.rank;
}
const std::string& DataParallel::gradient_transport() const {
  return impl_->topo->transport();
}

int DataParallel::world() const {
  return impl_->ctx.size;
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
int DataParallel::zero_stage() const {
  return impl_->stage;
}

void DataParallel::broadcast(Tensor& flat) {
  impl_->ctx.data_device->broadcast(flat, 0, impl_->ctx.opts)->wait();
}

void DataParallel::attach(nn::Module& model) {
  impl_->strategy->attach(model);
}
std::vector<optim::ParamRef> DataParallel::optimizer_params(
    const std::vector<optim::ParamRef>& full, std::vector<ParamSlice>* slices) const {
  return impl_->strategy->optimizer_params(full, slices);
}
void DataParallel::before_backward(bool last_micro_step) {
  impl_->strategy->before_backward(last_micro_step);
}
void DataParallel::finish_gradient_sync() {
  impl_->strategy->finish_gradient_sync();
}
double DataParallel::clip_grad_norm(double max_norm, float inv_scale) {
  return impl_->strategy->clip_grad_norm(max_norm, inv_scale);
}
void DataParallel::adopt_optimizer(optim::Optimizer& optimizer) {
  impl_->strategy->adopt_optimizer(optimizer);
}
bool DataParallel::steps_optimizer() const {
  return impl_->strategy->steps_optimizer();
}
void DataParallel::after_optimizer_step() {
  impl_->strategy->after_optimizer_step();
}
std::vector<Tensor> DataParallel::shared_weight_copies() const {
  return impl_->strategy->shared_weight_copies();
}
void DataParallel::complete_shared_copies(const std::vector<bool>& written) {
  impl_->strategy->complete_shared_copies(written);
}
Tensor DataParallel::shared_copy_of(const Tensor& source, const Tensor& copy) const {
  return impl_->strategy->shared_copy_of(source, copy);
}
void DataParallel::gather_parameters() {
  impl_->strategy->gather_parameters();
}
void DataParallel::release_parameters() {
  impl_->strategy->release_parameters();
}
std::vector<std::pair<ParamSlice, Tensor>> DataParallel::parameter_pieces() const {
  return impl_->strategy->parameter_pieces();
}
void DataParallel::zero_grad(nn::Module& model) {
  impl_->strategy->zero_grad(model);
}
TrainingMemory DataParallel::memory(const optim::Optimizer& optimizer) const {
  return impl_->strategy->memory(optimizer);
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
