// Reading tokenizer.json into the tokenizer's parts (internal to data/tokenizer): the loader's
// helpers here, its builders by concept in tokenizer_json.cpp (the file, added tokens, the
// post-processor), tokenizer_json_models.cpp (BPE, WordPiece, Unigram) and
// tokenizer_json_pipeline.cpp (normalizers, pre-tokenizers, decoders). Every check names the
// file and the JSON path of what is wrong; sizes are bounded before anything is allocated.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "data/tokenizer/string_map.h"
#include "data/tokenizer/tokenizer_impl.h"

namespace hfrun::data::detail {

using json = nlohmann::json;

inline constexpr size_t kMaxVocab = size_t{1} << 23;  // 8M tokens
// How far past the number of tokens a vocabulary's ids may reach (gaps: unused ids).
inline constexpr size_t kIdSlack = 65536;

class JsonLoader {
 public:
  explicit JsonLoader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    HF_CHECK_INPUT(false, file_, ": ", path, ": ", what);
    std::abort();
  }

  // Runs fn; an error raised by a component (an invalid regex, say) gets the file and the
  // section it came from.
  template <typename Fn>
  auto in_context(const std::string& path, Fn&& fn) const {
    try {
      return fn();
    } catch (const Error& e) {
      if (e.message().rfind(file_, 0) == 0) throw;
      fail(path, e.message());
    }
  }

  const json& field(const json& obj, const std::string& path, const char* key) const {
    if (!obj.is_object()) fail(path, "expected an object");
    auto it = obj.find(key);
    if (it == obj.end()) fail(path, std::string("missing key '") + key + "'");
    return *it;
  }
  std::string str(const json& obj, const std::string& path, const char* key) const {
    const json& v = field(obj, path, key);
    if (!v.is_string())
      fail(path + "." + key, "expected a string, got " + std::string(v.type_name()));
    return v.get<std::string>();
  }
  bool flag(const json& obj, const std::string& path, const char* key, bool dflt) const {
    if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return dflt;
    if (!obj[key].is_boolean()) fail(path + "." + key, "expected true or false");
    return obj[key].get<bool>();
  }
  std::optional<std::string> opt_str(const json& obj, const std::string& path,
                                     const char* key) const {
    if (!obj.contains(key) || obj[key].is_null()) return std::nullopt;
    if (!obj[key].is_string()) fail(path + "." + key, "expected a string or null");
    return obj[key].get<std::string>();
  }
  int32_t id(const json& v, const std::string& path) const {
    if (!v.is_number_integer())
      fail(path, "expected an integer id, got " + std::string(v.type_name()));
    const int64_t x = v.get<int64_t>();
    if (x < 0 || x > INT32_MAX) fail(path, "id " + std::to_string(x) + " is out of range");
    return static_cast<int32_t>(x);
  }
  std::string type_of(const json& obj, const std::string& path) const {
    return str(obj, path, "type");
  }

  // The whole file's tokenizer.
  std::unique_ptr<Tokenizer::Impl> load(const json& root) const;

 private:
  // tokenizer_json_pipeline.cpp: normalizer, pre_tokenizer and decoder (null: none).
  std::unique_ptr<Normalizer> normalizer(const json& j, const std::string& path) const;
  // Sets byte_level when a ByteLevel step is among them (the vocabulary must then hold every
  // byte's token).
  std::unique_ptr<PreTokenizer> pre_tokenizer(const json& j, const std::string& path,
                                              bool& byte_level) const;
  std::unique_ptr<Decoder> decoder(const json& j, const std::string& path) const;
  // A Split/Replace pattern: {"String": "..."} or {"Regex": "..."}.
  std::pair<std::string, bool> pattern(const json& obj, const std::string& path) const;
  // A Split/Punctuation "behavior" (dflt when absent and dflt is not null).
  SplitBehavior behavior(const json& j, const std::string& path, const char* dflt) const;
  // Metaspace's replacement: exactly one character.
  char32_t metaspace_replacement(const json& j, const std::string& path) const;
  // Metaspace's prepend_scheme (always | first | never); files from before it have
  // add_prefix_space (true: always).
  MetaspacePrepend metaspace_prepend(const json& j, const std::string& path) const;
  // The steps of a Sequence component: list `key` of j, each built by `one(item, path)`.
  template <typename T, typename One>
  std::vector<std::unique_ptr<T>> steps(const json& j, const std::string& path, const char* key,
                                        One&& one) const;
  // A non-negative count (Strip's start/stop), bounded: no allocation follows from it.
  size_t count(const json& j, const std::string& path, const char* key) const;

  // tokenizer_json_models.cpp: the model section, its ids below max_id.
  std::unique_ptr<Model> model(const json& j, int32_t max_id) const;
  // model.vocab as [[piece, score], ...] (id = index), unk_id, byte_fallback.
  std::unique_ptr<Model> unigram(const json& j) const;
  // model.vocab as {token: id}: ids unique and below max_id, not necessarily contiguous.
  StringMap<int32_t> vocab_map(const json& j, int32_t max_id) const;
  std::unique_ptr<Model> wordpiece(const json& j, int32_t max_id) const;
  std::unique_ptr<Model> bpe(const json& j, int32_t max_id) const;

  // tokenizer_json.cpp: the post-processor and the added tokens' ids.
  // One template (TemplateProcessing's single or pair): items {"Sequence": {"id": "A"|"B",
  // "type_id": n}} or {"SpecialToken": {"id": name, "type_id": n}} (or HF's string forms
  // "$A", "$B:1", "[CLS]", "[SEP]:1"), special names resolved through special_tokens.
  std::vector<TemplateItem> template_items(const json& list, const json& specials,
                                           const std::string& path, bool pair) const;
  // The post-processor: a template for single sequences and one for pairs. ByteLevel only
  // adjusts offsets; a Sequence may hold at most one processor that adds tokens.
  void post_processor(const json& j, const std::string& path, Tokenizer::Impl& t) const;
  // Ids of added tokens as HF assigns them when it loads a tokenizer.json (the "id" fields only
  // order them): a token already in the model vocab takes its vocab id, a repeated token keeps
  // its first id, a new one gets max(largest added id + 1, model vocab size).
  static void assign_added_ids(Tokenizer::Impl& t, int32_t model_vocab_size);

  std::string file_;
};

}  // namespace hfrun::data::detail
