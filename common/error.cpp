#include "common/error.h"

#include <cstring>

namespace hfrun {
namespace {
const char* basename_of(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}
}  // namespace

Error::Error(std::string message, const char* file, int line, ErrorKind kind)
    : std::runtime_error(detail::concat(message, " [", basename_of(file), ":", line, "]")),
      message_(std::move(message)),
      file_(file),
      line_(line),
      kind_(kind) {}

}  // namespace hfrun
