// Records for fine-tuning tasks (CONTRACT.md "Model families, tasks and adapters"): each line of
// a .jsonl file (a JSON object), or each row of a .csv / .tsv file with a header row, is one
// record of named fields.
//   .jsonl  blank lines are skipped; string values are taken as they are, numbers and booleans
//           as their JSON text, null as a missing field; arrays and objects are refused when read
//   .csv    comma-separated, .tsv tab-separated, RFC 4180 quoting: a field that starts with "
//           runs to the closing quote and may hold the separator, newlines and "" (one quote);
//           LF or CRLF line ends; a UTF-8 BOM is skipped; blank lines are skipped; every row has
//           the header's number of fields
// Every error is kInvalidInput and names the file and the line the record starts on.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace hfrun::data {

class Records {
 public:
  // The records of the files, in order (directories are not expanded here).
  static Records read(const std::vector<std::string>& files);

  size_t size() const { return rows_.size(); }
  // Field `name` of record i; nullopt when the record has no such field (or a JSON null).
  std::optional<std::string_view> get(size_t i, std::string_view name) const;
  // The same, but a missing field is an error naming the record's file:line and the field.
  std::string_view require(size_t i, std::string_view name) const;
  // "file:line" of record i, for messages.
  std::string origin(size_t i) const;
  // Every field name seen, in first-seen order.
  const std::vector<std::string>& fields() const { return names_; }

 private:
  struct Row {
    uint32_t file = 0;
    int64_t line = 0;
    std::vector<std::pair<uint32_t, std::string>> values;  // (field index, value)
    std::vector<uint32_t> refused;  // fields present with a value that is not a scalar
  };
  uint32_t field_index(const std::string& name);
  void read_jsonl(const std::string& path, std::string_view text);
  void read_delimited(const std::string& path, std::string_view text, char separator);

  std::vector<std::string> files_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, uint32_t> index_;
  std::vector<Row> rows_;
};

// Record i's class label in `field` (CONTRACT.md, sequence_classification): a value that reads as
// an integer is a class id, any other string goes through label2id; the id must be in
// [0, num_labels). Errors name the record's file:line, the value and the known labels.
int64_t class_label(const Records& records, size_t i, std::string_view field,
                    const std::vector<std::pair<std::string, int64_t>>& label2id,
                    int64_t num_labels);

// Record i's regression target in `field` (num_labels == 1): a finite number.
double regression_target(const Records& records, size_t i, std::string_view field);

}  // namespace hfrun::data
