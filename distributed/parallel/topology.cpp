// The job's process groups (topology.h): MPI initialised once per process, the world split into
// tensor- and data-parallel groups, the device groups that move training tensors, and the small
// host collectives (sums, maxima, strings) every strategy and the trainer use.
#include "distributed/parallel/topology.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "common/error.h"
#include "distributed/comm/checked_process_group.h"
#include "distributed/comm/env.h"
#include "distributed/comm/mpi_process_group.h"
#include "distributed/comm/nccl_process_group.h"
#include "distributed/comm/staged_process_group.h"
#include "distributed/parallel/tensor_parallel.h"
#include "tensor/ops.h"

namespace hfrun::dist {

struct Topology::Impl {
  // MPI groups, for host values (sums, strings, flags) and as the bootstrap of device groups.
  std::shared_ptr<ProcessGroup> world;   // the data-parallel group
  std::shared_ptr<ProcessGroup> global;  // every rank of the job
  std::shared_ptr<ProcessGroup> tp;      // the tensor-parallel group (or null)
  // The groups that move the training tensors on `device`: world and tp themselves on the CPU;
  // NCCL groups over the same ranks on a GPU, or world and tp staged through host memory.
  Device device = Device::cpu();
  std::shared_ptr<ProcessGroup> tensor_world, tensor_tp;
  // The tensor-parallel collectives for the model, on the group that carries its tensors (NCCL
  // or host-staged MPI on GPUs, MPI on the CPU).
  std::unique_ptr<TensorParallelOverGroup> tp_group;
  CollectiveOptions opts;
  std::string transport;
};

namespace {

std::once_flag g_init_once;
std::shared_ptr<ProcessGroup>* g_world = nullptr;  // leaked: outlives static destructors

void at_exit() {
  finalize_distributed();
}

// Every rank's 1-D `mine` (sizes may differ), in rank order: the sizes first, then one
// allgather of the payloads padded to the longest.
std::vector<Tensor> allgather_varying(ProcessGroup& group, const Tensor& mine,
                                      const CollectiveOptions& opts) {
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
std::vector<std::string> gather_strings(ProcessGroup& group, const std::string& s,
                                        const CollectiveOptions& opts) {
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
Placement agree_on_placement(ProcessGroup& global, const TopologyOptions& o, Device device,
                             const CollectiveOptions& opts) {
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  const std::string kind = device.is_cuda() ? "cuda" : "cpu";
  const std::string gpu = device.is_cuda() ? cuda_pci_bus_id(device.index) : "";
  const std::vector<std::string> all =
      gather_strings(global, kind + "\n" + o.backend + "\n" + host + "\n" + gpu, opts);
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
    HF_CHECK_INPUT(k == ranks[0][0], o.source, ": rank ", r, " trains on ", k, " but rank 0 on ",
                   ranks[0][0],
                   " (train.device): every rank needs a GPU, or set train.device: "
                   "cpu");
    HF_CHECK_INPUT(b == ranks[0][1], o.source, ": distributed.backend is ", b, " on rank ", r,
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

double sum_over(ProcessGroup& group, double v, const CollectiveOptions& opts) {
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

void finalize_distributed() {
  if (g_world != nullptr) g_world->reset();
  if (dist::mpi_is_initialized()) dist::finalize_mpi();
}

Topology::Topology(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Topology::~Topology() = default;

std::unique_ptr<Topology> Topology::from_launch_env(const TopologyOptions& o) {
  const Device device = o.device;
  const LaunchEnv env = detect_launch_env();
  if (env.world <= 1) return nullptr;
  std::call_once(g_init_once, [&] {
    export_torchrun_env(env);
    init_mpi();
    g_world = new std::shared_ptr<ProcessGroup>(create_mpi_world());
    std::atexit(at_exit);
  });
  HF_CHECK(g_world != nullptr && *g_world != nullptr,
           "distributed training: the MPI world group was already finalized in this process");
  auto impl = std::make_unique<Impl>();
  impl->global = *g_world;
  HF_CHECK(impl->global->size() == env.world, "distributed training: MPI reports ",
           impl->global->size(), " ranks but the launch environment ", env.world);
  impl->opts.timeout =
      std::chrono::milliseconds(static_cast<int64_t>(std::max(o.timeout_s, 0.001) * 1000.0));
  const int T = o.tensor_parallel;
  HF_CHECK_INPUT(T >= 1 && env.world % T == 0, o.source, ": distributed.tensor_parallel ", T,
                 " must divide the number of ranks ", env.world);
  if (T > 1) {
    const int g = impl->global->rank();
    impl->tp = impl->global->split(g / T, g % T, impl->opts);
    impl->world = impl->global->split(g % T, g / T, impl->opts);
  } else {
    impl->world = impl->global;
  }
  impl->device = device;
  const Placement place = agree_on_placement(*impl->global, o, device, impl->opts);
  impl->transport = uses_node_shared_memory(*impl->world) ? "node shared memory" : "Open MPI";
  if (device.is_cpu()) {
    impl->tensor_world = impl->world;
    impl->tensor_tp = impl->tp;
  } else {
    const std::string& backend = o.backend;
    HF_CHECK_INPUT(backend != "nccl" || nccl_available(), o.source,
                   ": distributed.backend nccl: ", nccl_version(),
                   "; use distributed.backend: mpi (slower: through host memory)");
    HF_CHECK_INPUT(backend != "nccl" || place.shared_gpu.empty(), o.source,
                   ": distributed.backend nccl needs one GPU per rank, but ", place.shared_gpu,
                   "; start at most one rank per GPU, or set distributed.backend: mpi (through "
                   "host memory)");
    const bool shared = !place.shared_gpu.empty();
    const bool staged = backend == "mpi" || !nccl_available() || shared;
    if (staged && backend == "auto" && impl->global->rank() == 0) {
      std::fprintf(
          stderr,
          "hfrun: note: distributed.backend auto: %s; the ranks' tensors go through "
          "host memory over MPI (slower than NCCL)\n",
          shared ? "ranks share a GPU, which NCCL does not allow" : "this build has no NCCL");
    }
    if (staged) {
      impl->transport += " (staged through host memory)";
      impl->tensor_world = stage_through_host(impl->world);
      if (impl->tp) impl->tensor_tp = stage_through_host(impl->tp);
    } else {
      // One communicator per group, each bootstrapped over its MPI group (collective).
      impl->transport = "NCCL";
      impl->tensor_world = create_nccl_group(
          *impl->world, device.index, T > 1 ? "nccl_data_parallel" : "nccl_world", impl->opts);
      if (impl->tp) {
        impl->tensor_tp =
            create_nccl_group(*impl->tp, device.index, "nccl_tensor_parallel", impl->opts);
      }
    }
  }
  // distributed.debug: every group the strategies use checks its collectives (one wrapper per
  // group object, so groups that are the same object stay the same); a device group checks over
  // the MPI group it was made from.
  if (o.debug) {
    std::map<ProcessGroup*, std::shared_ptr<ProcessGroup>> done;
    auto wrap = [&](std::shared_ptr<ProcessGroup>& g, const std::shared_ptr<ProcessGroup>& check) {
      if (!g) return;
      if (const auto it = done.find(g.get()); it != done.end()) {
        g = it->second;
        return;
      }
      std::shared_ptr<ProcessGroup> checked = check_collectives(g, check);
      done[g.get()] = checked;
      g = checked;
    };
    const std::shared_ptr<ProcessGroup> world = impl->world, tp = impl->tp, global = impl->global;
    wrap(impl->tensor_world, world);
    wrap(impl->tensor_tp, tp);
    wrap(impl->world, world);
    wrap(impl->tp, tp);
    wrap(impl->global, global);
  }
  if (impl->tensor_tp) {
    impl->tp_group = std::make_unique<TensorParallelOverGroup>(impl->tensor_tp, impl->opts);
  }
  return std::unique_ptr<Topology>(new Topology(std::move(impl)));
}

int Topology::global_rank() const {
  return impl_->global->rank();
}
int Topology::global_world() const {
  return impl_->global->size();
}
int Topology::data_rank() const {
  return impl_->world->rank();
}
int Topology::data_world() const {
  return impl_->world->size();
}
int Topology::tensor_parallel_rank() const {
  return impl_->tp ? impl_->tp->rank() : 0;
}
int Topology::tensor_parallel_size() const {
  return impl_->tp ? impl_->tp->size() : 1;
}
Device Topology::device() const {
  return impl_->device;
}
const std::string& Topology::transport() const {
  return impl_->transport;
}
const CollectiveOptions& Topology::options() const {
  return impl_->opts;
}
ProcessGroup& Topology::global() {
  return *impl_->global;
}
ProcessGroup& Topology::data() {
  return *impl_->world;
}
ProcessGroup* Topology::tensor() {
  return impl_->tp.get();
}
ProcessGroup& Topology::data_device() {
  return *impl_->tensor_world;
}
ProcessGroup* Topology::tensor_device() {
  return impl_->tensor_tp.get();
}
nn::TensorParallelGroup* Topology::tensor_parallel() {
  return impl_->tp_group.get();
}

double Topology::sum_over_data(double v) {
  return sum_over(*impl_->world, v, impl_->opts);
}

int Topology::max_over_job(int v) {
  Tensor t = ops::full({1}, static_cast<double>(v), DType::kF32);
  impl_->global->allreduce(t, ReduceOp::kMax, impl_->opts)->wait();
  return static_cast<int>(t.data<float>()[0]);
}

std::vector<std::string> Topology::allgather_strings(const std::string& s) {
  return gather_strings(*impl_->global, s, impl_->opts);
}

std::vector<Tensor> Topology::gather_tensor_parallel(const Tensor& local) {
  if (!impl_->tp) return {ops::reshape(ops::contiguous(local), {local.numel()})};
  return allgather_varying(*impl_->tp, ops::reshape(local, {local.numel()}), impl_->opts);
}

void Topology::barrier() {
  impl_->global->barrier(impl_->opts)->wait();
}

}  // namespace hfrun::dist
