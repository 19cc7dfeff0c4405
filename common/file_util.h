// Durable file writing: everything hfrun writes that must never look complete while it is not
// (token shards, safetensors, checkpoints) goes through write_file_atomically.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace hfrun {

// Owns a file descriptor: closes it on every exit path.
struct UniqueFd {
  int fd = -1;
  UniqueFd() = default;
  explicit UniqueFd(int f) : fd(f) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();
};

// Writes all n bytes to fd (retrying short writes and EINTR); throws naming `path`.
void write_all(int fd, const void* buf, size_t n, const std::string& path);

// Writes `data` to a new file `path` (inside a directory being built, which is renamed when
// complete) and fsyncs it; throws naming `path` with the OS's reason ("No space left on device").
void write_new_file(const std::string& path, const void* data, size_t n);
// Copies file `from` into a new file `to` the same way (an unreadable `from` is an invalid-input
// error naming it).
void copy_into_new_file(const std::string& from, const std::string& to);

// Creates a temporary file next to `path`, lets body(fd) write it, fsyncs, renames it over
// `path` and fsyncs the directory. If body throws, the temporary file is removed and `path` is
// untouched: readers see the old file or the complete new one, never a partial one.
void write_file_atomically(const std::string& path, const std::function<void(int fd)>& body);

// An exclusive lock on a directory for as long as the object lives: flock() on DIR/.hfrun.lock,
// which records the holder's host and pid. The kernel releases it when the holder exits, however
// it exits (SIGKILL included), so a lock left by a dead process is simply taken.
class DirectoryLock {
 public:
  // Creates `dir` if needed and takes the lock, or throws (kInvalidInput) "`what` DIR is in use
  // by another run (host H, pid P)".
  DirectoryLock(const std::string& dir, const std::string& what);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

// fsyncs a file, or a directory after renames inside it; errors are ignored (not every file
// system supports directory fsync).
void fsync_path(const std::string& path);

}  // namespace hfrun
