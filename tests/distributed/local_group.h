// An in-process ProcessGroup for unit tests: N ranks are N threads of one process, and every
// collective is a rendezvous of all of them (each rank posts a copy of its input, waits for the
// others, computes its own result). Ops complete before they return, in issue order, so ranks
// that issue the same sequence (as strategies do) never deadlock. Reductions add in rank order,
// in f32 (integers too). Point-to-point and split() are not needed by the code under test and
// are refused.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/error.h"
#include "distributed/comm/process_group.h"
#include "tensor/ops.h"

namespace hfrun::testing {

class LocalWorld {
 public:
  // shares_memory: node_shared_tensor() gives every rank one tensor (threads share memory, as
  // MPI ranks on one node do through /dev/shm); false: undefined, as for ranks on several nodes.
  explicit LocalWorld(int n, bool shares_memory = true)
      : n_(n), shares_memory_(shares_memory), slots_(static_cast<size_t>(n)) {}
  int size() const { return n_; }
  bool shares_memory() const { return shares_memory_; }

  // Rank 0's make() on every rank, once all have arrived.
  Tensor share(int rank, const std::function<Tensor()>& make) {
    if (rank == 0) {
      std::lock_guard<std::mutex> lock(mu_);
      shared_ = make();
    }
    exchange(rank, ops::zeros({1}, DType::kF32));
    Tensor t;
    {
      std::lock_guard<std::mutex> lock(mu_);
      t = shared_;
    }
    exchange(rank, ops::zeros({1}, DType::kF32));  // before rank 0 may set the next one
    return t;
  }

  // Rank `rank` contributes a copy of `in`; returns every rank's contribution, in rank order,
  // once all have arrived.
  std::vector<Tensor> exchange(int rank, const Tensor& in) {
    Tensor copy = ops::clone(ops::contiguous(in));
    std::unique_lock<std::mutex> lock(mu_);
    HF_CHECK(!failed_, "LocalWorld: another rank failed");
    slots_[static_cast<size_t>(rank)] = copy;
    const uint64_t generation = generation_;
    if (++arrived_ == n_) {
      // The result of this generation moves out before the next one can overwrite the slots.
      result_ = std::make_shared<std::vector<Tensor>>(std::move(slots_));
      slots_.assign(static_cast<size_t>(n_), Tensor());
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation || failed_; });
      HF_CHECK(!failed_, "LocalWorld: another rank failed");
    }
    return *result_;
  }

  // A rank failed: the others' pending and later exchanges throw instead of waiting forever.
  void fail() {
    std::lock_guard<std::mutex> lock(mu_);
    failed_ = true;
    cv_.notify_all();
  }

 private:
  int n_;
  bool shares_memory_;
  Tensor shared_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Tensor> slots_;
  std::shared_ptr<std::vector<Tensor>> result_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool failed_ = false;
};

class LocalProcessGroup : public dist::ProcessGroup {
 public:
  LocalProcessGroup(LocalWorld& world, int rank)
      : world_(world), rank_(rank), name_("local" + std::to_string(world.size())) {}
  int rank() const override { return rank_; }
  int size() const override { return world_.size(); }
  const std::string& name() const override { return name_; }

  // Every op this rank issued, in order: its name and the elements it moved (the larger side).
  std::vector<std::pair<std::string, int64_t>> issued;

  std::shared_ptr<dist::Work> allreduce(Tensor& t, dist::ReduceOp op,
                                        const dist::CollectiveOptions&, dist::CallSite) override {
    ops::copy_(t, reduce(world_.exchange(rank_, t), op));
    return done("allreduce", t.numel());
  }
  std::shared_ptr<dist::Work> broadcast(Tensor& t, int root, const dist::CollectiveOptions&,
                                        dist::CallSite) override {
    const auto all = world_.exchange(rank_, t);
    ops::copy_(t, all[static_cast<size_t>(root)]);
    return done("broadcast", t.numel());
  }
  std::shared_ptr<dist::Work> allgather(Tensor& out, const Tensor& in,
                                        const dist::CollectiveOptions&, dist::CallSite) override {
    const auto all = world_.exchange(rank_, in);
    HF_CHECK(out.is_contiguous() && out.nbytes() == in.nbytes() * all.size(),
             "LocalProcessGroup::allgather: out ", out.str(), " does not hold ", all.size(), " x ",
             in.str());
    char* dst = static_cast<char*>(out.raw_data());
    for (const Tensor& part : all) {
      std::memcpy(dst, part.raw_data(), part.nbytes());
      dst += part.nbytes();
    }
    return done("allgather", out.numel());
  }
  std::shared_ptr<dist::Work> reduce_scatter(Tensor& out, const Tensor& in, dist::ReduceOp op,
                                             const dist::CollectiveOptions&,
                                             dist::CallSite) override {
    const Tensor sum = reduce(world_.exchange(rank_, in), op);
    const int64_t n = out.numel();
    ops::copy_(out, ops::narrow(ops::reshape(sum, {sum.numel()}), 0, rank_ * n, n));
    return done("reduce_scatter", in.numel());
  }
  std::shared_ptr<dist::Work> barrier(const dist::CollectiveOptions&, dist::CallSite) override {
    world_.exchange(rank_, ops::zeros({1}, DType::kF32));
    return done("barrier", 0);
  }
  Tensor node_shared_tensor(int64_t numel, DType dtype, const dist::CollectiveOptions&,
                            dist::CallSite) override {
    if (!world_.shares_memory()) return Tensor();
    done("node_shared_tensor", numel);
    return world_.share(rank_, [&] { return ops::zeros({numel}, dtype); });
  }
  Tensor node_shared_slices(int64_t numel, DType dtype, const dist::CollectiveOptions&,
                            dist::CallSite) override {
    if (!world_.shares_memory()) return Tensor();
    done("node_shared_slices", numel);
    const Tensor all = world_.share(rank_, [&] { return ops::zeros({size() * numel}, dtype); });
    return ops::narrow(all, 0, rank_ * numel, numel);
  }
  std::shared_ptr<dist::Work> send(const Tensor&, int, int, const dist::CollectiveOptions&,
                                   dist::CallSite) override {
    HF_CHECK(false, "LocalProcessGroup: send is not supported");
    return nullptr;
  }
  std::shared_ptr<dist::Work> recv(Tensor&, int, int, const dist::CollectiveOptions&,
                                   dist::CallSite) override {
    HF_CHECK(false, "LocalProcessGroup: recv is not supported");
    return nullptr;
  }
  std::shared_ptr<dist::ProcessGroup> split(int, int, const dist::CollectiveOptions&,
                                            dist::CallSite) override {
    HF_CHECK(false, "LocalProcessGroup: split is not supported");
    return nullptr;
  }

 private:
  Tensor reduce(const std::vector<Tensor>& all, dist::ReduceOp op) const {
    const bool bf16 = all[0].dtype() == DType::kBF16;
    const bool ints = all[0].dtype() == DType::kI32 || all[0].dtype() == DType::kI64;
    HF_CHECK(all[0].dtype() == DType::kF32 || (bf16 && op == dist::ReduceOp::kSum) ||
                 (ints && op != dist::ReduceOp::kAvg),
             "LocalProcessGroup: reductions take f32 (bf16: sum; integers, below 2^24: not avg)");
    std::vector<float> acc = all[0].to_vector();
    for (size_t r = 1; r < all.size(); ++r) {
      const std::vector<float> x = all[r].to_vector();
      for (size_t i = 0; i < acc.size(); ++i) {
        switch (op) {
          case dist::ReduceOp::kSum:
          case dist::ReduceOp::kAvg:
            acc[i] += x[i];
            if (bf16) acc[i] = bf16_to_f32(f32_to_bf16(acc[i]));  // as MPI/NCCL add bf16 pairs
            break;
          case dist::ReduceOp::kMax:
            acc[i] = std::max(acc[i], x[i]);
            break;
          case dist::ReduceOp::kMin:
            acc[i] = std::min(acc[i], x[i]);
            break;
        }
      }
    }
    if (op == dist::ReduceOp::kAvg) {
      for (float& v : acc) v /= static_cast<float>(all.size());
    }
    return ops::to_dtype(ops::from_vector(acc, all[0].sizes()), all[0].dtype());
  }
  std::shared_ptr<dist::Work> done(const char* op, int64_t numel) {
    issued.emplace_back(op, numel);
    auto work = std::make_shared<dist::Work>(dist::WorkInfo{rank_, op, ++seq_, 0, name_});
    work->mark_done();
    return work;
  }

  LocalWorld& world_;
  int rank_;
  std::string name_;
  uint64_t seq_ = 0;
};

// Runs body(rank) for every rank of `world` on a thread of its own and rethrows the first
// failure (after which the other ranks' collectives fail rather than hang).
inline void run_ranks(LocalWorld& world, const std::function<void(int)>& body) {
  const int n = world.size();
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
        world.fail();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace hfrun::testing
