#include "distributed/comm/checked_process_group.h"

#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::dist {
namespace {

constexpr size_t kSlot = 256;  // bytes per rank: "WHAT\0WHERE\0"

// "distributed/parallel/ddp.cpp:120": the call site relative to the source tree when inside it.
std::string site(const CallSite& where) {
  std::string_view self = __FILE__;  // .../distributed/comm/checked_process_group.cpp
  const std::string_view tail = "distributed/comm/checked_process_group.cpp";
  const std::string_view root =
      self.ends_with(tail) ? self.substr(0, self.size() - tail.size()) : std::string_view();
  std::string_view file = where.file;
  if (!root.empty() && file.starts_with(root)) file.remove_prefix(root.size());
  return std::string(file) + ":" + std::to_string(where.line);
}

std::string count_of(const Tensor& t) {
  return std::to_string(t.numel()) + " " + dtype_name(t.dtype());
}

class CheckedProcessGroup final : public ProcessGroup {
 public:
  CheckedProcessGroup(std::shared_ptr<ProcessGroup> inner, std::shared_ptr<ProcessGroup> check)
      : inner_(std::move(inner)), check_(std::move(check)) {
    HF_CHECK(check_->size() == inner_->size() && check_->rank() == inner_->rank(),
             "distributed.debug: the check group of ", inner_->name(), " has other ranks");
  }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }

  std::shared_ptr<Work> allreduce(Tensor& t, ReduceOp op, const CollectiveOptions& o,
                                  CallSite where) override {
    agree("allreduce of " + count_of(t) + " (" + reduce_op_name(op) + ")", where, o);
    return inner_->allreduce(t, op, o, where);
  }
  std::shared_ptr<Work> broadcast(Tensor& t, int root, const CollectiveOptions& o,
                                  CallSite where) override {
    agree("broadcast of " + count_of(t) + " from rank " + std::to_string(root), where, o);
    return inner_->broadcast(t, root, o, where);
  }
  std::shared_ptr<Work> allgather(Tensor& out, const Tensor& in, const CollectiveOptions& o,
                                  CallSite where) override {
    agree("allgather of " + count_of(in) + " per rank", where, o);
    return inner_->allgather(out, in, o, where);
  }
  std::shared_ptr<Work> allgather_coalesced(const std::vector<Tensor>& outs,
                                            const std::vector<Tensor>& ins,
                                            const CollectiveOptions& o, CallSite where) override {
    int64_t bytes = 0;
    for (const Tensor& t : ins) bytes += t.nbytes();
    agree("allgather_coalesced of " + std::to_string(ins.size()) + " tensors, " +
              std::to_string(bytes) + " bytes per rank",
          where, o);
    return inner_->allgather_coalesced(outs, ins, o, where);
  }
  std::shared_ptr<Work> reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op,
                                       const CollectiveOptions& o, CallSite where) override {
    agree("reduce_scatter of " + count_of(in) + " (" + reduce_op_name(op) + ")", where, o);
    return inner_->reduce_scatter(out, in, op, o, where);
  }
  std::shared_ptr<Work> barrier(const CollectiveOptions& o, CallSite where) override {
    agree("barrier", where, o);
    return inner_->barrier(o, where);
  }
  std::shared_ptr<Work> send(const Tensor& t, int dst, int tag, const CollectiveOptions& o,
                             CallSite where) override {
    return inner_->send(t, dst, tag, o, where);
  }
  std::shared_ptr<Work> recv(Tensor& t, int src, int tag, const CollectiveOptions& o,
                             CallSite where) override {
    return inner_->recv(t, src, tag, o, where);
  }
  std::shared_ptr<ProcessGroup> split(int color, int key, const CollectiveOptions& o,
                                      CallSite where) override {
    agree("split", where, o);
    std::shared_ptr<ProcessGroup> child = inner_->split(color, key, o, where);
    if (!child) return nullptr;
    // An MPI group checks itself; another kind checks over the same split of its check group.
    std::shared_ptr<ProcessGroup> child_check =
        check_ == inner_ ? child : check_->split(color, key, o, where);
    return check_collectives(child, child_check);
  }
  Tensor node_shared_tensor(int64_t numel, DType dtype, const CollectiveOptions& o,
                            CallSite where) override {
    agree("node_shared_tensor of " + std::to_string(numel) + " " + dtype_name(dtype), where, o);
    return inner_->node_shared_tensor(numel, dtype, o, where);
  }
  Tensor node_shared_slices(int64_t numel, DType dtype, const CollectiveOptions& o,
                            CallSite where) override {
    agree("node_shared_slices of " + std::to_string(numel) + " " + dtype_name(dtype), where, o);
    return inner_->node_shared_slices(numel, dtype, o, where);
  }

 private:
  // Every rank describes its call; all compare all, so every rank fails together on a mismatch.
  void agree(const std::string& what, const CallSite& where, const CollectiveOptions& o) {
    ++seq_;
    const std::string mine = what + '\0' + site(where);
    Tensor slot = ops::zeros({static_cast<int64_t>(kSlot)}, DType::kU8);
    std::memcpy(slot.raw_data(), mine.data(), std::min(mine.size(), kSlot - 1));
    Tensor all = ops::empty({static_cast<int64_t>(kSlot) * size()}, DType::kU8);
    check_->allgather(all, slot, o)->wait();
    const char* base = static_cast<const char*>(all.raw_data());
    std::map<std::string, std::vector<int>> calls;  // what -> ranks
    std::vector<std::string> sites(static_cast<size_t>(size()));
    for (int r = 0; r < size(); ++r) {
      const char* p = base + static_cast<size_t>(r) * kSlot;
      const std::string w(p, strnlen(p, kSlot));
      const size_t at = w.size() + 1;
      sites[static_cast<size_t>(r)] =
          at < kSlot ? std::string(p + at, strnlen(p + at, kSlot - at)) : std::string();
      calls[w].push_back(r);
    }
    if (calls.size() == 1) return;
    std::string detail;
    for (const auto& [w, ranks] : calls) {
      std::string who = ranks.size() == 1 ? "rank " : "ranks ";
      for (size_t i = 0; i < ranks.size(); ++i) who += (i ? ", " : "") + std::to_string(ranks[i]);
      detail += (detail.empty() ? "" : "; ") + who + (ranks.size() == 1 ? " calls " : " call ") +
                w + " at " + sites[static_cast<size_t>(ranks[0])];
    }
    HF_THROW("distributed.debug: the ranks of group ", name(), " disagree on collective #", seq_,
             ": ", detail);
  }

  std::shared_ptr<ProcessGroup> inner_, check_;
  uint64_t seq_ = 0;
};

}  // namespace

std::shared_ptr<ProcessGroup> check_collectives(std::shared_ptr<ProcessGroup> inner,
                                                std::shared_ptr<ProcessGroup> check) {
  return std::make_shared<CheckedProcessGroup>(std::move(inner), std::move(check));
}

}  // namespace hfrun::dist
