#include "common/error.h"

#include <cstdlib>
#include <cstring>

namespace hfrun {
namespace {
const char* basename_of(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}
}  // namespace

bool debug_locations() {
  const char* v = std::getenv("HFRUN_DEBUG");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

Error::Error(std::string message, const char* file, int line, ErrorKind kind)
    : std::runtime_error(debug_locations()
                             ? detail::concat(message, " [", basename_of(file), ":", line, "]")
                             : message),
      message_(std::move(message)),
      file_(file),
      line_(line),
      kind_(kind) {}

}  // namespace hfrun
