// Reductions through node-local shared memory, for an MPI group whose ranks all run on one node
// (the common CPU data-parallel job): the MPI backend's worker runs large f32/bf16 sums and
// averages (allreduce, reduce_scatter) here instead of in Open MPI.
//
// Why: Open MPI's non-blocking reductions (libnbc over vader's single-copy) allocate temporary
// buffers per call, fault fresh pages into them through process_vm_readv, then reduce and
// average in further passes. On a 2-core machine that CPU time comes out of backward's. Here the
// data takes three passes through a small persistent segment: copy in, reduce one slice (the
// average's division fused), copy out. Gathers stay with MPI: they reduce nothing, and its
// single copy (process_vm_readv straight into the output, which ZeRO's in-place gathers give it)
// beats a copy in and a copy out.
//
// The segment holds one region per rank: a phase counter in its own page, then two buffers of
// kPieceBytes. An op is cut into pieces of at most one buffer per rank; pieces alternate between
// the two buffers. Each rank writes only its own region; it posts a phase (a release store and a
// futex wake) when its input for a piece is in place, and, for an allreduce, again when its
// slice is reduced. Waiting on a peer spins briefly, then sleeps on the peer's counter (futex),
// so a rank that waits leaves its core to compute. Reusing a buffer two pieces later is safe
// without a further phase: a peer posts its next piece's phase only after it has read
// everything it needs from the previous one.
//
// With two ranks only the peer's half of a piece goes through the buffer: a rank sums its own
// half in place in its tensor, reading the peer's copy, and writes the result to its buffer in
// the same pass.
//
// Every rank reduces in rank order and copies the others' reduced slices, so all ranks hold
// identical bits. f32 sums match MPI's for two ranks bit for bit (a + b either way); bf16
// sums accumulate in f32 and round once (for two ranks, as MPI's bf16 op).
//
// HFRUN_SHM_COLLECTIVES=0 leaves every op to MPI (for comparisons).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "distributed/comm/process_group.h"
#include "tensor/tensor.h"

namespace hfrun::dist::detail {

// What making the segment needs from the group's own transport: blocking collectives that
// every rank of the group calls together.
struct ShmBootstrap {
  int rank = 0, size = 1;
  bool one_node = false;                                  // every rank of the group on this node
  std::function<int(int)> all_min;                        // the least of every rank's value
  std::function<void(void* bytes, size_t n)> from_rank0;  // rank 0's bytes to every rank
};

// Removes the names of segments that a job's rank 0 created and never removed because it died
// while its peers were still opening them (a kill during start-up): entries of `dir` (/dev/shm)
// named hfrun-<pid>-<n>, owned by this user, whose creating process no longer exists and that
// are older than `min_age_s`. A name normally lives for milliseconds. Returns how many it
// removed.
int remove_stale_segments(const char* dir, double min_age_s);

// Memory every rank of a group maps: `bytes` zeroed bytes in one segment of /dev/shm, created
// by rank 0 with its pages reserved (a full /dev/shm fails here, not later as a SIGBUS) and
// opened by name by the others; the name is removed once all have mapped it, so the memory goes
// when the last rank unmaps it, even after a crash. Collective over the bootstrap (one_node is
// the caller's business): null on every rank when any rank could not create or map it, or when
// `bytes` exceeds rank 0's `max_bytes` (standing for a small /dev/shm in tests). With
// `slice_bytes`, `bytes` is one slice per rank and each rank reserves its own (its pages charged
// to it).
class SharedSegment {
 public:
  static std::shared_ptr<SharedSegment> create(const ShmBootstrap& b, size_t bytes,
                                               size_t max_bytes = SIZE_MAX, size_t slice_bytes = 0);
  ~SharedSegment();
  SharedSegment(const SharedSegment&) = delete;
  SharedSegment& operator=(const SharedSegment&) = delete;
  char* data() const { return base_; }
  size_t bytes() const { return bytes_; }

 private:
  SharedSegment(char* base, size_t bytes) : base_(base), bytes_(bytes) {}
  char* base_;
  size_t bytes_;
};

class NodeShm {
 public:
  using Clock = std::chrono::steady_clock;
  // Per rank and buffer.
  static constexpr size_t kPieceBytes = size_t{1} << 20;
  // Smaller ops stay with MPI (their cost is latency, which MPI's shared-memory path has too).
  static constexpr size_t kMinBytes = size_t{64} << 10;

  // Collective over the group: null, on every rank, when the group is one rank, when its ranks
  // are not all on one node, when HFRUN_SHM_COLLECTIVES=0 on any rank, or when any rank could
  // not create or map the segment (/dev/shm full, say).
  static std::unique_ptr<NodeShm> create(const ShmBootstrap& b);
  NodeShm(const NodeShm&) = delete;
  NodeShm& operator=(const NodeShm&) = delete;

  // Whether a reduction goes through shared memory: f32 sums and averages and bf16 sums of at
  // least kMinBytes.
  static bool takes_reduction(DType dtype, ReduceOp op, size_t bytes);

  // As ProcessGroup's ops (arguments already checked). Each returns false when a peer did not
  // arrive before `deadline`; the segment's phases are then out of step and the group must not
  // be used again.
  bool allreduce(Tensor& t, ReduceOp op, Clock::time_point deadline);
  bool reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op, Clock::time_point deadline);
  // reduce_scatter whose every rank's `in` lies at the same offset of its own slice of
  // `slices` (a segment all ranks map, slice q at q * slice_bytes): each rank reads the others'
  // blocks where they lie, with one phase and no copy. The offsets are checked across ranks
  // (an error when they differ). The inputs must not change until every rank's op completed
  // (the caller's later collective orders that).
  bool reduce_scatter_mapped(Tensor& out, const Tensor& in, const SharedSegment& slices,
                             size_t slice_bytes, ReduceOp op, Clock::time_point deadline);

 private:
  NodeShm(int rank, int size, std::shared_ptr<SharedSegment> segment);
  char* buffer(int q) const;
  // Posts this rank's next phase and waits until every peer has posted it.
  bool step(Clock::time_point deadline);
  bool allreduce_pair(char* data, size_t n, size_t es, DType dtype, ReduceOp op,
                      Clock::time_point deadline);
  // out = the sum over ranks of srcs[q] (count elements), divided by the group size for kAvg.
  void reduce(const std::vector<const void*>& srcs, char* out, size_t count, DType dtype,
              ReduceOp op);

  int rank_, size_;
  std::shared_ptr<SharedSegment> segment_;
  char* base_;
  uint32_t phase_ = 0;      // this rank's last posted phase
  uint64_t piece_ = 0;      // pieces done (selects the buffer)
  std::vector<float> acc_;  // f32 accumulator of bf16 sums over more than two ranks
};

}  // namespace hfrun::dist::detail
