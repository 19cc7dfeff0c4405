// MpiProcessGroup: one worker thread per group posts queued ops as non-blocking MPI calls in
// issue order and polls them with MPI_Test against their deadlines (policy:
// mpi_process_group.h).
#include "distributed/comm/mpi_process_group.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <string_view>
#include <thread>
#include <vector>

#include "common/error.h"
#include "distributed/comm/mpi_runtime.h"
#include "distributed/comm/reduce_kernels.h"
#include "distributed/comm/shm_collectives.h"
#include "distributed/comm/validate.h"
#include "tensor/ops.h"
#include "tensor/storage.h"

namespace hfrun::dist {
namespace {

using Clock = std::chrono::steady_clock;

MPI_Datatype mpi_type(DType d) {
  switch (d) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI64:
      return MPI_INT64_T;
    case DType::kBF16:
    case DType::kF16:
      return MPI_UINT16_T;  // moved, and summed with bf16_sum
    case DType::kU8:
    case DType::kBool:
      return MPI_UINT8_T;
  }
  HF_THROW("MPI backend: unsupported dtype ", dtype_name(d));
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  HF_THROW("MPI backend: unknown ReduceOp");
}

// bf16 SUM (distributed.reduce_dtype bf16): each pair added in f32 and rounded to bf16, as
// NCCL adds bf16. MPI has no bf16 type: the elements travel as MPI_UINT16_T with this op.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype* /*type*/) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  detail::bf16_sum_into(a, b, static_cast<size_t>(*len));
}

// Checks that `op` reduces `dtype`: bf16 sums only.
void check_reducible(ReduceOp op, DType dtype) {
  HF_CHECK(dtype != DType::kBF16 || op == ReduceOp::kSum, "MPI backend: bf16 reductions sum ",
           "only (divide first for an average, as distributed.reduce_dtype bf16 does)");
}

// The MPI op for `op` on `dtype`; bf16's sum is created on first use, on the thread that makes
// the MPI calls.
MPI_Op mpi_op_for(ReduceOp op, DType dtype) {
  if (dtype != DType::kBF16) return mpi_op(op);
  static MPI_Op sum = [] {
    MPI_Op o;
    HF_MPI_CHECK(MPI_Op_create(&bf16_sum, /*commute=*/1, &o));
    return o;
  }();
  return sum;
}

// Buffers MPI may still write into after a timeout: never freed (the job is being aborted).
void keep_forever(std::vector<Tensor> tensors) {
  static auto* graveyard = new std::vector<Tensor>;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  for (auto& t : tensors) graveyard->push_back(std::move(t));
}

struct Op {
  std::shared_ptr<Work> work;
  std::chrono::milliseconds timeout{};
  std::function<void(MPI_Request*)> start;  // posts the non-blocking call
  std::function<void()> finish;             // runs on the worker after completion (may be empty)
  std::vector<Tensor> keep;                 // the buffers MPI reads and writes
  bool exclusive = false;                   // runs alone (split: its blocking MPI_Comm_split)
  // Instead of `start`: runs the whole op on the worker (shared memory, shm_collectives.h),
  // alone; false when the deadline passed.
  std::function<bool(Clock::time_point)> run;
  MPI_Request request = MPI_REQUEST_NULL;
  Clock::time_point deadline;
};

class MpiProcessGroup final : public ProcessGroup, public detail::MpiGroupHandle {
 public:
  MpiProcessGroup(MPI_Comm comm, std::string name) : comm_(comm), name_(std::move(name)) {
    auto lock = detail::mpi_call_lock();
    HF_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    HF_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    HF_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    if (lock.owns_lock()) lock.unlock();
    shm_ = detail::NodeShm::create(shm_bootstrap());
    detail::register_group(this);
    worker_ = std::thread([this] { run(); });
  }
  ~MpiProcessGroup() override {
    detail::unregister_group(this);
    shutdown();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  bool shares_memory() const { return shm_ != nullptr; }

  std::shared_ptr<Work> allreduce(Tensor& t, ReduceOp op, const CollectiveOptions& o,
                                  CallSite) override {
    detail::check_comm_tensor(t, "allreduce", "the", true);
    check_reducible(op, t.dtype());
    Op x = make("allreduce", t.nbytes(), o);
    if (shm_ && detail::NodeShm::takes_reduction(t.dtype(), op, t.nbytes())) {
      return run_in_shm(std::move(x), {t}, [this, t, op](Clock::time_point deadline) mutable {
        return shm_->allreduce(t, op, deadline);
      });
    }
    x.start = [this, t, op](MPI_Request* r) {
      HF_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, t.raw_data(), static_cast<int>(t.numel()),
                                  mpi_type(t.dtype()), mpi_op_for(op, t.dtype()), comm_, r));
    };
    if (op == ReduceOp::kAvg) x.finish = [this, t]() mutable { detail::divide_in_place(t, size_); };
    x.keep = {t};
    return enqueue(std::move(x));
  }

  std::shared_ptr<Work> broadcast(Tensor& t, int root, const CollectiveOptions& o,
                                  CallSite) override {
    detail::check_comm_tensor(t, "broadcast", "the", false);
    detail::check_peer(root, size_, "broadcast", "root");
    Op x = make("broadcast", t.nbytes(), o);
    x.start = [this, t, root](MPI_Request* r) {
      HF_MPI_CHECK(MPI_Ibcast(t.raw_data(), static_cast<int>(t.numel()), mpi_type(t.dtype()), root,
                              comm_, r));
    };
    x.keep = {t};
    return enqueue(std::move(x));
  }

  std::shared_ptr<Work> allgather(Tensor& out, const Tensor& in, const CollectiveOptions& o,
                                  CallSite) override {
    detail::check_comm_tensor(out, "allgather", "output", false);
    detail::check_comm_tensor(in, "allgather", "input", false);
    detail::check_allgather(out, in, size_, rank_);
    Op x = make("allgather", out.nbytes(), o);
    x.start = [this, out, in](MPI_Request* r) {
      int n = static_cast<int>(in.numel());
      MPI_Datatype dt = mpi_type(in.dtype());
      // In place (ZeRO's parameter gather): `in` is this rank's block of `out`.
      const void* send = detail::is_own_block(out, in, rank_) ? MPI_IN_PLACE : in.raw_data();
      HF_MPI_CHECK(MPI_Iallgather(send, n, dt, out.raw_data(), n, dt, comm_, r));
    };
    x.keep = {out, in};
    return enqueue(std::move(x));
  }

  std::shared_ptr<Work> reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op,
                                       const CollectiveOptions& o, CallSite) override {
    detail::check_comm_tensor(out, "reduce_scatter", "output", true);
    detail::check_comm_tensor(in, "reduce_scatter", "input", true);
    detail::check_reduce_scatter(out, in, size_, rank_);
    check_reducible(op, out.dtype());
    HF_CHECK(in.dtype() == out.dtype(), "reduce_scatter: input ", dtype_name(in.dtype()),
             " and output ", dtype_name(out.dtype()), " differ");
    Op x = make("reduce_scatter", in.nbytes(), o);
    if (shm_ && detail::NodeShm::takes_reduction(out.dtype(), op, in.nbytes())) {
      for (const Mapped& m : mapped_) {
        if (m.storage.lock() != in.storage()) continue;
        std::shared_ptr<detail::SharedSegment> segment = m.segment.lock();
        const size_t slice = m.slice_bytes;
        return run_in_shm(std::move(x), {out, in},
                          [this, out, in, op, segment, slice](Clock::time_point deadline) mutable {
                            return shm_->reduce_scatter_mapped(out, in, *segment, slice, op,
                                                               deadline);
                          });
      }
      return run_in_shm(std::move(x), {out, in},
                        [this, out, in, op](Clock::time_point deadline) mutable {
                          return shm_->reduce_scatter(out, in, op, deadline);
                        });
    }
    // MPI's in-place form takes the whole input in the output buffer: an in-place call (out is
    // this rank's block of in) receives into a buffer of its own and copies.
    const bool in_place = detail::is_own_block(in, out, rank_);
    Tensor recv = in_place ? ops::empty(out.sizes(), out.dtype(), Device::cpu()) : out;
    x.start = [this, recv, in, op](MPI_Request* r) {
      HF_MPI_CHECK(MPI_Ireduce_scatter_block(in.raw_data(), recv.raw_data(),
                                             static_cast<int>(recv.numel()), mpi_type(recv.dtype()),
                                             mpi_op_for(op, recv.dtype()), comm_, r));
    };
    x.finish = [this, out, recv, op, in_place]() mutable {
      if (op == ReduceOp::kAvg) detail::divide_in_place(recv, size_);
      if (in_place) std::memcpy(out.raw_data(), recv.raw_data(), out.nbytes());
    };
    x.keep = {out, in, recv};
    return enqueue(std::move(x));
  }

  std::shared_ptr<Work> barrier(const CollectiveOptions& o, CallSite) override {
    Op x = make("barrier", 0, o);
    x.start = [this](MPI_Request* r) { HF_MPI_CHECK(MPI_Ibarrier(comm_, r)); };
    return enqueue(std::move(x));
  }

  std::shared_ptr<Work> send(const Tensor& t, int dst, int tag, const CollectiveOptions& o,
                             CallSite) override {
    detail::check_comm_tensor(t, "send", "the", false);
    detail::check_peer(dst, size_, "send", "destination");
    HF_CHECK(tag >= 0, "send: tag ", tag, " must be >= 0");
    Op x = make("send", t.nbytes(), o);
    x.start = [this, t, dst, tag](MPI_Request* r) {
      HF_MPI_CHECK(MPI_Isend(t.raw_data(), static_cast<int>(t.numel()), mpi_type(t.dtype()), dst,
                             tag, comm_, r));
    };
    x.keep = {t};
    return enqueue(std::move(x));
  }

  std::shared_ptr<Work> recv(Tensor& t, int src, int tag, const CollectiveOptions& o,
                             CallSite) override {
    detail::check_comm_tensor(t, "recv", "the", false);
    detail::check_peer(src, size_, "recv", "source");
    HF_CHECK(tag >= 0, "recv: tag ", tag, " must be >= 0");
    Op x = make("recv", t.nbytes(), o);
    x.start = [this, t, src, tag](MPI_Request* r) {
      HF_MPI_CHECK(MPI_Irecv(t.raw_data(), static_cast<int>(t.numel()), mpi_type(t.dtype()), src,
                             tag, comm_, r));
    };
    x.keep = {t};
    return enqueue(std::move(x));
  }

  // Two steps: an Iallgather of (color, key) that the deadline covers, then MPI_Comm_split,
  // which blocks but cannot wait on anyone, since every member has passed the allgather.
  std::shared_ptr<ProcessGroup> split(int color, int key, const CollectiveOptions& o,
                                      CallSite) override {
    HF_CHECK(color >= 0, "split: color ", color, " must be >= 0");
    Op x = make("split", 2 * sizeof(int) * static_cast<size_t>(size_), o);
    auto mine = std::make_shared<std::vector<int>>(std::vector<int>{color, key});
    auto all = std::make_shared<std::vector<int>>(2 * static_cast<size_t>(size_));
    auto result = std::make_shared<std::shared_ptr<ProcessGroup>>();
    x.exclusive = true;
    x.start = [this, mine, all](MPI_Request* r) {
      HF_MPI_CHECK(MPI_Iallgather(mine->data(), 2, MPI_INT, all->data(), 2, MPI_INT, comm_, r));
    };
    std::string child = hfrun::detail::concat(name_, "/split", x.work->info().seq, ":color", color);
    x.finish = [this, color, key, result, child] {
      MPI_Comm sub = MPI_COMM_NULL;
      {
        auto lock = detail::mpi_call_lock();
        HF_MPI_CHECK(MPI_Comm_split(comm_, color, key, &sub));
      }
      *result = std::make_shared<MpiProcessGroup>(sub, child);
    };
    enqueue(std::move(x))->wait();
    return *result;
  }

  Tensor node_shared_tensor(int64_t numel, DType dtype, const CollectiveOptions& o,
                            CallSite) override {
    HF_CHECK(numel >= 0, "node_shared_tensor: ", numel, " elements");
    const size_t bytes = static_cast<size_t>(numel) * dtype_size(dtype);
    std::shared_ptr<detail::SharedSegment> segment = make_segment("node_shared_tensor", bytes, o);
    return segment ? shared_view(segment, numel, dtype, 0) : Tensor();
  }

  // One segment of size() slices, each rounded up to whole pages; reduce_scatter recognises
  // inputs in it by their storage (mapped_).
  Tensor node_shared_slices(int64_t numel, DType dtype, const CollectiveOptions& o,
                            CallSite) override {
    HF_CHECK(numel >= 0, "node_shared_slices: ", numel, " elements");
    const size_t page = 4096;
    const size_t slice = (static_cast<size_t>(numel) * dtype_size(dtype) + page - 1) / page * page;
    std::shared_ptr<detail::SharedSegment> segment =
        make_segment("node_shared_slices", slice * static_cast<size_t>(size_), o, slice);
    if (!segment) return Tensor();
    Tensor mine =
        shared_view(segment, numel, dtype, static_cast<int64_t>(slice / dtype_size(dtype)) * rank_);
    std::erase_if(mapped_, [](const Mapped& m) { return m.storage.expired(); });
    mapped_.push_back(Mapped{mine.storage(), segment, slice});
    return mine;
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
    if (!broken_.empty()) return;  // a comm with a dead request in it is left alone
    auto lock_mpi = detail::mpi_call_lock();
    MPI_Comm_free(&comm_);
  }

 private:
  Op make(const char* op, size_t bytes, const CollectiveOptions& o) {
    HF_CHECK(o.timeout.count() > 0, op, ": timeout must be > 0 ms");
    Op x;
    // Point-to-point ops count separately, so collective numbers stay equal across ranks.
    bool p2p = std::string_view(op) == "send" || std::string_view(op) == "recv";
    uint64_t seq = p2p ? ++p2p_seq_ : ++seq_;
    x.work = std::make_shared<Work>(WorkInfo{detail::world_rank(), op, seq, bytes, name_});
    x.timeout = o.timeout;
    return x;
  }

  // A segment every rank maps (null on every rank where the group cannot): an exclusive op, as
  // split: an Ibarrier the deadline covers, then the segment's blocking bootstrap, which cannot
  // wait on anyone since every member has passed the barrier. Only a group whose sums already
  // go through shared memory (shm_: one node, HFRUN_SHM_COLLECTIVES not 0) offers one.
  std::shared_ptr<detail::SharedSegment> make_segment(const char* op, size_t bytes,
                                                      const CollectiveOptions& o,
                                                      size_t slice_bytes = 0) {
    if (!shm_) return nullptr;
    Op x = make(op, bytes, o);
    auto segment = std::make_shared<std::shared_ptr<detail::SharedSegment>>();
    x.exclusive = true;
    x.start = [this](MPI_Request* r) { HF_MPI_CHECK(MPI_Ibarrier(comm_, r)); };
    // Test hook: HFRUN_SHM_MAX_BYTES=N refuses larger segments, as a small /dev/shm would
    // (rank 0's value decides, for every rank alike).
    const char* cap = std::getenv("HFRUN_SHM_MAX_BYTES");
    const size_t max_bytes = cap != nullptr ? std::strtoull(cap, nullptr, 10) : SIZE_MAX;
    x.finish = [this, bytes, segment, max_bytes, slice_bytes] {
      *segment = detail::SharedSegment::create(shm_bootstrap(), std::max<size_t>(bytes, 1),
                                               max_bytes, slice_bytes);
    };
    enqueue(std::move(x))->wait();
    return *segment;
  }

  // `numel` elements of `dtype` at element `offset` of the segment, which the tensor keeps.
  static Tensor shared_view(const std::shared_ptr<detail::SharedSegment>& segment, int64_t numel,
                            DType dtype, int64_t offset) {
    auto impl = std::make_shared<TensorImpl>();
    impl->storage =
        std::make_shared<Storage>(segment->data(), segment->bytes(), Device::cpu(), segment);
    impl->sizes = {numel};
    impl->strides = {1};
    impl->offset = offset;
    impl->dtype = dtype;
    return Tensor(std::move(impl));
  }

  // Blocking MPI calls over comm_ for NodeShm::create (every rank makes the group together).
  detail::ShmBootstrap shm_bootstrap() {
    detail::ShmBootstrap b;
    b.rank = rank_;
    b.size = size_;
    int node_size = 0;
    {
      auto lock = detail::mpi_call_lock();
      MPI_Comm node = MPI_COMM_NULL;
      HF_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
      HF_MPI_CHECK(MPI_Comm_size(node, &node_size));
      HF_MPI_CHECK(MPI_Comm_free(&node));
    }
    b.one_node = node_size == size_;
    b.all_min = [this](int mine) {
      int least = 0;
      auto lock = detail::mpi_call_lock();
      HF_MPI_CHECK(MPI_Allreduce(&mine, &least, 1, MPI_INT, MPI_MIN, comm_));
      return least;
    };
    b.from_rank0 = [this](void* bytes, size_t n) {
      auto lock = detail::mpi_call_lock();
      HF_MPI_CHECK(MPI_Bcast(bytes, static_cast<int>(n), MPI_BYTE, 0, comm_));
    };
    return b;
  }

  // An op the shared segment runs: alone on the worker, after the MPI ops before it finished.
  std::shared_ptr<Work> run_in_shm(Op x, std::vector<Tensor> keep,
                                   std::function<bool(Clock::time_point)> body) {
    x.exclusive = true;
    x.run = std::move(body);
    x.keep = std::move(keep);
    return enqueue(std::move(x));
  }

  std::shared_ptr<Work> enqueue(Op x) {
    std::shared_ptr<Work> w = x.work;
    {
      std::lock_guard<std::mutex> lock(mu_);
      HF_CHECK(broken_.empty(), w->info().describe(), " cannot run: the group is unusable after ",
               broken_);
      HF_CHECK(!stop_, w->info().describe(), " cannot run: the group was shut down");
      queue_.push_back(std::move(x));
    }
    cv_.notify_all();
    return w;
  }

  // The worker: start what the queue allows, poll what is in flight, back off when idle.
  void run() {
    std::list<Op> in_flight;
    int idle_polls = 0;
    for (;;) {
      std::vector<Op> to_start;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (in_flight.empty()) {
          cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
          if (queue_.empty()) return;  // stop_ and drained
        }
        bool exclusive_running = !in_flight.empty() && in_flight.front().exclusive;
        while (!queue_.empty() && !exclusive_running) {
          if (queue_.front().exclusive && !(in_flight.empty() && to_start.empty())) break;
          exclusive_running = queue_.front().exclusive;
          to_start.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      for (Op& x : to_start) {
        if (x.run) {
          bool in_time = true;
          try {
            in_time = x.run(Clock::now() + x.timeout);
            if (in_time) {
              if (x.finish) x.finish();
              x.work->mark_done();
            }
          } catch (...) {
            x.work->mark_failed(std::current_exception());
          }
          if (!in_time) {
            in_flight.push_back(std::move(x));
            fail_all_after_timeout(in_flight.back(), in_flight);
            return;
          }
          continue;
        }
        try {
          x.deadline = Clock::now() + x.timeout;
          auto lock = detail::mpi_call_lock();
          x.start(&x.request);
          in_flight.push_back(std::move(x));
        } catch (...) {
          x.work->mark_failed(std::current_exception());
        }
      }
      bool progressed = !to_start.empty();
      bool urgent = false;  // someone blocks on an op in flight: progress it without pauses
      for (auto it = in_flight.begin(); it != in_flight.end();) {
        int done = 0;
        try {
          auto lock = detail::mpi_call_lock();
          HF_MPI_CHECK(MPI_Test(&it->request, &done, MPI_STATUS_IGNORE));
        } catch (...) {
          it->work->mark_failed(std::current_exception());
          it = in_flight.erase(it);
          continue;
        }
        if (done) {
          try {
            if (it->finish) it->finish();
            it->work->mark_done();
          } catch (...) {
            it->work->mark_failed(std::current_exception());
          }
          it = in_flight.erase(it);
          progressed = true;
        } else if (Clock::now() >= it->deadline) {
          fail_all_after_timeout(*it, in_flight);
          return;
        } else {
          urgent = urgent || it->work->has_waiters();
          ++it;
        }
      }
      // Overlap (nobody waits): back off to a poll every millisecond, leaving the cores to
      // backward; MPI progresses non-blocking collectives only inside MPI_Test, so once the
      // compute thread waits, poll continuously until the op completes.
      idle_polls = progressed ? 0 : idle_polls + 1;
      if (urgent) {
        if (idle_polls > 0) std::this_thread::yield();
      } else if (idle_polls > 64) {
        std::this_thread::sleep_for(std::chrono::microseconds(std::min(idle_polls, 1000)));
      } else if (idle_polls > 0) {
        std::this_thread::yield();
      }
    }
  }

  // The timed-out op fails with the watchdog's message; everything in flight or queued on this
  // group fails with it, since the communicator cannot be used again.
  void fail_all_after_timeout(Op& timed_out, std::list<Op>& in_flight) {
    std::string msg =
        timed_out.work->info().describe() + " timed out after " + format_seconds(timed_out.timeout);
    std::deque<Op> queued;
    {
      std::lock_guard<std::mutex> lock(mu_);
      broken_ = msg;
      queued.swap(queue_);
    }
    detail::report_timeout(msg);
    timed_out.work->mark_failed(std::make_exception_ptr(Error(msg, __FILE__, __LINE__)));
    for (Op& x : in_flight) {
      keep_forever(std::move(x.keep));
      if (&x == &timed_out) continue;
      x.work->mark_failed(std::make_exception_ptr(
          Error(x.work->info().describe() + " failed: the group is unusable after " + msg, __FILE__,
                __LINE__)));
    }
    for (Op& x : queued) {
      x.work->mark_failed(std::make_exception_ptr(
          Error(x.work->info().describe() + " failed: the group is unusable after " + msg, __FILE__,
                __LINE__)));
    }
  }

  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  std::atomic<uint64_t> seq_{0};
  std::atomic<uint64_t> p2p_seq_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Op> queue_;
  bool stop_ = false;
  bool stopped_ = false;
  std::string broken_;  // the timeout message once one happened
  std::thread worker_;
  // Set when every rank of the group is on this node (shm_collectives.h).
  std::unique_ptr<detail::NodeShm> shm_;
  // node_shared_slices' segments, by the storage of their tensors (reduce_scatter reads the
  // other ranks' inputs there).
  struct Mapped {
    std::weak_ptr<Storage> storage;
    std::weak_ptr<detail::SharedSegment> segment;
    size_t slice_bytes = 0;
  };
  std::vector<Mapped> mapped_;
};

}  // namespace

std::shared_ptr<ProcessGroup> create_mpi_world() {
  if (!mpi_is_initialized()) init_mpi();
  MPI_Comm comm = MPI_COMM_NULL;
  {
    auto lock = detail::mpi_call_lock();
    HF_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
  }
  return std::make_shared<MpiProcessGroup>(comm, "world");
}

bool uses_node_shared_memory(const ProcessGroup& group) {
  const auto* mpi = dynamic_cast<const MpiProcessGroup*>(&group);
  return mpi != nullptr && mpi->shares_memory();
}

double time_raw_mpi_allreduce(Tensor& t, int iters) {
  HF_CHECK(t.dtype() == DType::kF32 && t.is_contiguous() && iters > 0,
           "time_raw_mpi_allreduce: a contiguous f32 tensor and iters > 0 required");
  init_mpi();
  auto lock = detail::mpi_call_lock();
  HF_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  const double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) {
    HF_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t.raw_data(), static_cast<int>(t.numel()), MPI_FLOAT,
                               MPI_SUM, MPI_COMM_WORLD));
  }
  return (MPI_Wtime() - t0) / iters;
}

std::string mpi_library_version() {
  char buf[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  if (MPI_Get_library_version(buf, &len) != MPI_SUCCESS) return "unknown";
  // Open MPI counts the terminating NUL in len; it must not reach the output.
  std::string v(buf, strnlen(buf, static_cast<size_t>(len)));
  const size_t nl = v.find_first_of("\n\r");
  return nl == std::string::npos ? v : v.substr(0, nl);
}

}  // namespace hfrun::dist
