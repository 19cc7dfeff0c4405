// DataParallel's process groups: the MPI world (initialised once per process), its split into
// tensor-parallel and data-parallel groups, and the small collectives the trainer uses.
#include "train/distributed_setup.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include <unistd.h>

#include "common/error.h"
#include "distributed/comm/env.h"
#include "distributed/comm/mpi_process_group.h"
#include "distributed/comm/nccl_process_group.h"
#include "distributed/comm/process_group.h"
#include "distributed/comm/staged_process_group.h"
#include "tensor/ops.h"
#include "train/data_parallel_impl.h"

namespace hfrun::train {

namespace {

std::once_flag g_init_once;
std::shared_ptr<dist::ProcessGroup>* g_world = nullptr;  // leaked: outlives static destructors

void at_exit() {
  finalize_distributed();
}

// Every rank's 1-D `mine` (sizes may differ), in rank order: the sizes first, then one
// allgather of the payloads padded to the longest.
std::vector<Tensor> allgather_varying(dist::ProcessGroup& group, const Tensor& mine,
                                      const dist::CollectiveOptions& opts) {
  const int n = group.size();
  Tensor size = ops::full({1}, static_cast<double>(mine.numel()), DType::kI64);
  Tensor sizes_t = ops::empty({n}, DType::kI64);
  group.allgather(sizes_t, size, opts)->wait();
  const std::vector<int64_t> sizes = sizes_t.to_int_vector();
  const int64_t longest = std::max<int64_t>(1, *std::max_element(sizes.begin(), sizes.end()));
  Tensor padded = ops::zeros({longest}, mine.dtype());
  if (mine.numel() > 0) {
    Tensor head = ops::narrow(padded, 0, 0, mine.numel());
    ops::copy_(head, mine);
  }
  Tensor all = ops::empty({longest * n}, mine.dtype());
  group.allgather(all, padded, opts)->wait();
  std::vector<Tensor> parts;
  for (int r = 0; r < n; ++r)
    parts.push_back(ops::clone(ops::narrow(all, 0, r * longest, sizes[r])));
  return parts;
}

// Every rank's string (the whole group), in rank order.
std::vector<std::string> gather_strings(dist::ProcessGroup& group, const std::string& s,
                                        const dist::CollectiveOptions& opts) {
  Tensor mine = ops::empty({static_cast<int64_t>(s.size())}, DType::kU8);
  if (!s.empty()) std::memcpy(mine.raw_data(), s.data(), s.size());
  std::vector<std::string> out;
  for (const Tensor& t : allgather_varying(group, mine, opts)) {
    out.emplace_back(static_cast<const char*>(t.raw_data()), static_cast<size_t>(t.numel()));
  }
  return out;
}

struct Placement {
  std::string shared_gpu;  // "ranks R and S both use GPU <bus id> on <host>", or empty
};

// One exchange over the whole job before any device group exists, so every rank decides the
// same: each rank's kind of device and distributed.backend must be rank 0's, and two ranks on
// one physical GPU (same host and PCI bus id, whatever CUDA_VISIBLE_DEVICES renumbered) rule
// NCCL out.
Placement agree_on_placement(dist::ProcessGroup& global, const TrainConfig& cfg, Device device,
                             const dist::CollectiveOptions& opts) {
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  const std::string kind = device.is_cuda() ? "cuda" : "cpu";
  const std::string gpu = device.is_cuda() ? cuda_pci_bus_id(device.index) : "";
  const std::vector<std::string> all = gather_strings(
      global, kind + "\n" + cfg.distributed.backend + "\n" + host + "\n" + gpu, opts);
  // Each rank's fields: kind, backend, host, GPU.
  std::vector<std::array<std::string, 4>> ranks;
  for (const std::string& line : all) {
    std::array<std::string, 4> f;
    size_t begin = 0;
    for (std::string& x : f) {
      const size_t end = std::min(line.find('\n', begin), line.size());
      x = line.substr(begin, end - begin);
      begin = end + 1;
    }
    ranks.push_back(std::move(f));
  }
  Placement p;
  std::map<std::string, size_t> gpu_owner;
  for (size_t r = 0; r < ranks.size(); ++r) {
    const auto& [k, b, h, g] = ranks[r];
    HF_CHECK_INPUT(k == ranks[0][0], cfg.source, ": rank ", r, " trains on ", k, " but rank 0 on ",
                   ranks[0][0], " (train.device: ", cfg.train.device,
                   "): every rank needs a GPU, or set train.device: cpu");
    HF_CHECK_INPUT(b == ranks[0][1], cfg.source, ": distributed.backend is ", b, " on rank ", r,
                   " but ", ranks[0][1],
                   " on rank 0; start every rank with the same file and overrides");
    if (k != "cuda" || g.empty()) continue;
    auto [it, fresh] = gpu_owner.emplace(g + " on " + h, r);
    if (!fresh && p.shared_gpu.empty()) {
      p.shared_gpu = detail::concat("ranks ", it->second, " and ", r, " both use GPU ", it->first);
    }
  }
  return p;
}

}  // namespace

double sum_over(dist::ProcessGroup& group, double v, const dist::CollectiveOptions& opts) {
  Tensor mine = ops::empty({static_cast<int64_t>(sizeof(double))}, DType::kU8);
  std::memcpy(mine.raw_data(), &v, sizeof(double));
  Tensor all = ops::empty({static_cast<int64_t>(sizeof(double)) * group.size()}, DType::kU8);
  group.allgather(all, mine, opts)->wait();
  double total = 0;
  for (int r = 0; r < group.size(); ++r) {
    double x;
    std::memcpy(&x, static_cast<const char*>(all.raw_data()) + r * sizeof(double), sizeof(double));
    total += x;
  }
  return total;
}

// train.device: cpu; cuda (cuda:LOCAL_RANK modulo the devices present); auto (cuda when a CUDA
// device is present, else cpu). distributed.backend nccl on the CPU is refused (auto picks NCCL
// for CUDA runs, MPI for CPU runs).
Device resolve_train_device(const TrainConfig& c) {
  const std::string& d = c.train.device;
  const int n = cuda_device_count();
  if (d == "cpu" || (d == "auto" && n == 0)) {
    HF_CHECK_INPUT(c.distributed.backend != "nccl", c.source, ": distributed.backend nccl needs a ",
                   "GPU, but train.device ", d, " resolved to the CPU (", cuda_status(),
                   "); use distributed.backend: auto or mpi");
    return Device::cpu();
  }
  HF_CHECK_INPUT(d == "cuda" || d == "auto", c.source, ": train.device: '", d,
                 "' is not one of auto | cpu | cuda");
  HF_CHECK_INPUT(n > 0, c.source, ": train.device cuda: ", cuda_status());
  const dist::LaunchEnv env = dist::detect_launch_env();
  return Device::cuda(env.local_rank % n);
}

DataParallel::DataParallel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DataParallel::~DataParallel() = default;

void finalize_distributed() {
  if (g_world != nullptr) g_world->reset();
  if (dist::mpi_is_initialized()) dist::finalize_mpi();
}

std::unique_ptr<DataParallel> DataParallel::from_launch_env(const TrainConfig& cfg, Device device) {
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
  impl->global = *g_world;
  HF_CHECK(impl->global->size() == env.world, "data-parallel training: MPI reports ",
           impl->global->size(), " ranks but the launch environment ", env.world);
  impl->stage = cfg.distributed.zero_stage;
  impl->opts.timeout = std::chrono::milliseconds(
      static_cast<int64_t>(std::max(cfg.distributed.timeout_s, 0.001) * 1000.0));
  const int T = static_cast<int>(cfg.distributed.tensor_parallel);
  HF_CHECK_INPUT(T >= 1 && env.world % T == 0, cfg.source, ": distributed.tensor_parallel ", T,
                 " must divide the number of ranks ", env.world);
  if (T > 1) {
    const int g = impl->global->rank();
    impl->tp = impl->global->split(g / T, g % T, impl->opts);
    impl->world = impl->global->split(g % T, g / T, impl->opts);
  } else {
    impl->world = impl->global;
  }
  impl->device = device;
  const Placement place = agree_on_placement(*impl->global, cfg, device, impl->opts);
  if (device.is_cpu()) {
    impl->tensor_world = impl->world;
    impl->tensor_tp = impl->tp;
  } else {
    const std::string& backend = cfg.distributed.backend;
    HF_CHECK_INPUT(backend != "nccl" || dist::nccl_available(), cfg.source,
                   ": distributed.backend nccl: ", dist::nccl_version(),
                   "; use distributed.backend: mpi (slower: through host memory)");
    HF_CHECK_INPUT(backend != "nccl" || place.shared_gpu.empty(), cfg.source,
                   ": distributed.backend nccl needs one GPU per rank, but ", place.shared_gpu,
                   "; start at most one rank per GPU, or set distributed.backend: mpi (through "
                   "host memory)");
    const bool shared = !place.shared_gpu.empty();
    const bool staged = backend == "mpi" || !dist::nccl_available() || shared;
    if (staged && backend == "auto" && impl->global->rank() == 0) {
      std::fprintf(
          stderr,
          "hfrun: note: distributed.backend auto: %s; the ranks' tensors go through "
          "host memory over MPI (slower than NCCL)\n",
          shared ? "ranks share a GPU, which NCCL does not allow" : "this build has no NCCL");
    }
    if (staged) {
      impl->tensor_world = dist::stage_through_host(impl->world);
      if (impl->tp) impl->tensor_tp = dist::stage_through_host(impl->tp);
    } else {
      // One communicator per group, each bootstrapped over its MPI group (collective).
      impl->tensor_world = dist::create_nccl_group(
          *impl->world, device.index, T > 1 ? "nccl_data_parallel" : "nccl_world", impl->opts);
      if (impl->tp) {
        impl->tensor_tp =
            dist::create_nccl_group(*impl->tp, device.index, "nccl_tensor_parallel", impl->opts);
      }
    }
  }
  if (impl->tensor_tp) {
    impl->tp_group = std::make_unique<TensorParallelOverGroup>(impl->tensor_tp, impl->opts);
  }
  impl->rank = impl->world->rank();
  impl->size = impl->world->size();
  impl->bucket_elements = std::max<int64_t>(
      1, static_cast<int64_t>(cfg.distributed.bucket_mb * 1024.0 * 1024.0 / sizeof(float)));
  auto dp = std::unique_ptr<DataParallel>(new DataParallel(std::move(impl)));
  dp->impl_->checkpoint_group = std::make_unique<GlobalCheckpointGroup>(dp.get());
  return dp;
}

int DataParallel::global_rank() const {
  return impl_->global->rank();
}

int DataParallel::global_world() const {
  return impl_->global->size();
}

int DataParallel::tensor_parallel_rank() const {
  return impl_->tp ? impl_->tp->rank() : 0;
}

int DataParallel::tensor_parallel_size() const {
  return impl_->tp ? impl_->tp->size() : 1;
}

nn::TensorParallelGroup* DataParallel::tensor_parallel() {
  return impl_->tp_group.get();
}

CheckpointGroup& DataParallel::checkpoint_group() {
  return *impl_->checkpoint_group;
}

std::vector<Tensor> DataParallel::gather_tensor_parallel(const Tensor& local) {
  Impl& im = *impl_;
  if (!im.tp) return {ops::reshape(ops::contiguous(local), {local.numel()})};
  return allgather_varying(*im.tp, ops::reshape(local, {local.numel()}), im.opts);
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
  return sum_over(*impl_->world, v, impl_->opts);
}

int DataParallel::max_over_job(int v) {
  Tensor t = ops::full({1}, static_cast<double>(v), DType::kF32);
  impl_->global->allreduce(t, dist::ReduceOp::kMax, impl_->opts)->wait();
  return static_cast<int>(t.data<float>()[0]);
}

std::vector<std::string> DataParallel::allgather_strings(const std::string& s) {
  return gather_strings(*impl_->global, s, impl_->opts);
}

void DataParallel::barrier() {
  impl_->global->barrier(impl_->opts)->wait();
}

}  // namespace hfrun::train
