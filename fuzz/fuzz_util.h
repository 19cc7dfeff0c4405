// Shared by the fuzz targets (one per parser of untrusted input, each a libFuzzer
// LLVMFuzzerTestOneInput): the input as a file where the parser reads files, and the rule that
// bad input must end in hfrun::Error (a clear message, exit 2), never a crash, a hang, undefined
// behaviour or another exception (which escapes to libFuzzer and counts as a finding).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/error.h"

namespace hfrun::fuzz {

// A private directory for this process's files (removed at exit by the OS's tmp cleaning; the
// targets overwrite the same names on every input).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::filesystem::path d =
        std::filesystem::path(base ? base : "/tmp") / ("hfrun-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

// Writes `data` to scratch_dir()/name and returns the path.
inline std::string write_input(const std::string& name, std::string_view data) {
  const std::string path = (scratch_dir() / name).string();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (!data.empty() && std::fwrite(data.data(), 1, data.size(), f) != data.size()) std::abort();
  std::fclose(f);
  return path;
}

// Runs fn; an hfrun::Error (the documented outcome of bad input) is fine.
template <typename Fn>
void expect_clean(Fn&& fn) {
  try {
    fn();
  } catch (const Error&) {
  }
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace hfrun::fuzz
