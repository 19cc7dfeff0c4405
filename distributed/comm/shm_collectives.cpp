// NodeShm: the shared segment, its phases and the two reductions (design: shm_collectives.h).
#include "distributed/comm/shm_collectives.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "common/error.h"
#include "distributed/comm/reduce_kernels.h"

namespace hfrun::dist::detail {
namespace {

// The phase counter sits alone in the first page of each rank's region.
constexpr size_t kHeaderBytes = 4096;
constexpr size_t kRegionBytes = kHeaderBytes + 2 * NodeShm::kPieceBytes;
// Polls of a peer's phase before sleeping on it (a few tens of microseconds).
constexpr int kSpins = 2000;

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) &&
                  std::atomic<uint32_t>::is_always_lock_free,
              "the phase counters are futex words shared between processes");

// Where a rank's input of reduce_scatter_mapped lies in its slice (bytes from the slice's start,
// and its length), posted with its phase for the others to check. Two slots, by the parity of
// the phase that posts them: a rank that went on to its next op writes the other slot, and the
// one after waits for this rank's next phase.
struct MappedInput {
  uint64_t offset, bytes;
};
constexpr size_t kMappedInputAt = 64;  // in the header page, apart from the phase word

MappedInput* mapped_input(char* base, int q, uint32_t phase) {
  return reinterpret_cast<MappedInput*>(base + static_cast<size_t>(q) * kRegionBytes +
                                        kMappedInputAt) +
         (phase & 1U);
}

std::atomic<uint32_t>& phase_word(char* base, int q) {
  return *reinterpret_cast<std::atomic<uint32_t>*>(base + static_cast<size_t>(q) * kRegionBytes);
}

uint32_t* futex_addr(std::atomic<uint32_t>& a) {
  return reinterpret_cast<uint32_t*>(&a);
}

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Waits until q's phase reaches `target` (wrapping compare) or the deadline passes.
bool wait_phase(std::atomic<uint32_t>& word, uint32_t target, NodeShm::Clock::time_point deadline) {
  for (int spin = 0;; ++spin) {
    const uint32_t seen = word.load(std::memory_order_acquire);
    if (static_cast<int32_t>(seen - target) >= 0) return true;
    if (spin < kSpins) {
      cpu_relax();
      continue;
    }
    const auto now = NodeShm::Clock::now();
    if (now >= deadline) return false;
    // Sleep until the word changes from `seen` (a wake, or a change before we slept), at most
    // 10 ms at a time so the deadline is noticed.
    const auto left =
        std::min<NodeShm::Clock::duration>(deadline - now, std::chrono::milliseconds(10));
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    syscall(SYS_futex, futex_addr(word), FUTEX_WAIT, seen, &ts, nullptr, 0);
  }
}

// [begin, end) of slice q when `count` elements are split over `size` ranks.
std::pair<size_t, size_t> slice(size_t count, int q, int size) {
  return {count * static_cast<size_t>(q) / static_cast<size_t>(size),
          count * static_cast<size_t>(q + 1) / static_cast<size_t>(size)};
}

bool shm_wanted() {
  const char* v = std::getenv("HFRUN_SHM_COLLECTIVES");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

}  // namespace

int remove_stale_segments(const char* dir, double min_age_s) {
  DIR* d = opendir(dir);
  if (d == nullptr) return 0;
  int removed = 0;
  const time_t now = time(nullptr);
  while (const dirent* e = readdir(d)) {
    int pid = 0, serial = 0, used = 0;
    if (std::sscanf(e->d_name, "hfrun-%d-%d%n", &pid, &serial, &used) != 2 ||
        e->d_name[used] != '\0' || pid <= 0) {
      continue;
    }
    const std::string path = std::string(dir) + "/" + e->d_name;
    struct stat st {};
    if (stat(path.c_str(), &st) != 0 || st.st_uid != getuid()) continue;
    if (difftime(now, st.st_mtime) < min_age_s) continue;
    if (kill(pid, 0) == 0 || errno != ESRCH) continue;  // its creator lives (or is not ours)
    if (unlink(path.c_str()) == 0) ++removed;
  }
  closedir(d);
  return removed;
}

std::shared_ptr<SharedSegment> SharedSegment::create(const ShmBootstrap& b, size_t bytes,
                                                     size_t max_bytes, size_t slice_bytes) {
  const int rank = b.rank;
  char name[64] = {};
  int created = 0;
  int fd = -1;
  if (rank == 0 && bytes <= max_bytes) {
    // Names a killed job left behind: with no process mapping them, their memory is held only
    // by the name.
    remove_stale_segments("/dev/shm", 60.0);
    static std::atomic<int> serial{0};
    std::snprintf(name, sizeof(name), "/hfrun-%d-%d", static_cast<int>(getpid()), serial++);
    fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    const bool reserved =
        fd >= 0 &&
        (slice_bytes == 0 ? posix_fallocate(fd, 0, static_cast<off_t>(bytes)) == 0
                          : ftruncate(fd, static_cast<off_t>(bytes)) == 0 &&
                                posix_fallocate(fd, 0, static_cast<off_t>(slice_bytes)) == 0);
    if (reserved) {
      created = 1;
    } else if (fd >= 0) {
      close(fd);
      fd = -1;
      shm_unlink(name);
    }
  }
  b.from_rank0(name, sizeof(name));
  b.from_rank0(&created, sizeof(created));
  if (!created) return nullptr;
  bool reserved = true;
  if (rank != 0) {
    fd = shm_open(name, O_RDWR, 0);
    // Each rank's own slice is reserved by that rank: its pages are charged to it (a memory
    // cgroup per rank), not all to rank 0.
    const auto at = static_cast<off_t>(static_cast<size_t>(rank) * slice_bytes);
    reserved = slice_bytes == 0 ||
               (fd >= 0 && posix_fallocate(fd, at, static_cast<off_t>(slice_bytes)) == 0);
  }
  void* p = MAP_FAILED;
  if (fd >= 0 && reserved) {
    p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  if (fd >= 0) close(fd);
  const int mapped = p != MAP_FAILED ? 1 : 0;
  const int all_mapped = b.all_min(mapped);  // after it, every rank has opened the name
  if (rank == 0) shm_unlink(name);
  if (!all_mapped) {
    if (mapped) munmap(p, bytes);
    return nullptr;
  }
  return std::shared_ptr<SharedSegment>(new SharedSegment(static_cast<char*>(p), bytes));
}

SharedSegment::~SharedSegment() {
  munmap(base_, bytes_);
}

std::unique_ptr<NodeShm> NodeShm::create(const ShmBootstrap& b) {
  if (b.size < 2) return nullptr;
  if (!b.all_min(shm_wanted() && b.one_node ? 1 : 0)) return nullptr;
  std::shared_ptr<SharedSegment> segment =
      SharedSegment::create(b, static_cast<size_t>(b.size) * kRegionBytes);
  if (!segment) return nullptr;
  return std::unique_ptr<NodeShm>(new NodeShm(b.rank, b.size, std::move(segment)));
}

NodeShm::NodeShm(int rank, int size, std::shared_ptr<SharedSegment> segment)
    : rank_(rank), size_(size), segment_(std::move(segment)), base_(segment_->data()) {}

bool NodeShm::takes_reduction(DType dtype, ReduceOp op, size_t bytes) {
  if (bytes < kMinBytes) return false;
  if (dtype == DType::kF32) return op == ReduceOp::kSum || op == ReduceOp::kAvg;
  return dtype == DType::kBF16 && op == ReduceOp::kSum;
}

char* NodeShm::buffer(int q) const {
  return base_ + static_cast<size_t>(q) * kRegionBytes + kHeaderBytes + (piece_ % 2) * kPieceBytes;
}

bool NodeShm::step(Clock::time_point deadline) {
  ++phase_;
  std::atomic<uint32_t>& mine = phase_word(base_, rank_);
  mine.store(phase_, std::memory_order_release);
  syscall(SYS_futex, futex_addr(mine), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
  for (int q = 0; q < size_; ++q) {
    if (q != rank_ && !wait_phase(phase_word(base_, q), phase_, deadline)) return false;
  }
  return true;
}

void NodeShm::reduce(const std::vector<const void*>& srcs, char* out, size_t count, DType dtype,
                     ReduceOp op) {
  if (count == 0) return;
  if (dtype == DType::kF32) {
    sum_f32(srcs.data(), size_, reinterpret_cast<float*>(out), count,
            op == ReduceOp::kAvg ? size_ : 0);
    return;
  }
  if (size_ > 2 && acc_.size() < count) acc_.resize(count);
  sum_bf16(srcs.data(), size_, reinterpret_cast<uint16_t*>(out), count, acc_.data());
}

// Per piece: copy in; phase; reduce slice `rank` of every rank's buffer into the tensor and
// into this rank's buffer; phase; copy the other slices from their ranks' buffers.
bool NodeShm::allreduce(Tensor& t, ReduceOp op, Clock::time_point deadline) {
  const size_t es = t.element_size();
  const size_t n = static_cast<size_t>(t.numel());
  const size_t per_piece = kPieceBytes / es;
  char* data = static_cast<char*>(t.raw_data());
  if (size_ == 2) return allreduce_pair(data, n, es, t.dtype(), op, deadline);
  std::vector<const void*> srcs(static_cast<size_t>(size_));
  for (size_t off = 0; off < n; off += per_piece, ++piece_) {
    const size_t m = std::min(per_piece, n - off);
    char* mine = buffer(rank_);
    std::memcpy(mine, data + off * es, m * es);
    if (!step(deadline)) return false;
    const auto [b, e] = slice(m, rank_, size_);
    for (int q = 0; q < size_; ++q) srcs[static_cast<size_t>(q)] = buffer(q) + b * es;
    reduce(srcs, data + (off + b) * es, e - b, t.dtype(), op);
    std::memcpy(mine + b * es, data + (off + b) * es, (e - b) * es);
    if (!step(deadline)) return false;
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      const auto [qb, qe] = slice(m, q, size_);
      std::memcpy(data + (off + qb) * es, buffer(q) + qb * es, (qe - qb) * es);
    }
  }
  return true;
}

// Two ranks: only the peer's slice goes through this rank's buffer; this rank's slice is summed
// in place in the tensor (a + b is b + a, so both ranks still hold the same bits) and copied to
// the buffer by the same pass.
bool NodeShm::allreduce_pair(char* data, size_t n, size_t es, DType dtype, ReduceOp op,
                             Clock::time_point deadline) {
  const size_t per_piece = kPieceBytes / es;
  const int peer = 1 - rank_;
  for (size_t off = 0; off < n; off += per_piece, ++piece_) {
    const size_t m = std::min(per_piece, n - off);
    const auto [b, e] = slice(m, rank_, 2);
    const auto [pb, pe] = slice(m, peer, 2);
    char* mine = buffer(rank_);
    std::memcpy(mine + pb * es, data + (off + pb) * es, (pe - pb) * es);
    if (!step(deadline)) return false;
    char* own = data + (off + b) * es;
    if (dtype == DType::kF32) {
      sum2_f32(reinterpret_cast<float*>(own), reinterpret_cast<const float*>(buffer(peer) + b * es),
               reinterpret_cast<float*>(mine + b * es), e - b, op == ReduceOp::kAvg ? 2 : 0);
    } else {
      sum2_bf16(reinterpret_cast<uint16_t*>(own),
                reinterpret_cast<const uint16_t*>(buffer(peer) + b * es),
                reinterpret_cast<uint16_t*>(mine + b * es), e - b);
    }
    if (!step(deadline)) return false;
    std::memcpy(data + (off + pb) * es, buffer(peer) + pb * es, (pe - pb) * es);
  }
  return true;
}

// Per piece (the same element range of every block of `in`): copy the other ranks' blocks' range
// into this rank's buffer, one after the other; phase; reduce block `rank`'s range of every
// buffer (this rank's own straight from `in`) into `out`. In place, `out` is exactly that own
// block: each element is read before it is written.
bool NodeShm::reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op,
                             Clock::time_point deadline) {
  const size_t es = out.element_size();
  const size_t n = static_cast<size_t>(out.numel());
  const size_t per_piece = kPieceBytes / es / static_cast<size_t>(size_);
  const char* src = static_cast<const char*>(in.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  std::vector<const void*> srcs(static_cast<size_t>(size_));
  for (size_t off = 0; off < n; off += per_piece, ++piece_) {
    const size_t m = std::min(per_piece, n - off);
    char* mine = buffer(rank_);
    const char* own = src + (static_cast<size_t>(rank_) * n + off) * es;
    for (int blk = 0; blk < size_; ++blk) {
      if (blk == rank_) continue;
      std::memcpy(mine + static_cast<size_t>(blk) * m * es,
                  src + (static_cast<size_t>(blk) * n + off) * es, m * es);
    }
    if (!step(deadline)) return false;
    for (int q = 0; q < size_; ++q) {
      srcs[static_cast<size_t>(q)] =
          q == rank_ ? own : buffer(q) + static_cast<size_t>(rank_) * m * es;
    }
    reduce(srcs, dst + off * es, m, out.dtype(), op);
  }
  return true;
}

bool NodeShm::reduce_scatter_mapped(Tensor& out, const Tensor& in, const SharedSegment& slices,
                                    size_t slice_bytes, ReduceOp op, Clock::time_point deadline) {
  const size_t es = out.element_size();
  const size_t n = static_cast<size_t>(out.numel());
  const char* mine = static_cast<const char*>(in.raw_data());
  const char* first = slices.data() + static_cast<size_t>(rank_) * slice_bytes;
  HF_CHECK(mine >= first && mine + in.nbytes() <= first + slice_bytes,
           "reduce_scatter: the input does not lie in this rank's slice of the shared segment");
  const auto offset = static_cast<uint64_t>(mine - first);
  *mapped_input(base_, rank_, phase_ + 1) = MappedInput{offset, in.nbytes()};
  if (!step(deadline)) return false;  // (its release store publishes the input's place)
  for (int q = 0; q < size_; ++q) {
    const MappedInput theirs = *mapped_input(base_, q, phase_);
    HF_CHECK(theirs.offset == offset && theirs.bytes == in.nbytes(), "reduce_scatter: rank ", q,
             "'s input lies at byte ", theirs.offset, " (", theirs.bytes, " bytes) of its slice, ",
             "this rank's at ", offset, " (", in.nbytes(), " bytes): the ranks' inputs differ");
  }
  std::vector<const void*> srcs(static_cast<size_t>(size_));
  for (int q = 0; q < size_; ++q) {
    srcs[static_cast<size_t>(q)] = slices.data() + static_cast<size_t>(q) * slice_bytes + offset +
                                   static_cast<size_t>(rank_) * n * es;
  }
  reduce(srcs, static_cast<char*>(out.raw_data()), n, out.dtype(), op);
  return true;
}

}  // namespace hfrun::dist::detail
