// OutputRelay (job_internal.h): the ranks' tagged output relayed as "[rank R] text", records
// taken out of it, mpirun's own lines kept for the report.
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <regex>

#include "launcher/job_internal.h"

namespace hfrun::cli::detail {

void OutputRelay::feed(int stream, const char* data, size_t n) {
  std::string& buf = pending_[stream];
  buf.append(data, n);
  size_t nl;
  while ((nl = buf.find('\n')) != std::string::npos) {
    line(buf.substr(0, nl));
    buf.erase(0, nl + 1);
  }
}

void OutputRelay::flush() {
  for (auto& [stream, buf] : pending_) {
    if (!buf.empty()) line(buf);
    buf.clear();
  }
}

int OutputRelay::started() const {
  int n = 0;
  for (const auto& [r, rec] : ranks_) n += rec.started ? 1 : 0;
  return n;
}

void OutputRelay::line(const std::string& text) {
  static const std::regex tagged(R"(^\[\d+,(\d+)\]<(stdout|stderr)>:(.*)$)");
  // mpirun tags every write, so a line written in pieces carries tags inside it too.
  static const std::regex inner_tag(R"(\[\d+,\d+\]<(stdout|stderr)>:)");
  std::smatch m;
  if (std::regex_match(text, m, tagged)) {
    const std::string body = std::regex_replace(m[3].str(), inner_tag, "");
    if (body.rfind(kRecordTag, 0) == 0 && record(body.substr(std::strlen(kRecordTag)))) return;
    std::FILE* out = m[2] == "stdout" ? stdout : stderr;
    std::fprintf(out, "[rank %s] %s\n", m[1].str().c_str(), body.c_str());
    std::fflush(out);
  } else if (!text.empty() && text.find_first_not_of('-') != std::string::npos &&
             text.find("Forwarding signal") == std::string::npos) {  // the launcher's own doing
    mpirun_lines_.push_back(text);
  }
}

bool OutputRelay::timeout_failure() const {
  for (const auto& [rank, r] : ranks_) {
    if (r.error.find(" timed out after ") != std::string::npos) return true;
  }
  return false;
}

bool OutputRelay::record(const std::string& json) {
  const nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
  if (!j.is_object() || !j.contains("rank") || !j["rank"].is_number_integer()) return false;
  RankRecord& r = ranks_[j["rank"].get<int>()];
  const std::string kind = j.value("kind", "");
  if (kind == "started") {
    r.started = true;
    r.host = j.value("host", "?");
    r.pid = j.value("pid", 0LL);
  } else if (kind == "failed") {
    r.error = j.value("error", "");
    if (first_failure_ == std::chrono::steady_clock::time_point{}) {
      first_failure_ = std::chrono::steady_clock::now();
    }
  } else if (kind == "flight" && j.contains("flight")) {
    r.flight = j["flight"].dump();
  } else if (kind == "stopped") {
    r.stopped = true;
    r.step = j.value("step", 0LL);
    r.signal = j.value("signal", "");
    r.checkpoint = j.value("checkpoint", "");
  }
  return true;
}

}  // namespace hfrun::cli::detail
