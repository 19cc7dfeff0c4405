#include "common/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "common/error.h"

namespace hfrun {
UniqueFd::~UniqueFd() {
  if (fd >= 0) ::close(fd);
}

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

void fsync_path(const std::string& path) {
  UniqueFd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd >= 0) ::fsync(fd.fd);
}

void write_file_atomically(const std::string& path, const std::function<void(int fd)>& body) {
  // Unique per process and call, so concurrent writers of different files never collide.
  static std::atomic<uint64_t> counter{0};
  namespace fs = std::filesystem;
  fs::path final_path(path);
  fs::path dir = final_path.has_parent_path() ? final_path.parent_path() : fs::path(".");
  fs::path tmp = dir / ("." + final_path.filename().string() + ".tmp." +
                        std::to_string(::getpid()) + "." + std::to_string(counter++));
  UniqueFd fd{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
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
  fsync_path(dir.string());  // make the rename itself durable
}

}  // namespace hfrun
