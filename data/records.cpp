#include "data/records.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "data/documents.h"

namespace hfrun::data {

Records Records::read(const std::vector<std::string>& files) {
  Records r;
  for (const std::string& path : files) {
    const std::string ext = std::filesystem::path(path).extension().string();
    HF_CHECK_INPUT(ext == ".jsonl" || ext == ".csv" || ext == ".tsv", path,
                   ": records come from .jsonl, .csv or .tsv files");
    const std::string text = read_text_file(path);
    const size_t bad = first_invalid_utf8(text);
    if (bad != std::string::npos) {
      const int64_t line =
          1 + std::count(text.begin(), text.begin() + static_cast<long>(bad), '\n');
      HF_CHECK_INPUT(false, path, ":", line, ": not valid UTF-8 (offset ", bad, " in the file)");
    }
    r.files_.push_back(path);
    if (ext == ".jsonl") {
      r.read_jsonl(path, text);
    } else {
      r.read_delimited(path, text, ext == ".csv" ? ',' : '\t');
    }
  }
  return r;
}

uint32_t Records::field_index(const std::string& name) {
  auto it = index_.find(name);
  if (it != index_.end()) return it->second;
  const auto i = static_cast<uint32_t>(names_.size());
  names_.push_back(name);
  index_.emplace(name, i);
  return i;
}

void Records::read_jsonl(const std::string& path, std::string_view text) {
  const auto file = static_cast<uint32_t>(files_.size() - 1);
  int64_t line = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view l = text.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    if (l.find_first_not_of(" \t") == std::string_view::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(l);
    } catch (const nlohmann::json::exception& e) {
      HF_CHECK_INPUT(false, path, ":", line, ": malformed JSON: ", e.what());
    }
    HF_CHECK_INPUT(j.is_object(), path, ":", line, ": expected a JSON object, got ", j.type_name());
    Row row{file, line, {}, {}};
    for (auto it = j.begin(); it != j.end(); ++it) {
      const uint32_t f = field_index(it.key());
      const nlohmann::json& v = it.value();
      if (v.is_null()) continue;
      if (v.is_string()) {
        row.values.emplace_back(f, v.get<std::string>());
      } else if (v.is_number() || v.is_boolean()) {
        row.values.emplace_back(f, v.dump());
      } else {
        row.refused.push_back(f);
      }
    }
    rows_.push_back(std::move(row));
  }
}

void Records::read_delimited(const std::string& path, std::string_view text, char sep) {
  const auto file = static_cast<uint32_t>(files_.size() - 1);
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  std::vector<uint32_t> header;  // field index per column
  size_t pos = 0;
  int64_t line = 1;  // the physical line pos is on
  while (pos < text.size()) {
    const int64_t start_line = line;
    std::vector<std::string> fields(1);
    bool blank = true;
    // One record: fields up to an unquoted line end (or the end of the text).
    while (true) {
      if (pos >= text.size()) break;
      const char c = text[pos];
      if (c == '\n' || (c == '\r' && (pos + 1 == text.size() || text[pos + 1] == '\n'))) {
        pos += c == '\r' && pos + 1 < text.size() ? 2 : 1;
        ++line;
        break;
      }
      if (c == sep) {
        fields.emplace_back();
        blank = false;
        ++pos;
        continue;
      }
      if (c == '"' && fields.back().empty()) {
        // A quoted field: to the closing quote; "" is one quote.
        const int64_t quote_line = line;
        ++pos;
        bool closed = false;
        while (pos < text.size()) {
          const char q = text[pos];
          if (q == '"') {
            if (pos + 1 < text.size() && text[pos + 1] == '"') {
              fields.back() += '"';
              pos += 2;
              continue;
            }
            closed = true;
            ++pos;
            break;
          }
          if (q == '\n') ++line;
          fields.back() += q;
          ++pos;
        }
        HF_CHECK_INPUT(closed, path, ":", quote_line,
                       ": a quoted field is not closed before the end of the file");
        blank = false;
        const bool at_end =
            pos >= text.size() || text[pos] == sep || text[pos] == '\n' ||
            (text[pos] == '\r' && (pos + 1 == text.size() || text[pos + 1] == '\n'));
        HF_CHECK_INPUT(at_end, path, ":", line,
                       ": text after the closing quote of a field (write a quote inside a quoted "
                       "field as \"\")");
        continue;
      }
      fields.back() += c;
      blank = false;
      ++pos;
    }
    if (blank && fields.size() == 1 && fields[0].empty()) continue;  // a blank line
    if (header.empty()) {
      for (size_t k = 0; k < fields.size(); ++k) {
        const std::string& name = fields[k];
        HF_CHECK_INPUT(!name.empty(), path, ":", start_line, ": the header row has an empty name");
        HF_CHECK_INPUT(std::find(fields.begin(), fields.begin() + static_cast<long>(k), name) ==
                           fields.begin() + static_cast<long>(k),
                       path, ":", start_line, ": the header row names '", name, "' twice");
        header.push_back(field_index(name));
      }
      continue;
    }
    HF_CHECK_INPUT(fields.size() == header.size(), path, ":", start_line, ": ", fields.size(),
                   " fields, but the header row has ", header.size());
    Row row{file, start_line, {}, {}};
    for (size_t k = 0; k < fields.size(); ++k)
      row.values.emplace_back(header[k], std::move(fields[k]));
    rows_.push_back(std::move(row));
  }
  HF_CHECK_INPUT(!header.empty(), path, ": no header row (the first line names the fields)");
}

std::optional<std::string_view> Records::get(size_t i, std::string_view name) const {
  const Row& row = rows_.at(i);
  auto it = index_.find(std::string(name));
  if (it == index_.end()) return std::nullopt;
  for (const auto& [f, v] : row.values) {
    if (f == it->second) return std::string_view(v);
  }
  for (uint32_t f : row.refused) {
    HF_CHECK_INPUT(f != it->second, origin(i), ": field '", name,
                   "' must be a string, a number or a boolean");
  }
  return std::nullopt;
}

std::string_view Records::require(size_t i, std::string_view name) const {
  const auto v = get(i, name);
  HF_CHECK_INPUT(v.has_value(), origin(i), ": the record has no field '", name, "'");
  return *v;
}

std::string Records::origin(size_t i) const {
  const Row& row = rows_.at(i);
  return files_[row.file] + ":" + std::to_string(row.line);
}

int64_t class_label(const Records& records, size_t i, std::string_view field,
                    const std::vector<std::pair<std::string, int64_t>>& label2id,
                    int64_t num_labels) {
  const std::string_view v = records.require(i, field);
  int64_t id = -1;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), id);
  if (ec != std::errc() || end != v.data() + v.size() || v.empty()) {
    std::string known;
    id = -1;
    for (const auto& [name, k] : label2id) {
      if (name == v) id = k;
      known += (known.empty() ? "" : ", ") + name;
    }
    HF_CHECK_INPUT(id >= 0, records.origin(i), ": label '", v, "' in field '", field,
                   "' is neither a class id nor a name in label2id (",
                   known.empty() ? std::string("config.json has no label2id") : known, ")");
  }
  HF_CHECK_INPUT(id >= 0 && id < num_labels, records.origin(i), ": label ", id, " in field '",
                 field, "' is outside [0, ", num_labels, ") (num_labels ", num_labels, ")");
  return id;
}

double regression_target(const Records& records, size_t i, std::string_view field) {
  const std::string_view v = records.require(i, field);
  const std::string s(v);
  char* end = nullptr;
  const double x = std::strtod(s.c_str(), &end);
  HF_CHECK_INPUT(!s.empty() && end == s.c_str() + s.size() && std::isfinite(x), records.origin(i),
                 ": regression target '", v, "' in field '", field, "' is not a finite number");
  return x;
}

}  // namespace hfrun::data
