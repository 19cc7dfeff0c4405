// Reading a config.json object field by field, naming the file and the key in every error:
// what each family's config parser shares.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace hfrun::nn {

// Parses config.json text (an invalid-input error naming `source` unless it is a JSON object).
nlohmann::json parse_config_object(const std::string& text, const std::string& source);

struct ConfigReader {
  const nlohmann::json& j;
  const std::string& source;

  // The key is present and not null.
  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
  // Each get leaves `out` alone when the key is absent or null.
  void get(const char* key, int64_t& out) const;
  void get(const char* key, double& out) const;
  void get(const char* key, bool& out) const;
  void get(const char* key, std::string& out) const;
  // An integer where null means none: 0 when the key is null, left alone when it is absent.
  void get_or_zero(const char* key, int64_t& out) const;
};

}  // namespace hfrun::nn
