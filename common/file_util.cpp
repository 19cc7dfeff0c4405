#include "common/file_util.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "common/error.h"
#include "common/fault.h"

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

void write_new_file(const std::string& path, const void* data, size_t n) {
  UniqueFd fd{::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  HF_CHECK(fd.fd >= 0, "cannot create ", path, ": ", std::strerror(errno));
  write_all(fd.fd, data, n, path);
  HF_CHECK(::fsync(fd.fd) == 0, "cannot write ", path, ": ", std::strerror(errno));
  HF_CHECK(::close(std::exchange(fd.fd, -1)) == 0, "cannot write ", path, ": ",
           std::strerror(errno));
}

void copy_into_new_file(const std::string& from, const std::string& to) {
  UniqueFd in{::open(from.c_str(), O_RDONLY | O_CLOEXEC)};
  HF_CHECK_INPUT(in.fd >= 0, "cannot read ", from, ": ", std::strerror(errno));
  std::string data;
  char buf[1 << 16];
  for (;;) {
    const ssize_t r = ::read(in.fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    HF_CHECK_INPUT(r >= 0, "cannot read ", from, ": ", std::strerror(errno));
    if (r == 0) break;
    data.append(buf, static_cast<size_t>(r));
  }
  write_new_file(to, data.data(), data.size());
}

void fsync_path(const std::string& path) {
  UniqueFd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd >= 0) ::fsync(fd.fd);
}

DirectoryLock::DirectoryLock(const std::string& dir, const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string path = (fs::path(dir) / ".hfrun.lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  HF_CHECK_INPUT(fd_ >= 0, what, " ", dir, ": cannot create ", path, ": ", std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[512] = {0};
    const ssize_t n = ::pread(fd_, buf, sizeof(buf) - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(std::exchange(fd_, -1));
    HF_CHECK_INPUT(err != EWOULDBLOCK, what, " ", dir, " is in use by another run (",
                   holder.empty() ? std::string("holder unknown") : holder,
                   "); wait for it to end, or use another ", what);
    HF_CHECK_INPUT(false, what, " ", dir, ": cannot lock ", path, ": ", std::strerror(err));
  }
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  const std::string me = std::string("host ") + host + ", pid " + std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0) {
    const ssize_t w = ::pwrite(fd_, me.data(), me.size(), 0);
    (void)w;  // the record is informative; the lock is what counts
  }
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
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
    fault::point("file.written");
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
  fault::point("file.renamed");
  fsync_path(dir.string());  // make the rename itself durable
}

}  // namespace hfrun
