#include "distributed/comm/flight_recorder.h"

#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>
#include <utility>

#include "common/phase.h"

namespace hfrun::dist {
namespace {

using Clock = std::chrono::steady_clock;

struct Entry {
  std::string issued_op;
  uint64_t issued = 0;
  size_t bytes = 0;
  Clock::time_point issued_at{};
  const char* issued_phase = "";
  std::string completed_op;
  uint64_t completed = 0;
  Clock::time_point completed_at{};
};

// Keyed by (group, rank); looked up by a string_view so that recording a collective allocates
// nothing once the group has an entry.
using Key = std::pair<std::string, int>;
using KeyView = std::pair<std::string_view, int>;
struct KeyLess {
  using is_transparent = void;
  template <class A, class B>
  bool operator()(const A& a, const B& b) const {
    const int c = std::string_view(a.first).compare(std::string_view(b.first));
    return c < 0 || (c == 0 && a.second < b.second);
  }
};

struct Recorder {
  std::mutex mu;
  std::map<Key, Entry, KeyLess> entries;
};

// Never destroyed: ops may complete on worker threads during exit.
Recorder& recorder() {
  static Recorder* r = new Recorder;
  return *r;
}

bool is_p2p(const std::string& op) {
  return op == "send" || op == "recv";
}

// The entry of the op's (group, rank), created on first use. Caller holds r.mu.
Entry& entry_for(Recorder& r, const WorkInfo& info) {
  const KeyView key{info.group, info.rank};
  auto it = r.entries.find(key);
  if (it == r.entries.end()) it = r.entries.emplace(Key{info.group, info.rank}, Entry{}).first;
  return it->second;
}

}  // namespace

void flight_issued(const WorkInfo& info) {
  if (is_p2p(info.op)) return;  // numbered apart; the collectives tell who waits for whom
  Recorder& r = recorder();
  std::lock_guard<std::mutex> lock(r.mu);
  Entry& e = entry_for(r, info);
  if (info.seq <= e.issued) return;
  e.issued_op = info.op;
  e.issued = info.seq;
  e.bytes = info.bytes;
  e.issued_at = Clock::now();
  e.issued_phase = current_phase();
}

void flight_completed(const WorkInfo& info) {
  if (is_p2p(info.op)) return;
  Recorder& r = recorder();
  std::lock_guard<std::mutex> lock(r.mu);
  Entry& e = entry_for(r, info);
  if (info.seq <= e.completed) return;
  e.completed_op = info.op;
  e.completed = info.seq;
  e.completed_at = Clock::now();
}

std::string flight_record_json() {
  Recorder& r = recorder();
  const Clock::time_point now = Clock::now();
  auto ago = [&](Clock::time_point t) {
    return t == Clock::time_point{} ? -1.0 : std::chrono::duration<double>(now - t).count();
  };
  nlohmann::json groups = nlohmann::json::array();
  {
    std::lock_guard<std::mutex> lock(r.mu);
    for (const auto& [key, e] : r.entries) {
      groups.push_back({{"group", key.first},
                        {"rank", key.second},
                        {"issued_op", e.issued_op},
                        {"issued", e.issued},
                        {"bytes", e.bytes},
                        {"issued_s_ago", ago(e.issued_at)},
                        {"issued_phase", e.issued_phase},
                        {"completed_op", e.completed_op},
                        {"completed", e.completed},
                        {"completed_s_ago", ago(e.completed_at)}});
    }
  }
  return nlohmann::json{{"phase", current_phase()}, {"groups", groups}}.dump();
}

}  // namespace hfrun::dist
