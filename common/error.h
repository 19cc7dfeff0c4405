// Errors: every failure in the library is an hfrun::Error carrying where it was raised and a
// message that names the thing that was wrong (op, shapes, file, key). Only main() exits.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace hfrun {

// What kind of failure it is; the CLI maps kInvalidInput to exit code 2, the rest to 1.
enum class ErrorKind { kRuntime, kInvalidInput };

// Whether error texts carry the source location that raised them: HFRUN_DEBUG set (and not
// "0"). Users read "what was wrong"; "[config.cpp:28]" is for bug reports.
bool debug_locations();

class Error : public std::runtime_error {
 public:
  // what() is the message, followed by " [file.cpp:LINE]" when debug_locations().
  Error(std::string message, const char* file, int line, ErrorKind kind = ErrorKind::kRuntime);

  const std::string& message() const { return message_; }  // without the file:line prefix
  const char* file() const { return file_; }
  int line() const { return line_; }
  ErrorKind kind() const { return kind_; }

 private:
  std::string message_;
  const char* file_;
  int line_;
  ErrorKind kind_;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace hfrun

// HF_CHECK(cond, "op: ", what, ...) throws hfrun::Error with file:line when cond is false.
#define HF_CHECK(cond, ...)                                                           \
  do {                                                                                \
    if (!(cond)) [[unlikely]] {                                                       \
      throw ::hfrun::Error(::hfrun::detail::concat(__VA_ARGS__), __FILE__, __LINE__); \
    }                                                                                 \
  } while (0)

// HF_CHECK_INPUT: like HF_CHECK for bad user input (bad config, bad file): exit code 2.
#define HF_CHECK_INPUT(cond, ...)                                                    \
  do {                                                                               \
    if (!(cond)) [[unlikely]] {                                                      \
      throw ::hfrun::Error(::hfrun::detail::concat(__VA_ARGS__), __FILE__, __LINE__, \
                           ::hfrun::ErrorKind::kInvalidInput);                       \
    }                                                                                \
  } while (0)

#define HF_THROW(...) throw ::hfrun::Error(::hfrun::detail::concat(__VA_ARGS__), __FILE__, __LINE__)
