#include "data/documents.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"

namespace hfrun::data {

namespace fs = std::filesystem;

namespace {

constexpr const char* kAccepted = ".txt, .jsonl or .bin (token shard)";

// "LINE (byte COL of the line, offset OFF in the file)" for byte `offset`, 1-based.
std::string line_and_column(std::string_view text, size_t offset) {
  size_t line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + offset, '\n'));
  size_t line_start = offset == 0 ? std::string_view::npos : text.rfind('\n', offset - 1);
  line_start = line_start == std::string_view::npos ? 0 : line_start + 1;
  return std::to_string(line) + " (byte " + std::to_string(offset - line_start + 1) +
         " of the line, offset " + std::to_string(offset) + " in the file)";
}

std::vector<Document> read_text(const std::string& path) {
  std::string text = read_text_file(path);
  size_t bad = first_invalid_utf8(text);
  HF_CHECK_INPUT(bad == std::string_view::npos, path, ":", line_and_column(text, bad),
                 ": invalid UTF-8 (text files must be UTF-8)");
  std::vector<Document> docs;
  docs.push_back(Document{std::move(text), path});
  return docs;
}

std::vector<Document> read_jsonl(const std::string& path, std::string_view field) {
  std::string content = read_text_file(path);
  std::vector<Document> docs;
  size_t line_no = 0;
  for (size_t begin = 0; begin < content.size();) {
    size_t end = content.find('\n', begin);
    if (end == std::string::npos) end = content.size();
    std::string_view line(content.data() + begin, end - begin);
    begin = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);  // CRLF files
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    size_t bad = first_invalid_utf8(line);
    HF_CHECK_INPUT(bad == std::string_view::npos, where, ": invalid UTF-8 at byte ", bad + 1,
                   " of the line");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      HF_CHECK_INPUT(false, where, ": malformed JSON: ", e.what());
    }
    HF_CHECK_INPUT(j.is_object(), where, ": expected a JSON object with a string field \"", field,
                   "\", got a JSON ", j.type_name());
    auto it = j.find(field);
    HF_CHECK_INPUT(it != j.end(), where, ": missing field \"", field,
                   "\" (set data.text_field to the field that holds the text)");
    HF_CHECK_INPUT(it->is_string(), where, ": field \"", field, "\" must be a string, got a JSON ",
                   it->type_name());
    docs.push_back(Document{it->get<std::string>(), where});
  }
  return docs;
}

}  // namespace

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  HF_CHECK_INPUT(in, "cannot open ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  HF_CHECK_INPUT(!in.bad(), "error reading ", path);
  return std::move(ss).str();
}

size_t first_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    unsigned char b = s[i];
    if (b < 0x80) {
      ++i;
      continue;
    }
    // Allowed ranges of the second byte per lead byte (Unicode Table 3-7): this rejects
    // overlong forms (C0, C1, E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and > U+10FFFF.
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n || s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

SourceKind source_kind(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  if (ext == ".txt") return SourceKind::kText;
  if (ext == ".jsonl") return SourceKind::kJsonl;
  if (ext == ".bin") return SourceKind::kShard;
  HF_CHECK_INPUT(false, path, ": unknown data file type \"", ext, "\" (expected ", kAccepted, ")");
  return SourceKind::kText;
}

std::vector<SourceFile> expand_sources(const std::vector<std::string>& paths) {
  std::vector<SourceFile> out;
  for (const auto& p : paths) {
    std::error_code ec;
    fs::file_status st = fs::status(p, ec);
    HF_CHECK_INPUT(fs::exists(st), "data source ", p, " does not exist");
    if (!fs::is_directory(st)) {
      out.push_back(SourceFile{p, source_kind(p)});
      continue;
    }
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(p)) {
      std::string ext = entry.path().extension().string();
      bool known = ext == ".txt" || ext == ".jsonl" || ext == ".bin";
      if (known && !entry.is_directory()) names.push_back(entry.path().filename().string());
    }
    HF_CHECK_INPUT(!names.empty(), "data directory ", p, " contains no ", kAccepted, " files");
    std::sort(names.begin(), names.end());  // byte order: independent of locale and listing
    for (const auto& name : names) {
      std::string full = (fs::path(p) / name).string();
      out.push_back(SourceFile{full, source_kind(full)});
    }
  }
  return out;
}

std::vector<Document> read_documents(const SourceFile& file, std::string_view text_field) {
  HF_CHECK(file.kind != SourceKind::kShard, "read_documents: ", file.path,
           " is a token shard; it has tokens, not documents");
  return file.kind == SourceKind::kText ? read_text(file.path) : read_jsonl(file.path, text_field);
}

}  // namespace hfrun::data
