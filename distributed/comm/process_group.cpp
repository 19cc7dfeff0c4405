#include "distributed/comm/process_group.h"

#include <sstream>

#include "common/error.h"
#include "distributed/comm/flight_recorder.h"

namespace hfrun::dist {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

Tensor ProcessGroup::node_shared_tensor(int64_t /*numel*/, DType /*dtype*/,
                                        const CollectiveOptions& /*opts*/, CallSite /*where*/) {
  return Tensor();
}

Tensor ProcessGroup::node_shared_slices(int64_t /*numel*/, DType /*dtype*/,
                                        const CollectiveOptions& /*opts*/, CallSite /*where*/) {
  return Tensor();
}

std::string WorkInfo::describe() const {
  return hfrun::detail::concat("rank ", rank, ": ", op, " #", seq, " (", bytes, " bytes, group ",
                               group, ")");
}

std::string format_seconds(std::chrono::milliseconds d) {
  std::ostringstream os;
  os << static_cast<double>(d.count()) / 1000.0 << "s";
  return os.str();
}

Work::Work(WorkInfo info) : info_(std::move(info)) {
  flight_issued(info_);
}

bool Work::is_completed() {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

void Work::wait(std::optional<std::chrono::milliseconds> timeout) {
  waiters_.fetch_add(1);
  struct Leave {
    std::atomic<int>& n;
    ~Leave() { n.fetch_sub(1); }
  } leave{waiters_};
  std::unique_lock<std::mutex> lock(mu_);
  if (timeout) {
    if (!cv_.wait_for(lock, *timeout, [&] { return done_; })) {
      HF_THROW(info_.describe(), " not completed within the wait timeout of ",
               format_seconds(*timeout));
    }
  } else {
    cv_.wait(lock, [&] { return done_; });
  }
  if (error_) std::rethrow_exception(error_);
}

void Work::mark_done() {
  flight_completed(info_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  cv_.notify_all();
}

void Work::mark_failed(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::move(error);
    done_ = true;
  }
  cv_.notify_all();
}

std::shared_ptr<Work> ProcessGroup::allgather_coalesced(const std::vector<Tensor>& outs,
                                                        const std::vector<Tensor>& ins,
                                                        const CollectiveOptions& opts,
                                                        CallSite where) {
  HF_CHECK(!outs.empty() && outs.size() == ins.size(), "allgather_coalesced: ", outs.size(),
           " outputs for ", ins.size(), " inputs (expected the same number, at least one)");
  std::vector<std::shared_ptr<Work>> works;
  for (size_t i = 0; i < outs.size(); ++i) {
    Tensor out = outs[i];
    works.push_back(allgather(out, ins[i], opts, where));
  }
  // Every op is waited for before a failure is rethrown, so none is left running unobserved.
  std::exception_ptr first;
  for (size_t i = 0; i + 1 < works.size(); ++i) {
    try {
      works[i]->wait();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) {
    try {
      works.back()->wait();
    } catch (...) {
    }
    std::rethrow_exception(first);
  }
  return works.back();
}

}  // namespace hfrun::dist
