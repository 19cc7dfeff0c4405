// Internal helpers of the io module (not part of its API): JSON parsing that rejects duplicate
// object keys (nlohmann's parser keeps the last duplicate silently). Atomic file writes are
// common/file_util.h's.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace hfrun::io::detail {

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
