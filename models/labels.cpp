#include "models/labels.h"

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace hfrun::nn {

using nlohmann::json;

const std::vector<std::string>& LabelConfig::keys() {
  static const std::vector<std::string> k = {"num_labels", "id2label", "label2id", "problem_type"};
  return k;
}

namespace {

std::vector<std::string> default_names(int64_t n) {
  std::vector<std::string> names;
  for (int64_t i = 0; i < n; ++i) names.push_back("LABEL_" + std::to_string(i));
  return names;
}

std::vector<std::pair<std::string, int64_t>> inverted(const std::vector<std::string>& id2label) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (size_t i = 0; i < id2label.size(); ++i) {
    out.emplace_back(id2label[i], static_cast<int64_t>(i));
  }
  return out;
}

}  // namespace

LabelConfig LabelConfig::from_json(const json& j, const std::string& source) {
  LabelConfig c;
  if (j.contains("id2label") && !j["id2label"].is_null()) {
    const json& m = j["id2label"];
    HF_CHECK_INPUT(m.is_object() && !m.empty(), source,
                   ": id2label must be a non-empty object {\"0\": name, ...}, got ", m.dump());
    std::vector<std::string> names(m.size());
    std::vector<bool> seen(m.size(), false);
    for (auto it = m.begin(); it != m.end(); ++it) {
      size_t pos = 0;
      int64_t id = -1;
      try {
        id = std::stoll(it.key(), &pos);
      } catch (const std::exception&) {
        pos = 0;
      }
      HF_CHECK_INPUT(pos == it.key().size() && id >= 0 && id < static_cast<int64_t>(m.size()) &&
                         !seen[static_cast<size_t>(id)],
                     source, ": id2label key \"", it.key(), "\" must be a label id in [0, ",
                     m.size(), "), each once");
      HF_CHECK_INPUT(it.value().is_string(), source, ": id2label[\"", it.key(),
                     "\"] must be a string, got ", it.value().dump());
      seen[static_cast<size_t>(id)] = true;
      names[static_cast<size_t>(id)] = it.value().get<std::string>();
    }
    c.id2label = names;
  }
  if (j.contains("num_labels") && !j["num_labels"].is_null()) {
    HF_CHECK_INPUT(j["num_labels"].is_number_integer() && j["num_labels"].get<int64_t>() >= 1,
                   source, ": num_labels must be a positive integer, got ", j["num_labels"].dump());
    const int64_t n = j["num_labels"].get<int64_t>();
    if (n != c.num_labels()) c.id2label = default_names(n);  // transformers: num_labels wins
  }
  c.label2id = inverted(c.id2label);
  if (j.contains("label2id") && !j["label2id"].is_null() &&
      j["label2id"].size() == c.id2label.size()) {
    const json& m = j["label2id"];
    HF_CHECK_INPUT(m.is_object(), source, ": label2id must be an object {name: id}, got ",
                   m.dump());
    c.label2id.clear();
    for (auto it = m.begin(); it != m.end(); ++it) {
      HF_CHECK_INPUT(it.value().is_number_integer() && it.value().get<int64_t>() >= 0 &&
                         it.value().get<int64_t>() < c.num_labels(),
                     source, ": label2id[\"", it.key(), "\"] must be a label id in [0, ",
                     c.num_labels(), "), got ", it.value().dump());
      c.label2id.emplace_back(it.key(), it.value().get<int64_t>());
    }
  }
  if (j.contains("problem_type") && !j["problem_type"].is_null()) {
    HF_CHECK_INPUT(j["problem_type"].is_string(), source, ": problem_type must be a string");
    c.problem_type = j["problem_type"].get<std::string>();
    HF_CHECK_INPUT(
        c.problem_type == "regression" || c.problem_type == "single_label_classification", source,
        ": problem_type '", c.problem_type,
        "' is not supported (regression or single_label_classification; "
        "multi_label_classification is not)");
    HF_CHECK_INPUT(c.problem_type != "regression" || c.num_labels() == 1, source,
                   ": problem_type regression needs num_labels 1, got ", c.num_labels());
  }
  return c;
}

void LabelConfig::to_json(json& j) const {
  json id2 = json::object(), l2i = json::object();
  for (size_t i = 0; i < id2label.size(); ++i) id2[std::to_string(i)] = id2label[i];
  for (const auto& [name, id] : label2id) l2i[name] = id;
  j["id2label"] = id2;
  j["label2id"] = l2i;
  if (!problem_type.empty()) j["problem_type"] = problem_type;
}

}  // namespace hfrun::nn
