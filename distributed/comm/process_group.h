// ProcessGroup + Work (the c10d shape): every collective takes an options struct with a timeout
// and returns a Work handle at once; the backend runs the ops in issue order in the background.
// Process groups are objects passed explicitly (world, and sub-groups made with split()).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace hfrun::dist {

// Where a collective was called from (a defaulted last argument of every op, so the caller's
// file and line): distributed.debug names the call sites of ranks that disagree. Our own type,
// as std::source_location needs clang 15.
struct CallSite {
  const char* file = "";
  unsigned line = 0;
  static constexpr CallSite current(const char* file = __builtin_FILE(),
                                    unsigned line = __builtin_LINE()) {
    return CallSite{file, line};
  }
};

// kAvg is kSum divided by the group size (integer tensors: truncated toward zero).
enum class ReduceOp { kSum, kAvg, kMax, kMin };
const char* reduce_op_name(ReduceOp op);  // "sum", "avg", "max", "min"

struct CollectiveOptions {
  // How long the op may take once the backend starts it; when it expires the op fails and the
  // watchdog ends the job (see MpiInitOptions in mpi_process_group.h).
  std::chrono::milliseconds timeout{300000};
};

// What an op is, for error messages: "rank 0: allreduce #3 (64 bytes, group world)".
struct WorkInfo {
  int rank = 0;
  std::string op;
  // 1-based, per group, in issue order: collectives count together (equal on every rank),
  // send/recv have their own count.
  uint64_t seq = 0;
  size_t bytes = 0;
  std::string group;
  std::string describe() const;
};

// "1s", "1.5s": how timeouts are printed.
std::string format_seconds(std::chrono::milliseconds d);

// The handle of one issued op. Thread-safe; the backend completes it from its worker thread.
class Work {
 public:
  // Issuing and completing an op is recorded (flight_recorder.h).
  explicit Work(WorkInfo info);

  // True once the op finished, successfully or with an error.
  bool is_completed();
  // Blocks until the op finished and rethrows its error. With a timeout, throws an hfrun::Error
  // naming rank, op, sequence number, bytes and group when the op has not finished by then (the
  // op itself keeps running under its own CollectiveOptions::timeout).
  void wait(std::optional<std::chrono::milliseconds> timeout = {});
  const WorkInfo& info() const { return info_; }
  // Whether a thread is blocked in wait(): the backend then progresses the op at full speed
  // (while nobody waits, it polls gently so overlapped compute keeps the cores).
  bool has_waiters() const { return waiters_.load() > 0; }

  // Backend side: exactly one of these, once.
  void mark_done();
  void mark_failed(std::exception_ptr error);

 private:
  WorkInfo info_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
  std::atomic<int> waiters_{0};
};

// A set of ranks that run collectives together. Tensors are contiguous, on the CPU for the MPI
// backend and on the group's GPU for NCCL (a host-staged group takes either); reductions
// take f32, i32 and i64, data movement (broadcast, allgather, send/recv) any dtype. Argument
// errors throw hfrun::Error at the call, naming the op and the shapes.
class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const std::string& name() const = 0;

  // In place: every rank's `t` becomes the reduction of all ranks' `t`.
  virtual std::shared_ptr<Work> allreduce(Tensor& t, ReduceOp op = ReduceOp::kSum,
                                          const CollectiveOptions& opts = {},
                                          CallSite where = CallSite::current()) = 0;
  // In place: every rank's `t` becomes rank `root`'s (root is a rank of this group).
  virtual std::shared_ptr<Work> broadcast(Tensor& t, int root, const CollectiveOptions& opts = {},
                                          CallSite where = CallSite::current()) = 0;
  // out (size() * n elements) = every rank's `in` (n elements), concatenated in rank order.
  // `in` may be this rank's block of `out` (in place, as ZeRO gathers parameters); any other
  // overlap of `in` and `out` is an error.
  virtual std::shared_ptr<Work> allgather(Tensor& out, const Tensor& in,
                                          const CollectiveOptions& opts = {},
                                          CallSite where = CallSite::current()) = 0;
  // Several allgathers as one op: outs[i] = every rank's ins[i], as allgather (in-place blocks
  // allowed). NCCL issues them as one group (ncclGroupStart/End: fused launches, one Work for
  // all); this default issues them one by one, waits for all but the last and returns the
  // last's Work.
  virtual std::shared_ptr<Work> allgather_coalesced(const std::vector<Tensor>& outs,
                                                    const std::vector<Tensor>& ins,
                                                    const CollectiveOptions& opts = {},
                                                    CallSite where = CallSite::current());
  // out (n elements) = block `rank()` of the reduction of every rank's `in` (size() * n).
  // `out` may be this rank's block of `in` (in place, as NCCL allows and ZeRO-1 reduces its
  // flat gradient buffer); any other overlap is an error.
  virtual std::shared_ptr<Work> reduce_scatter(Tensor& out, const Tensor& in,
                                               ReduceOp op = ReduceOp::kSum,
                                               const CollectiveOptions& opts = {},
                                               CallSite where = CallSite::current()) = 0;
  virtual std::shared_ptr<Work> barrier(const CollectiveOptions& opts = {},
                                        CallSite where = CallSite::current()) = 0;
  // Point to point within the group; `tag` >= 0 matches a send with its recv.
  virtual std::shared_ptr<Work> send(const Tensor& t, int dst, int tag = 0,
                                     const CollectiveOptions& opts = {},
                                     CallSite where = CallSite::current()) = 0;
  virtual std::shared_ptr<Work> recv(Tensor& t, int src, int tag = 0,
                                     const CollectiveOptions& opts = {},
                                     CallSite where = CallSite::current()) = 0;

  // Collective over this group: ranks passing the same color form a new group, ordered by
  // (key, rank). Blocks until the new group exists (or opts.timeout expires).
  virtual std::shared_ptr<ProcessGroup> split(int color, int key,
                                              const CollectiveOptions& opts = {},
                                              CallSite where = CallSite::current()) = 0;

  // Collective over this group: host memory that every rank maps, a 1-D CPU tensor of `numel`
  // zeroed elements of `dtype`, the same bytes on every rank (what one rank writes, all read,
  // once a collective orders the write before the reads). Undefined on every rank where the
  // group cannot share memory: ranks on several nodes, a transport without it (NCCL, MPI with
  // HFRUN_SHM_COLLECTIVES=0), or no room in /dev/shm. This default: undefined.
  virtual Tensor node_shared_tensor(int64_t numel, DType dtype, const CollectiveOptions& opts = {},
                                    CallSite where = CallSite::current());
  // Collective: this rank's slice (`numel` elements) of node shared memory holding one slice
  // per rank. A reduce_scatter whose input every rank takes at the same place of its slice
  // reads the other ranks' blocks where they lie instead of copying them; its input must then
  // stay unchanged until a later collective shows every rank's reduce_scatter done (ZeRO-1's
  // gradient buffer, written again only after the step's barrier). Undefined where
  // node_shared_tensor is. This default: undefined.
  virtual Tensor node_shared_slices(int64_t numel, DType dtype, const CollectiveOptions& opts = {},
                                    CallSite where = CallSite::current());
};

}  // namespace hfrun::dist
