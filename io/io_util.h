// Internal helpers of the io module (not part of its API): atomic file writes in the style of
// data/shard.cpp, and JSON parsing that rejects duplicate object keys (nlohmann's parser keeps
// the last duplicate silently).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace hfrun::io::detail {

// Writes all of buf to fd, retrying on short writes and EINTR; errors name `path`.
void write_all(int fd, const void* buf, size_t n, const std::string& path);

// Creates a temporary file next to `path`, lets `body` write it through the descriptor, then
// fsyncs, closes and renames it over `path` (and fsyncs the directory). On any failure the
// temporary file is removed and nothing appears under `path`.
void write_file_atomically(const std::string& path, const std::function<void(int fd)>& body);

struct DuplicateKey {
  std::string key;
  std::string parent;  // the key of the enclosing object ("" at the top level)
  int depth = 0;       // 1 = a key of the top-level object
};

// Parses `text` keeping object key order. Throws nlohmann::json::exception on malformed JSON;
// sets `duplicate` to the first key seen twice within one object, if any.
nlohmann::ordered_json parse_json_checked(std::string_view text,
                                          std::optional<DuplicateKey>& duplicate);

}  // namespace hfrun::io::detail
