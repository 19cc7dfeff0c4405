// The sequence-classification keys every transformers config carries (PretrainedConfig):
// num_labels, id2label, label2id and problem_type, with transformers' rules: id2label decides
// num_labels, a num_labels that disagrees with it replaces it with LABEL_0, LABEL_1, ...,
// and label2id defaults to id2label inverted.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

namespace hfrun::nn {

struct LabelConfig {
  std::vector<std::string> id2label = {"LABEL_0", "LABEL_1"};  // one name per label
  std::vector<std::pair<std::string, int64_t>> label2id = {{"LABEL_0", 0}, {"LABEL_1", 1}};
  // "" (decided by num_labels: 1 is regression), "regression" or "single_label_classification".
  std::string problem_type;

  int64_t num_labels() const { return static_cast<int64_t>(id2label.size()); }
  bool regression() const {
    return problem_type == "regression" || (problem_type.empty() && num_labels() == 1);
  }

  // Reads the keys of a config.json object (errors name `source` and the key).
  static LabelConfig from_json(const nlohmann::json& j, const std::string& source);
  // Writes id2label, label2id (and problem_type when set) into a config.json object.
  void to_json(nlohmann::json& j) const;
  // The keys from_json reads.
  static const std::vector<std::string>& keys();
};

}  // namespace hfrun::nn
