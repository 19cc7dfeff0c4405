#include "models/config_reader.h"

#include "common/error.h"

namespace hfrun::nn {

nlohmann::json parse_config_object(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    HF_CHECK_INPUT(false, source, ": not valid JSON: ", e.what());
  }
  HF_CHECK_INPUT(j.is_object(), source, ": expected a JSON object");
  return j;
}

void ConfigReader::get(const char* key, int64_t& out) const {
  if (!has(key)) return;
  HF_CHECK_INPUT(j[key].is_number_integer(), source, ": ", key, " must be an integer, got ",
                 j[key].dump());
  out = j[key].get<int64_t>();
}

void ConfigReader::get_or_zero(const char* key, int64_t& out) const {
  if (j.contains(key) && j[key].is_null()) out = 0;
  get(key, out);
}

void ConfigReader::get(const char* key, double& out) const {
  if (!has(key)) return;
  HF_CHECK_INPUT(j[key].is_number(), source, ": ", key, " must be a number, got ", j[key].dump());
  out = j[key].get<double>();
}

void ConfigReader::get(const char* key, bool& out) const {
  if (!has(key)) return;
  HF_CHECK_INPUT(j[key].is_boolean(), source, ": ", key, " must be true or false, got ",
                 j[key].dump());
  out = j[key].get<bool>();
}

void ConfigReader::get(const char* key, std::string& out) const {
  if (!has(key)) return;
  HF_CHECK_INPUT(j[key].is_string(), source, ": ", key, " must be a string, got ", j[key].dump());
  out = j[key].get<std::string>();
}

}  // namespace hfrun::nn
