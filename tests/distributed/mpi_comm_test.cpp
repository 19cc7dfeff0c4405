// The MPI process group across real ranks: run under mpirun (-np 2 and -np 4, see
// tests/CMakeLists.txt). Every rank checks its own results exactly, prints "N passed, M failed"
// and exits non-zero on a failure. `timeout-handled` / `timeout-unhandled` run the watchdog path:
// rank 1 skips an allreduce that rank 0 waits on, and the job must end non-zero, quickly.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "distributed/comm/checked_process_group.h"
#include "distributed/comm/mpi_process_group.h"
#include "distributed/comm/shm_collectives.h"
#include "tensor/ops.h"

namespace {

using namespace hfrun;
using namespace hfrun::dist;
using std::chrono::milliseconds;

int g_rank = 0;
int g_passed = 0;
int g_failed = 0;

void expect(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::fprintf(stderr, "rank %d: FAILED: %s\n", g_rank, what.c_str());
  }
}

template <typename T>
void expect_values(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
  bool ok = got == want;
  std::string detail = what;
  for (size_t i = 0; !ok && i < std::min(got.size(), want.size()); ++i) {
    if (got[i] != want[i]) {
      detail += " (element " + std::to_string(i) + ": got " + std::to_string(got[i]) + ", want " +
                std::to_string(want[i]) + ")";
      break;
    }
  }
  expect(ok, detail);
}

template <typename Fn>
void expect_error(Fn&& f, const std::vector<std::string>& parts, const std::string& what) {
  try {
    f();
    expect(false, what + ": no error thrown");
  } catch (const Error& e) {
    bool ok = true;
    for (const auto& p : parts) ok = ok && e.message().find(p) != std::string::npos;
    expect(ok, what + ": message '" + e.message() + "'");
  }
}

const CollectiveOptions kOpts{milliseconds(30000)};

void test_allreduce(ProcessGroup& pg) {
  const int n = pg.size(), r = pg.rank();
  const float s = static_cast<float>(n * (n + 1) / 2);  // sum of (rank + 1)
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
    Tensor t = ops::from_vector({1.f * (r + 1), 2.f * (r + 1), 3.f * (r + 1), -1.f * (r + 1)}, {4});
    pg.allreduce(t, op, kOpts)->wait();
    std::vector<float> want;
    for (float base : {1.f, 2.f, 3.f, -1.f}) {
      float hi = base * static_cast<float>(base > 0 ? n : 1);
      float lo = base * static_cast<float>(base > 0 ? 1 : n);
      want.push_back(op == ReduceOp::kSum   ? base * s
                     : op == ReduceOp::kAvg ? base * s / static_cast<float>(n)
                     : op == ReduceOp::kMax ? hi
                                            : lo);
    }
    expect_values(t.to_vector(), want, std::string("allreduce f32 ") + reduce_op_name(op));
  }
  // i64 beyond 2^53: exact integer arithmetic, not a float round trip.
  const int64_t big = int64_t{1} << 60;
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
    Tensor t = ops::from_ints({big / 8 + r, -3 * r - 1, 7}, {3});
    pg.allreduce(t, op, kOpts)->wait();
    std::vector<int64_t> want(3, 0);
    for (int q = 0; q < n; ++q) {
      std::vector<int64_t> v = {big / 8 + q, -3 * q - 1, 7};
      for (int i = 0; i < 3; ++i) {
        if (op == ReduceOp::kMax) {
          want[i] = q == 0 ? v[i] : std::max(want[i], v[i]);
        } else {
          want[i] += v[i];
        }
      }
    }
    if (op == ReduceOp::kAvg) {
      for (auto& w : want) w /= n;
    }
    expect_values(t.to_int_vector(), want, std::string("allreduce i64 ") + reduce_op_name(op));
  }
  Tensor i32 = ops::from_ints({r, 1}, {2}, DType::kI32);
  pg.allreduce(i32, ReduceOp::kSum, kOpts)->wait();
  expect_values(i32.to_int_vector(), {int64_t{n} * (n - 1) / 2, n}, "allreduce i32 sum");
  // bf16 sums (distributed.reduce_dtype bf16), with values whose sums bf16 holds exactly.
  Tensor bf = ops::to_dtype(ops::from_vector({0.5f, 1.0f + r, 3.0f}, {3}), DType::kBF16);
  pg.allreduce(bf, ReduceOp::kSum, kOpts)->wait();
  expect_values(bf.to_vector(), {0.5f * n, float(n) + float(n) * (n - 1) / 2, 3.0f * n},
                "allreduce bf16 sum");
  Tensor rs_in = ops::to_dtype(ops::full({2 * n}, 0.25), DType::kBF16);
  Tensor rs_out = ops::zeros({2}, DType::kBF16);
  pg.reduce_scatter(rs_out, rs_in, ReduceOp::kSum, kOpts)->wait();
  expect_values(rs_out.to_vector(), std::vector<float>(2, 0.25f * n), "reduce_scatter bf16 sum");
}

void test_broadcast(ProcessGroup& pg) {
  const int root = pg.size() - 1, r = pg.rank();
  Tensor t = r == root ? ops::from_vector({3.5f, -2.f, 9.f}, {3}) : ops::full({3}, -1.0);
  pg.broadcast(t, root, kOpts)->wait();
  expect_values(t.to_vector(), {3.5f, -2.f, 9.f}, "broadcast f32 from the last rank");
  Tensor b = ops::to_dtype(ops::full({5}, r == root ? 1.25 : 0.0), DType::kBF16);
  pg.broadcast(b, root, kOpts)->wait();
  expect_values(b.to_vector(), std::vector<float>(5, 1.25f), "broadcast bf16 (moved, not reduced)");
}

void test_allgather_reduce_scatter(ProcessGroup& pg) {
  const int n = pg.size(), r = pg.rank();
  Tensor in = ops::from_ints({10 * r, 10 * r + 1, 10 * r + 2}, {3});
  Tensor out = ops::zeros({n, 3}, DType::kI64);
  pg.allgather(out, in, kOpts)->wait();
  std::vector<int64_t> want;
  for (int q = 0; q < n; ++q) {
    for (int i = 0; i < 3; ++i) want.push_back(10 * q + i);
  }
  expect_values(out.to_int_vector(), want, "allgather i64");
  // Coalesced: two gathers, one of them in place (the input is this rank's block).
  Tensor out2 = ops::zeros({n * 2});
  Tensor own = ops::narrow(out2, 0, 2 * r, 2);
  ops::copy_(own, ops::from_vector({0.5f * r, -1.0f * r}, {2}));
  Tensor out3 = ops::zeros({n, 3}, DType::kI64);
  pg.allgather_coalesced({out3, out2}, {in, own}, kOpts)->wait();
  expect_values(out3.to_int_vector(), want, "allgather_coalesced i64");
  std::vector<float> want2;
  for (int q = 0; q < n; ++q) {
    want2.push_back(0.5f * q);
    want2.push_back(-1.0f * q);
  }
  expect_values(out2.to_vector(), want2, "allgather_coalesced f32 in place");

  // Rank q contributes in[j] = 100 q + j; block r of the sum is 100 * sum(q) + n * (2r + k).
  std::vector<float> vals;
  for (int j = 0; j < 2 * n; ++j) vals.push_back(static_cast<float>(100 * r + j));
  Tensor rs_in = ops::from_vector(vals, {2 * n});
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
    Tensor rs_out = ops::zeros({2});
    pg.reduce_scatter(rs_out, rs_in, op, kOpts)->wait();
    std::vector<float> w;
    for (int k = 0; k < 2; ++k) {
      float sum = static_cast<float>(100 * n * (n - 1) / 2 + n * (2 * r + k));
      w.push_back(op == ReduceOp::kSum ? sum : sum / static_cast<float>(n));
    }
    expect_values(rs_out.to_vector(), w, std::string("reduce_scatter ") + reduce_op_name(op));
  }
}

void test_send_recv_ring(ProcessGroup& pg) {
  const int n = pg.size(), r = pg.rank();
  // 4 MB messages go through the rendezvous protocol: the sends only finish once the receives
  // are posted, so this checks that queued ops are in flight together.
  Tensor out = ops::full({1 << 20}, r);
  Tensor in = ops::zeros({1 << 20});
  auto s = pg.send(out, (r + 1) % n, 7, kOpts);
  auto q = pg.recv(in, (r + n - 1) % n, 7, kOpts);
  s->wait();
  q->wait();
  Tensor m = ops::max_all(in), mn = ops::neg(ops::max_all(ops::neg(in)));
  float left = static_cast<float>((r + n - 1) % n);
  expect(m.item() == left && mn.item() == left, "send/recv ring: every element from the left");
}

void test_barrier_and_wait_timeout(ProcessGroup& pg) {
  pg.barrier(kOpts)->wait();
  expect(true, "barrier");
  if (pg.size() < 2) return;
  // Rank 0's recv is only matched after the barrier that follows it, so waiting 50 ms on it
  // first must throw the wait timeout while the op itself stays alive and then completes.
  Tensor t = ops::zeros({2});
  if (pg.rank() == 0) {
    auto w = pg.recv(t, 1, 3, kOpts);
    expect_error([&] { w->wait(milliseconds(50)); },
                 {"rank 0", "recv #", "8 bytes", "group world", "wait timeout"},
                 "Work::wait(timeout) on a pending recv");
    expect(!w->is_completed(), "pending recv is not completed");
    pg.barrier(kOpts)->wait();
    w->wait();
    expect(w->is_completed(), "recv completed after wait");
    expect_values(t.to_vector(), {4.f, 5.f}, "recv after barrier");
  } else {
    pg.barrier(kOpts)->wait();
    if (pg.rank() == 1) pg.send(ops::from_vector({4.f, 5.f}, {2}), 0, 3, kOpts)->wait();
  }
}

void test_split(ProcessGroup& world) {
  const int n = world.size(), r = world.rank();
  auto sub = world.split(r % 2, r, kOpts);
  int members = (n - r % 2 + 1) / 2;
  expect(sub->size() == members && sub->rank() == r / 2, "split even/odd: size and rank");
  expect(sub->name().find("world/split") == 0, "split group name '" + sub->name() + "'");
  Tensor t = ops::from_ints({r}, {1});
  sub->allreduce(t, ReduceOp::kSum, kOpts)->wait();
  int64_t want = 0;
  for (int q = r % 2; q < n; q += 2) want += q;
  expect_values(t.to_int_vector(), {want}, "allreduce inside the even/odd group");
  auto rev = world.split(0, n - r, kOpts);  // key orders ranks: reversed
  expect(rev->rank() == n - 1 - r && rev->size() == n, "split with reversed keys");
  // The groups run independently: issue on both, wait in the opposite order.
  Tensor a = ops::ones({4}), b = ops::ones({4});
  auto wa = sub->allreduce(a, ReduceOp::kSum, kOpts);
  auto wb = rev->allreduce(b, ReduceOp::kSum, kOpts);
  wb->wait();
  wa->wait();
  expect(a.to_vector()[0] == static_cast<float>(members) && b.to_vector()[0] == n,
         "two groups in flight at once");
}

// A hash of the tensor's bytes: equal on every rank when the ranks hold the same tensor.
int64_t bits_checksum(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.raw_data());
  uint64_t sum = 0;  // unsigned: wraps instead of overflowing
  for (size_t i = 0; i < t.nbytes(); ++i) sum = sum * 31 + p[i];
  return static_cast<int64_t>(sum);
}

bool same_on_every_rank(ProcessGroup& pg, const Tensor& t) {
  Tensor mine = ops::from_ints({bits_checksum(t)}, {1});
  Tensor all = ops::zeros({pg.size()}, DType::kI64);
  pg.allgather(all, mine, kOpts)->wait();
  const std::vector<int64_t> v = all.to_int_vector();
  for (int64_t x : v) {
    if (x != v[0]) return false;
  }
  return true;
}

// Largest |a - b| / max(|b|, floor) over the elements (as f32).
double max_rel_diff(const Tensor& a, const Tensor& b, double floor) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  double worst = x.size() == y.size() ? 0 : 1e30;
  for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
    const double d = std::abs(static_cast<double>(x[i]) - y[i]);
    worst = std::max(worst, d / std::max(std::abs(static_cast<double>(y[i])), floor));
  }
  return worst;
}

// Large sums and averages go through node shared memory (shm_collectives.h): several pieces with
// a ragged end, f32 and bf16, sums and averages, against the same ops on a group that leaves
// them to MPI (HFRUN_SHM_COLLECTIVES=0 when it is made). Two ranks give MPI's bits exactly; more
// ranks sum in another order (within rounding); every rank always holds the same bits.
void test_shared_memory(ProcessGroup& world) {
  const int n = world.size(), r = world.rank();
  expect(uses_node_shared_memory(world), "the world group of one node uses shared memory");
  setenv("HFRUN_SHM_COLLECTIVES", "0", 1);
  std::shared_ptr<ProcessGroup> plain = world.split(0, r, kOpts);
  unsetenv("HFRUN_SHM_COLLECTIVES");
  expect(!uses_node_shared_memory(*plain), "HFRUN_SHM_COLLECTIVES=0 leaves a group to MPI");
  std::shared_ptr<ProcessGroup> again = world.split(0, r, kOpts);
  expect(uses_node_shared_memory(*again), "a group split off one node uses shared memory");

  const int64_t piece = static_cast<int64_t>(dist::detail::NodeShm::kPieceBytes / 4);
  Generator gen(100 + r);
  auto compare = [&](const Tensor& shm, const Tensor& mpi, const std::string& what,
                     bool replicated) {
    // Sums of a few N(0, 1) values: rounding errors of a few ulps of numbers up to ~10 (bf16's
    // ulp there is 1/16), measured against max(|value|, 1) so that cancellation near 0 is not
    // magnified.
    const double tol = shm.dtype() == DType::kBF16 ? 1.0 / 8 : 1e-5;
    if (n == 2) {
      expect(bits_checksum(shm) == bits_checksum(mpi) && max_rel_diff(shm, mpi, 1e-3) == 0,
             what + ": the bits of MPI's");
    } else {
      const double d = max_rel_diff(shm, mpi, 1.0);
      expect(d <= tol, what + ": within rounding of MPI's (relative " + std::to_string(d) + ")");
    }
    if (replicated) expect(same_on_every_rank(world, shm), what + ": the same bits on every rank");
  };
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
      if (dt == DType::kBF16 && op == ReduceOp::kAvg) continue;
      const std::string what = std::string(dtype_name(dt)) + " " + reduce_op_name(op);
      // allreduce: 3 pieces and a ragged end; reduce_scatter: blocks of 2 pieces and a bit.
      Tensor x = ops::to_dtype(ops::randn({3 * piece + 12345}, gen), dt);
      Tensor a = ops::clone(x), b = ops::clone(x);
      world.allreduce(a, op, kOpts)->wait();
      plain->allreduce(b, op, kOpts)->wait();
      compare(a, b, "allreduce " + what, true);
      const int64_t block = 2 * piece / n + 777;
      Tensor in = ops::to_dtype(ops::randn({n * block}, gen), dt);
      Tensor oa = ops::zeros({block}, dt), ob = ops::zeros({block}, dt);
      world.reduce_scatter(oa, in, op, kOpts)->wait();
      plain->reduce_scatter(ob, in, op, kOpts)->wait();
      compare(oa, ob, "reduce_scatter " + what, false);
      // In place (the output is this rank's block of the input), on both paths: the same bits.
      Tensor ia = ops::clone(in), ib = ops::clone(in);
      Tensor own_a = ops::narrow(ia, 0, r * block, block);
      Tensor own_b = ops::narrow(ib, 0, r * block, block);
      world.reduce_scatter(own_a, ia, op, kOpts)->wait();
      plain->reduce_scatter(own_b, ib, op, kOpts)->wait();
      compare(own_a, oa, "in-place reduce_scatter " + what, false);
      compare(own_b, ob, "in-place reduce_scatter over MPI " + what, false);
    }
  }
  // Memory every rank maps: what one rank writes, after a barrier, all read; a group that leaves
  // its sums to MPI offers none.
  {
    Tensor shared = world.node_shared_tensor(3 * piece + 5, DType::kF32, kOpts);
    expect(shared.defined() && shared.numel() == 3 * piece + 5 && shared.device().is_cpu(),
           "node_shared_tensor on one node");
    if (shared.defined()) {
      const std::vector<float> zeros = shared.to_vector();
      expect(std::all_of(zeros.begin(), zeros.end(), [](float v) { return v == 0; }),
             "node_shared_tensor starts zeroed");
      world.barrier(kOpts)->wait();
      if (r == n - 1) ops::fill_(shared, 7.0);
      world.barrier(kOpts)->wait();
      const std::vector<float> v = shared.to_vector();
      expect(v.front() == 7 && v.back() == 7, "node_shared_tensor: the last rank's writes seen");
      world.barrier(kOpts)->wait();  // before the memory goes
    }
    expect(!plain->node_shared_tensor(16, DType::kF32, kOpts).defined(),
           "no node shared memory where the sums go through MPI");
  }
  // A reduce-scatter whose inputs lie at the same place of every rank's slice reads the others'
  // blocks where they lie: MPI's result, out of place and in place.
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
    const int64_t block = piece + 333;
    Tensor slice = world.node_shared_slices(n * block + 8, DType::kF32, kOpts);
    expect(slice.defined() && slice.numel() == n * block + 8, "node_shared_slices on one node");
    if (!slice.defined()) break;
    Tensor in = ops::narrow(slice, 0, 8, n * block);
    Tensor values = ops::randn({n * block}, gen);
    ops::copy_(in, values);
    Tensor want = ops::zeros({block}, DType::kF32);
    plain->reduce_scatter(want, values, op, kOpts)->wait();
    Tensor out = ops::zeros({block}, DType::kF32);
    world.reduce_scatter(out, in, op, kOpts)->wait();
    compare(out, want, std::string("mapped reduce_scatter ") + reduce_op_name(op), false);
    world.barrier(kOpts)->wait();  // every rank has read the others' inputs
    Tensor own = ops::narrow(in, 0, r * block, block);
    world.reduce_scatter(own, in, op, kOpts)->wait();
    compare(own, want, std::string("mapped in-place reduce_scatter ") + reduce_op_name(op), false);
    world.barrier(kOpts)->wait();  // before the memory goes
  }
  // At the size threshold (shared memory) and just under it (MPI): exact small-integer sums.
  for (size_t bytes : {dist::detail::NodeShm::kMinBytes, dist::detail::NodeShm::kMinBytes - 4}) {
    Tensor t = ops::full({static_cast<int64_t>(bytes / 4)}, r + 1);
    world.allreduce(t, ReduceOp::kSum, kOpts)->wait();
    const std::vector<float> v = t.to_vector();
    const float want = static_cast<float>(n * (n + 1) / 2);
    expect(v.front() == want && v.back() == want,
           "allreduce of " + std::to_string(bytes) + " bytes");
  }
  // Large allgathers (MPI's, next to the shared-memory reductions): i64 values that name their
  // rank and index; in place and not.
  const int64_t len = piece + 4321;
  std::vector<int64_t> mine(static_cast<size_t>(len));
  for (int64_t i = 0; i < len; ++i) mine[static_cast<size_t>(i)] = 1000000 * r + i;
  std::vector<int64_t> want;
  for (int q = 0; q < n; ++q) {
    for (int64_t i = 0; i < len; ++i) want.push_back(1000000 * q + i);
  }
  Tensor gin = ops::from_ints(mine, {len});
  Tensor gout = ops::zeros({n * len}, DType::kI64);
  world.allgather(gout, gin, kOpts)->wait();
  expect_values(gout.to_int_vector(), want, "large allgather i64");
  Tensor gin_place = ops::zeros({n * len}, DType::kI64);
  Tensor own = ops::narrow(gin_place, 0, r * len, len);
  ops::copy_(own, gin);
  world.allgather(gin_place, own, kOpts)->wait();
  expect_values(gin_place.to_int_vector(), want, "large allgather i64 in place");
}

void test_many_async(ProcessGroup& pg) {
  const int n = pg.size();
  std::vector<Tensor> ts;
  std::vector<std::shared_ptr<Work>> works;
  Generator gen(1);
  Tensor x = ops::randn({64, 64}, gen);
  for (int k = 0; k < 32; ++k) {
    ts.push_back(ops::full({1 << 14}, k + 1));
    works.push_back(pg.allreduce(ts.back(), ReduceOp::kSum, kOpts));
    x = ops::matmul(x, x);  // compute while the collectives run
    x = ops::mul_scalar(x, 0.01);
  }
  bool ordered = true;
  for (size_t k = 1; k < works.size(); ++k) {
    ordered = ordered && works[k]->info().seq == works[k - 1]->info().seq + 1;
  }
  expect(ordered, "sequence numbers follow issue order");
  bool ok = true;
  for (int k = 0; k < 32; ++k) {
    works[k]->wait();
    std::vector<float> v = ts[k].to_vector();
    ok = ok && v.front() == static_cast<float>((k + 1) * n) && v.back() == v.front();
  }
  expect(ok, "32 async allreduces waited in order");
}

void test_errors(ProcessGroup& pg) {
  const int n = pg.size();
  Tensor nc = ops::transpose(ops::zeros({2, 3}), 0, 1);
  expect_error([&] { pg.allreduce(nc, ReduceOp::kSum, kOpts); },
               {"allreduce", "f32[3, 2]", "not contiguous"}, "non-contiguous allreduce");
  Tensor in = ops::zeros({3});
  Tensor bad_out = ops::zeros({3 * n + 1});
  expect_error([&] { pg.allgather(bad_out, in, kOpts); },
               {"allgather", shape_str({3 * n + 1}), "f32[3]"}, "allgather shape mismatch");
  Tensor rs_out = ops::zeros({2});
  expect_error([&] { pg.reduce_scatter(rs_out, in, ReduceOp::kSum, kOpts); },
               {"reduce_scatter", "f32[3]", "f32[2]"}, "reduce_scatter shape mismatch");
  Tensor rs_in = ops::zeros({2 * n});
  Tensor skewed = ops::narrow(rs_in, 0, 1, 2);  // overlaps the input, not as this rank's block
  expect_error([&] { pg.reduce_scatter(skewed, rs_in, ReduceOp::kSum, kOpts); },
               {"reduce_scatter", "overlaps the input"}, "reduce_scatter output overlapping");
  Tensor bf = ops::zeros({4}, DType::kBF16);
  expect_error([&] { pg.allreduce(bf, ReduceOp::kAvg, kOpts); }, {"bf16", "sum only"},
               "bf16 average");
  Tensor f16 = ops::zeros({4}, DType::kF16);
  expect_error([&] { pg.allreduce(f16, ReduceOp::kSum, kOpts); }, {"allreduce", "f16"},
               "f16 allreduce");
  expect_error([&] { pg.broadcast(in, n, kOpts); }, {"broadcast", "root"}, "root out of range");
  expect_error([&] { pg.send(in, -1, 0, kOpts); }, {"send", "destination"}, "bad destination");
}

// distributed.debug: a checked group lets matching collectives through, and when the ranks call
// different ones every rank fails at once naming both call sites; the group stays usable.
void test_debug_checks(const std::shared_ptr<ProcessGroup>& world) {
  const std::shared_ptr<ProcessGroup> checked = check_collectives(world, world);
  const int n = checked->size();
  Tensor t = ops::ones({3});
  checked->allreduce(t, ReduceOp::kSum, kOpts)->wait();
  expect_values(t.to_vector(), std::vector<float>(3, static_cast<float>(n)), "checked allreduce");
  expect_error(
      [&] {
        if (checked->rank() == 0) {
          checked->allreduce(t, ReduceOp::kMax, kOpts)->wait();
        } else {
          checked->broadcast(t, 0, kOpts)->wait();
        }
      },
      {"distributed.debug: the ranks of group world disagree on collective #2: ",
       "rank 0 calls allreduce of 3 f32 (max) at tests/distributed/mpi_comm_test.cpp:",
       "broadcast of 3 f32 from rank 0 at tests/distributed/mpi_comm_test.cpp:"},
      "mismatched collectives under distributed.debug");
  checked->barrier(kOpts)->wait();
}

int run_suite() {
  auto world = create_mpi_world();
  g_rank = world->rank();
  const std::vector<std::pair<const char*, void (*)(ProcessGroup&)>> tests = {
      {"allreduce", test_allreduce},
      {"broadcast", test_broadcast},
      {"allgather_reduce_scatter", test_allgather_reduce_scatter},
      {"send_recv_ring", test_send_recv_ring},
      {"barrier_and_wait_timeout", test_barrier_and_wait_timeout},
      {"split", test_split},
      {"many_async", test_many_async},
      {"shared_memory", test_shared_memory},
      {"errors", test_errors}};
  for (const auto& [name, fn] : tests) {
    try {
      fn(*world);
    } catch (const std::exception& e) {
      expect(false, std::string(name) + " threw: " + e.what());
    }
  }
  try {
    test_debug_checks(world);
  } catch (const std::exception& e) {
    expect(false, std::string("debug_checks threw: ") + e.what());
  }
  world->barrier(kOpts)->wait();
  std::printf("rank %d of %d: %d passed, %d failed\n", g_rank, world->size(), g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}

// Rank 1 skips allreduce #2 (`elements` f32), so rank 0's times out after 1 s. `handled`: rank 0
// catches the error and calls finalize_mpi(), which aborts at once. Otherwise rank 0 never waits
// and the watchdog aborts after the 2 s grace period.
int run_timeout(bool handled, int64_t elements) {
  auto world = create_mpi_world();
  g_rank = world->rank();
  world->barrier(kOpts)->wait();
  if (world->rank() == 0) {
    Tensor t = ops::ones({elements});
    auto w = world->allreduce(t, ReduceOp::kSum, CollectiveOptions{milliseconds(1000)});
    if (handled) {
      try {
        w->wait();
        std::printf("rank 0: allreduce completed, which it must not\n");
      } catch (const Error& e) {
        std::printf("rank 0 caught: %s\n", e.message().c_str());
      }
      std::fflush(stdout);
    } else {
      std::this_thread::sleep_for(std::chrono::seconds(60));
    }
  }
  world.reset();
  finalize_mpi();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "suite";
  int rc = 0;
  try {
    if (mode == "suite") {
      init_mpi();
      rc = run_suite();
    } else if (mode == "timeout-handled" || mode == "timeout-unhandled" ||
               mode == "timeout-handled-shm") {
      // -shm: a 4 MiB allreduce, which goes through node shared memory.
      bool handled = mode != "timeout-unhandled";
      init_mpi(MpiInitOptions{handled ? milliseconds(30000) : milliseconds(2000)});
      return run_timeout(handled, mode == "timeout-handled-shm" ? int64_t{1} << 20 : 4);
    } else {
      std::fprintf(stderr,
                   "usage: mpi_comm_test "
                   "[suite|timeout-handled|timeout-unhandled|timeout-handled-shm]\n");
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: error: %s\n", g_rank, e.what());
    rc = 1;
  }
  finalize_mpi();
  return rc;
}
