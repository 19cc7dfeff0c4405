// Training sources -> documents (CONTRACT.md "Semantics that must hold"):
//   .txt   one document: the whole file, tokenized as one text
//   .jsonl one document per non-empty line: the string field `text_field` of a JSON object
//   .bin   a token shard (data/shard.h): already tokens, no text
// A directory expands to its .txt/.jsonl/.bin files (not recursive), sorted by name, so the
// order of the stream never depends on the file system's listing order.
// All text must be valid UTF-8. Every error is kInvalidInput and names the file (and line).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hfrun::data {

enum class SourceKind { kText, kJsonl, kShard };

struct SourceFile {
  std::string path;
  SourceKind kind = SourceKind::kText;
};

struct Document {
  std::string text;
  std::string origin;  // "file" for a .txt, "file:line" for a .jsonl line (for messages)
};

// The kind of a file by its extension; throws naming the file and the accepted extensions.
SourceKind source_kind(const std::string& path);

// Expands files and directories, in the order given, into the files to read. A directory
// contributes its files with a known extension in sorted name order (others, such as a README,
// are skipped) and must contain at least one. A path that does not exist is an error.
std::vector<SourceFile> expand_sources(const std::vector<std::string>& paths);

// The documents of one .txt or .jsonl file (not a shard), in file order.
std::vector<Document> read_documents(const SourceFile& file, std::string_view text_field = "text");

// The bytes of a file; an error names it when it cannot be opened or read.
std::string read_text_file(const std::string& path);

// Offset of the first byte of `text` that does not start a valid UTF-8 sequence (truncated,
// overlong, surrogate or > U+10FFFF), or std::string_view::npos when it is all valid.
size_t first_invalid_utf8(std::string_view text);

}  // namespace hfrun::data
