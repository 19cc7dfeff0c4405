#include "io/io_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <utility>
#include <vector>

#include "common/error.h"

namespace hfrun::io::detail {

namespace {

// Closes a file descriptor on every exit path.
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

void write_all(int fd, const void* buf, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    HF_CHECK(w > 0, "cannot write ", path, ": ", std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void write_file_atomically(const std::string& path, const std::function<void(int fd)>& body) {
  // Unique per process and call, so concurrent writers of different files never collide.
  static std::atomic<uint64_t> counter{0};
  namespace fs = std::filesystem;
  fs::path final_path(path);
  fs::path dir = final_path.has_parent_path() ? final_path.parent_path() : fs::path(".");
  fs::path tmp = dir / ("." + final_path.filename().string() + ".tmp." +
                        std::to_string(::getpid()) + "." + std::to_string(counter++));
  FdGuard fd{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  HF_CHECK_INPUT(fd.fd >= 0, "cannot create ", tmp.string(), " (to write ", path,
                 "): ", std::strerror(errno));
  try {
    body(fd.fd);
    HF_CHECK(::fsync(fd.fd) == 0, "fsync ", tmp.string(), ": ", std::strerror(errno));
    HF_CHECK(::close(std::exchange(fd.fd, -1)) == 0, "close ", tmp.string(), ": ",
             std::strerror(errno));
    HF_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "rename ", tmp.string(), " to ", path, ": ",
             std::strerror(errno));
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  // Make the rename itself durable.
  FdGuard dir_fd{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (dir_fd.fd >= 0) ::fsync(dir_fd.fd);
}

nlohmann::ordered_json parse_json_checked(std::string_view text,
                                          std::optional<DuplicateKey>& duplicate) {
  using json = nlohmann::ordered_json;
  // One key set per open object; the last key seen at each depth names the enclosing object.
  std::vector<std::set<std::string>> open_objects;
  std::vector<std::string> last_key;
  duplicate.reset();
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        if (last_key.size() <= static_cast<size_t>(depth)) last_key.resize(depth + 1);
        last_key[depth] = key;
        if (!open_objects.empty() && !open_objects.back().insert(key).second && !duplicate) {
          duplicate = DuplicateKey{key, depth >= 2 ? last_key[depth - 1] : "", depth};
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  return json::parse(text.begin(), text.end(), cb);
}

}  // namespace hfrun::io::detail
