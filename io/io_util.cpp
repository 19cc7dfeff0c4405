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
