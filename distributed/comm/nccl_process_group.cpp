// NcclProcessGroup: NCCL collectives on a group-owned CUDA stream, ordered after the tensors'
// compute stream by events, completed by a poller thread that watches their events and
// deadlines (policy: nccl_process_group.h). Without NCCL in the build, the factories say so.
#include "distributed/comm/nccl_process_group.h"

#include <cstring>

#include "common/error.h"
#include "tensor/ops.h"

#ifdef HFRUN_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <list>
#include <mutex>
#include <thread>

#include "distributed/comm/mpi_process_group.h"
#include "distributed/comm/mpi_runtime.h"
#include "tensor/backend/cuda/cuda_common.h"
#endif

namespace hfrun::dist {

#ifndef HFRUN_WITH_NCCL

bool nccl_available() {
  return false;
}
std::string nccl_version() {
  return "not built (configure with CUDA and NCCL: -DHFRUN_CUDA=ON, nccl.h and libnccl found)";
}
std::shared_ptr<ProcessGroup> create_nccl_group(ProcessGroup&, int, const std::string&,
                                                const CollectiveOptions&) {
  HF_CHECK_INPUT(false, "the NCCL backend is not in this build: ", nccl_version());
  return nullptr;
}
std::shared_ptr<ProcessGroup> create_nccl_single(int) {
  HF_CHECK_INPUT(false, "the NCCL backend is not in this build: ", nccl_version());
  return nullptr;
}

#else

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void throw_nccl(ncclResult_t r, ncclComm_t comm, const char* call, const char* file,
                             int line) {
  const char* last = ncclGetLastError(comm);
  throw Error(
      ::hfrun::detail::concat(
          cuda::rank_prefix(), "NCCL error in ", call, ": ", ncclGetErrorString(r),
          (last != nullptr && *last != '\0') ? std::string(" (") + last + ")" : std::string()),
      file, line);
}
#define HF_NCCL_CHECK(comm, call)                                                           \
  do {                                                                                      \
    const ncclResult_t hf_nccl_r = (call);                                                  \
    if (hf_nccl_r != ncclSuccess) throw_nccl(hf_nccl_r, (comm), #call, __FILE__, __LINE__); \
  } while (0)

ncclDataType_t nccl_type(DType d, const char* op) {
  switch (d) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
    case DType::kU8:
    case DType::kBool:
      return ncclUint8;
  }
  HF_THROW(op, ": NCCL has no type for ", dtype_name(d));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  HF_THROW("NCCL backend: unknown ReduceOp");
}

struct InFlight {
  std::shared_ptr<Work> work;
  cudaEvent_t done = nullptr;
  Clock::time_point deadline;
  std::chrono::milliseconds timeout{};
  std::vector<Tensor> keep;  // NCCL reads and writes these until `done`
};

class NcclProcessGroup final : public ProcessGroup {
 public:
  NcclProcessGroup(ncclComm_t comm, int device, std::string name)
      : comm_(comm), device_(device), name_(std::move(name)) {
    cuda::DeviceGuard guard(device_);
    HF_NCCL_CHECK(comm_, ncclCommUserRank(comm_, &rank_));
    HF_NCCL_CHECK(comm_, ncclCommCount(comm_, &size_));
    HF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    poller_ = std::thread([this] { poll(); });
  }
  ~NcclProcessGroup() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    poller_.join();
    cuda::DeviceGuard guard(device_);
    if (broken_.empty()) {
      cudaStreamSynchronize(stream_);
      ncclCommDestroy(comm_);
    }
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }

  std::shared_ptr<Work> allreduce(Tensor& t, ReduceOp op, const CollectiveOptions& o,
                                  CallSite) override {
    check_tensor(t, "allreduce", "the", true);
    HF_CHECK(op != ReduceOp::kAvg || is_floating(t.dtype()), "allreduce: avg of ", t.str(),
             " (NCCL averages floating-point tensors only)");
    return launch("allreduce", t.nbytes(), o, {t}, [&](cudaStream_t s) {
      HF_NCCL_CHECK(comm_, ncclAllReduce(t.raw_data(), t.raw_data(), count(t),
                                         nccl_type(t.dtype(), "allreduce"), nccl_op(op), comm_, s));
    });
  }
  std::shared_ptr<Work> broadcast(Tensor& t, int root, const CollectiveOptions& o,
                                  CallSite) override {
    check_tensor(t, "broadcast", "the", false);
    HF_CHECK(root >= 0 && root < size_, "broadcast: root ", root,
             " is not a rank of a group of size ", size_);
    return launch("broadcast", t.nbytes(), o, {t}, [&](cudaStream_t s) {
      HF_NCCL_CHECK(comm_, ncclBroadcast(t.raw_data(), t.raw_data(), count(t),
                                         nccl_type(t.dtype(), "broadcast"), root, comm_, s));
    });
  }
  std::shared_ptr<Work> allgather(Tensor& out, const Tensor& in, const CollectiveOptions& o,
                                  CallSite) override {
    check_tensor(out, "allgather", "output", false);
    check_tensor(in, "allgather", "input", false);
    HF_CHECK(out.dtype() == in.dtype() && out.numel() == in.numel() * size_, "allgather: output ",
             out.str(), " must have size * input elements of the input's dtype (", size_, " x ",
             in.str(), ")");
    return launch("allgather", out.nbytes(), o, {out, in}, [&](cudaStream_t s) {
      // In place when `in` is this rank's block of `out`: NCCL's own in-place convention.
      HF_NCCL_CHECK(comm_, ncclAllGather(in.raw_data(), out.raw_data(), count(in),
                                         nccl_type(in.dtype(), "allgather"), comm_, s));
    });
  }
  std::shared_ptr<Work> allgather_coalesced(const std::vector<Tensor>& outs,
                                            const std::vector<Tensor>& ins,
                                            const CollectiveOptions& o, CallSite) override {
    HF_CHECK(!outs.empty() && outs.size() == ins.size(), "allgather_coalesced: ", outs.size(),
             " outputs for ", ins.size(), " inputs (expected the same number, at least one)");
    size_t bytes = 0;
    std::vector<Tensor> keep;
    for (size_t i = 0; i < outs.size(); ++i) {
      check_tensor(outs[i], "allgather_coalesced", "output", false);
      check_tensor(ins[i], "allgather_coalesced", "input", false);
      HF_CHECK(outs[i].dtype() == ins[i].dtype() && outs[i].numel() == ins[i].numel() * size_,
               "allgather_coalesced: output ", outs[i].str(),
               " must have size * input elements of the input's dtype (", size_, " x ",
               ins[i].str(), ")");
      bytes += outs[i].nbytes();
      keep.push_back(outs[i]);
      keep.push_back(ins[i]);
    }
    return launch("allgather_coalesced", bytes, o, std::move(keep), [&](cudaStream_t s) {
      HF_NCCL_CHECK(comm_, ncclGroupStart());
      for (size_t i = 0; i < outs.size(); ++i) {
        const ncclResult_t r =
            ncclAllGather(ins[i].raw_data(), outs[i].raw_data(), count(ins[i]),
                          nccl_type(ins[i].dtype(), "allgather_coalesced"), comm_, s);
        if (r != ncclSuccess) {
          ncclGroupEnd();
          throw_nccl(r, comm_, "ncclAllGather (grouped)", __FILE__, __LINE__);
        }
      }
      HF_NCCL_CHECK(comm_, ncclGroupEnd());
    });
  }
  std::shared_ptr<Work> reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op,
                                       const CollectiveOptions& o, CallSite) override {
    check_tensor(out, "reduce_scatter", "output", true);
    check_tensor(in, "reduce_scatter", "input", true);
    HF_CHECK(out.dtype() == in.dtype() && in.numel() == out.numel() * size_,
             "reduce_scatter: input ", in.str(), " must have size * output elements (", size_,
             " x ", out.str(), ")");
    HF_CHECK(op != ReduceOp::kAvg || is_floating(out.dtype()), "reduce_scatter: avg of ", out.str(),
             " (NCCL averages floating-point tensors only)");
    return launch("reduce_scatter", in.nbytes(), o, {out, in}, [&](cudaStream_t s) {
      HF_NCCL_CHECK(comm_, ncclReduceScatter(in.raw_data(), out.raw_data(), count(out),
                                             nccl_type(out.dtype(), "reduce_scatter"), nccl_op(op),
                                             comm_, s));
    });
  }
  std::shared_ptr<Work> barrier(const CollectiveOptions& o, CallSite) override {
    Tensor one = ops::to_device(ops::full({1}, 1.0), Device::cuda(device_));
    return launch("barrier", 0, o, {one}, [&](cudaStream_t s) {
      HF_NCCL_CHECK(
          comm_, ncclAllReduce(one.raw_data(), one.raw_data(), 1, ncclFloat32, ncclSum, comm_, s));
    });
  }
  std::shared_ptr<Work> send(const Tensor& t, int dst, int tag, const CollectiveOptions& o,
                             CallSite) override {
    check_tensor(t, "send", "the", false);
    HF_CHECK(dst >= 0 && dst < size_ && dst != rank_, "send: destination ", dst,
             " must be another rank of a group of size ", size_);
    (void)tag;  // NCCL matches point-to-point ops by issue order per peer
    return launch("send", t.nbytes(), o, {t}, [&](cudaStream_t s) {
      HF_NCCL_CHECK(comm_,
                    ncclSend(t.raw_data(), count(t), nccl_type(t.dtype(), "send"), dst, comm_, s));
    });
  }
  std::shared_ptr<Work> recv(Tensor& t, int src, int tag, const CollectiveOptions& o,
                             CallSite) override {
    check_tensor(t, "recv", "the", false);
    HF_CHECK(src >= 0 && src < size_ && src != rank_, "recv: source ", src,
             " must be another rank of a group of size ", size_);
    (void)tag;
    return launch("recv", t.nbytes(), o, {t}, [&](cudaStream_t s) {
      HF_NCCL_CHECK(comm_,
                    ncclRecv(t.raw_data(), count(t), nccl_type(t.dtype(), "recv"), src, comm_, s));
    });
  }
  std::shared_ptr<ProcessGroup> split(int color, int key, const CollectiveOptions& o,
                                      CallSite) override {
    check_usable("split");
    cuda::DeviceGuard guard(device_);
    ncclComm_t sub = nullptr;
    HF_NCCL_CHECK(comm_, ncclCommSplit(comm_, color, key, &sub, nullptr));
    (void)o;
    return std::make_shared<NcclProcessGroup>(sub, device_, name_ + "/" + std::to_string(color));
  }

 private:
  static bool is_floating(DType d) {
    return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16;
  }
  static size_t count(const Tensor& t) { return static_cast<size_t>(t.numel()); }

  void check_tensor(const Tensor& t, const char* op, const char* what, bool reduction) const {
    HF_CHECK(t.defined(), op, ": ", what, " tensor is undefined");
    HF_CHECK(t.device() == Device::cuda(device_), op, ": ", what, " tensor ", t.str(), " is on ",
             t.device().str(), "; this NCCL group uses cuda:", device_);
    HF_CHECK(t.is_contiguous(), op, ": ", what, " tensor ", t.str(), " must be contiguous");
    if (reduction) nccl_type(t.dtype(), op);
  }
  void check_usable(const char* op) {
    std::lock_guard<std::mutex> lock(mu_);
    HF_CHECK(broken_.empty(), op, " cannot run on group ", name_, ": it is unusable after ",
             broken_);
  }

  template <typename Issue>
  std::shared_ptr<Work> launch(const char* op, size_t bytes, const CollectiveOptions& o,
                               std::vector<Tensor> keep, Issue&& issue) {
    HF_CHECK(o.timeout.count() > 0, op, ": timeout must be > 0 ms");
    check_usable(op);
    const bool p2p = std::strcmp(op, "send") == 0 || std::strcmp(op, "recv") == 0;
    const uint64_t seq = p2p ? ++p2p_seq_ : ++seq_;
    auto work = std::make_shared<Work>(WorkInfo{rank_, op, seq, bytes, name_});
    cuda::DeviceGuard guard(device_);
    // Ordered after everything already queued on the tensors' compute stream, without a host
    // synchronisation.
    cudaEvent_t ready = nullptr, done = nullptr;
    HF_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    HF_CUDA_CHECK(cudaEventRecord(ready, cuda::stream_for(device_)));
    HF_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    HF_CUDA_CHECK(cudaEventDestroy(ready));
    issue(stream_);
    HF_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    HF_CUDA_CHECK(cudaEventRecord(done, stream_));
    {
      std::lock_guard<std::mutex> lock(mu_);
      in_flight_.push_back(
          InFlight{work, done, Clock::now() + o.timeout, o.timeout, std::move(keep)});
    }
    cv_.notify_all();
    return work;
  }

  // The poller: completes ops whose event fired, fails them on error, aborts on a deadline.
  void poll() {
    cuda::DeviceGuard guard(device_);
    int idle = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !in_flight_.empty(); });
      if (in_flight_.empty()) return;  // stop_ and drained
      bool progressed = false, urgent = false;
      for (auto it = in_flight_.begin(); it != in_flight_.end();) {
        const cudaError_t q = cudaEventQuery(it->done);
        if (q == cudaSuccess) {
          cudaEventDestroy(it->done);
          it->work->mark_done();
          it = in_flight_.erase(it);
          progressed = true;
        } else if (q != cudaErrorNotReady) {
          it->work->mark_failed(std::make_exception_ptr(
              Error(it->work->info().describe() + " failed: " + cudaGetErrorString(q), __FILE__,
                    __LINE__)));
          it = in_flight_.erase(it);
        } else if (Clock::now() >= it->deadline) {
          abort_after_timeout(*it);
          return;
        } else {
          urgent = urgent || it->work->has_waiters();
          ++it;
        }
      }
      idle = progressed ? 0 : idle + 1;
      lock.unlock();
      if (urgent || idle < 64) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(std::min(idle, 1000)));
      }
      lock.lock();
    }
  }

  // Called with mu_ held. ncclCommAbort also ends kernels waiting on a dead peer.
  void abort_after_timeout(InFlight& timed_out) {
    const std::string msg =
        timed_out.work->info().describe() + " timed out after " + format_seconds(timed_out.timeout);
    broken_ = msg;
    ncclCommAbort(comm_);
    std::fprintf(stderr, "hfrun NCCL watchdog: %s; the communicator was aborted\n", msg.c_str());
    if (mpi_is_initialized()) detail::report_timeout(msg);  // ends the MPI job too
    for (InFlight& x : in_flight_) {
      const std::string why = &x == &timed_out ? msg
                                               : x.work->info().describe() +
                                                     " failed: the group is unusable after " + msg;
      x.work->mark_failed(std::make_exception_ptr(Error(why, __FILE__, __LINE__)));
    }
    in_flight_.clear();
  }

  ncclComm_t comm_;
  int device_;
  std::string name_;
  int rank_ = 0, size_ = 1;
  cudaStream_t stream_ = nullptr;
  std::atomic<uint64_t> seq_{0}, p2p_seq_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::list<InFlight> in_flight_;
  bool stop_ = false;
  std::string broken_;
  std::thread poller_;
};

}  // namespace

bool nccl_available() {
  return true;
}

std::string nccl_version() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "unknown";
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}

std::shared_ptr<ProcessGroup> create_nccl_group(ProcessGroup& bootstrap, int device,
                                                const std::string& name,
                                                const CollectiveOptions& opts) {
  cuda::DeviceGuard guard(device);
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (bootstrap.rank() == 0) HF_NCCL_CHECK(nullptr, ncclGetUniqueId(&id));
  Tensor buf = ops::zeros({static_cast<int64_t>(sizeof(id))}, DType::kU8);
  std::memcpy(buf.raw_data(), &id, sizeof(id));
  bootstrap.broadcast(buf, 0, opts)->wait();
  std::memcpy(&id, buf.raw_data(), sizeof(id));
  ncclComm_t comm = nullptr;
  HF_NCCL_CHECK(nullptr, ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank()));
  return std::make_shared<NcclProcessGroup>(comm, device, name);
}

std::shared_ptr<ProcessGroup> create_nccl_single(int device) {
  cuda::DeviceGuard guard(device);
  ncclComm_t comm = nullptr;
  HF_NCCL_CHECK(nullptr, ncclCommInitAll(&comm, 1, &device));
  return std::make_shared<NcclProcessGroup>(comm, device, "nccl_single");
}

#endif  // HFRUN_WITH_NCCL

}  // namespace hfrun::dist
