// Loading tokenizer.json into the pipeline. Every check names the file and the JSON path of
// what is wrong. Sizes are bounded before anything is allocated from them.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/error.h"
#include "data/tokenizer/bpe.h"
#include "data/tokenizer/byte_level.h"
#include "data/tokenizer/precompiled.h"
#include "data/tokenizer/tokenizer_impl.h"
#include "data/tokenizer/unigram.h"
#include "data/tokenizer/utf8.h"
#include "data/tokenizer/wordpiece.h"

namespace hfrun::data {

namespace detail {

// Rejects JSON nested deeper than kMaxNesting before parsing (the parser recurses).
void check_nesting(std::string_view text, const std::string& file) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '[' || c == '{') {
      HF_CHECK_INPUT(++depth <= kMaxNesting, file, ": JSON nested deeper than ", kMaxNesting,
                     " levels (byte ", i, ")");
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;
    }
  }
}

}  // namespace detail

namespace {

using detail::check_nesting;
using detail::kMaxFileBytes;

using nlohmann::json;

constexpr size_t kMaxVocab = size_t{1} << 23;  // 8M tokens
// How far past the number of tokens a vocabulary's ids may reach (gaps: unused ids).
constexpr size_t kIdSlack = 65536;

class Loader {
 public:
  explicit Loader(std::string file) : file_(std::move(file)) {}

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

  // A Split/Replace pattern: {"String": "..."} or {"Regex": "..."}.
  std::pair<std::string, bool> pattern(const json& obj, const std::string& path) const {
    const json& p = field(obj, path, "pattern");
    if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) return {p["Regex"], true};
    if (p.is_object() && p.contains("String") && p["String"].is_string())
      return {p["String"], false};
    fail(path + ".pattern", "expected {\"String\": ...} or {\"Regex\": ...}");
  }

  // A Split/Punctuation "behavior" (dflt when absent and dflt is not null).
  SplitBehavior behavior(const json& j, const std::string& path, const char* dflt) const {
    const std::string b = dflt && (!j.contains("behavior") || j["behavior"].is_null())
                              ? std::string(dflt)
                              : str(j, path, "behavior");
    if (b == "Removed") return SplitBehavior::kRemoved;
    if (b == "Isolated") return SplitBehavior::kIsolated;
    if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
    if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
    if (b == "Contiguous") return SplitBehavior::kContiguous;
    fail(path + ".behavior", "unknown split behavior '" + b + "'");
  }

  // Metaspace's replacement: exactly one character.
  char32_t metaspace_replacement(const json& j, const std::string& path) const {
    const std::string r = str(j, path, "replacement");
    if (r.empty() || find_invalid_utf8(r) != std::string::npos ||
        utf8_length(static_cast<unsigned char>(r[0])) != r.size()) {
      fail(path + ".replacement", "expected exactly one character, got \"" + r + "\"");
    }
    return utf8_decode(r, 0);
  }

  // Metaspace's prepend_scheme (always | first | never); files from before it have
  // add_prefix_space (true: always).
  MetaspacePrepend metaspace_prepend(const json& j, const std::string& path) const {
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      const std::string p = str(j, path, "prepend_scheme");
      if (p == "always") return MetaspacePrepend::kAlways;
      if (p == "first") return MetaspacePrepend::kFirst;
      if (p == "never") return MetaspacePrepend::kNever;
      fail(path + ".prepend_scheme", "expected always, first or never, got '" + p + "'");
    }
    return flag(j, path, "add_prefix_space", true) ? MetaspacePrepend::kAlways
                                                   : MetaspacePrepend::kNever;
  }

  // The steps of a Sequence component: list `key` of j, each built by `one(item, path)`.
  template <typename T, typename One>
  std::vector<std::unique_ptr<T>> steps(const json& j, const std::string& path, const char* key,
                                        One&& one) const {
    const json& list = field(j, path, key);
    if (!list.is_array()) fail(path + "." + key, "expected a list");
    std::vector<std::unique_ptr<T>> out;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = one(list[i], path + "." + key + "[" + std::to_string(i) + "]");
      if (step) out.push_back(std::move(step));
    }
    return out;
  }

  std::unique_ptr<Normalizer> normalizer(const json& j, const std::string& path) const {
    if (j.is_null()) return nullptr;
    const std::string t = type_of(j, path);
    if (t == "NFC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNFC);
    if (t == "NFD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNFD);
    if (t == "NFKC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNFKC);
    if (t == "NFKD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNFKD);
    if (t == "Lowercase") return std::make_unique<LowercaseNormalizer>();
    if (t == "Prepend") return std::make_unique<PrependNormalizer>(str(j, path, "prepend"));
    if (t == "Strip") {
      return std::make_unique<StripNormalizer>(flag(j, path, "strip_left", true),
                                               flag(j, path, "strip_right", true));
    }
    if (t == "Replace") {
      auto [pat, is_regex] = pattern(j, path);
      return std::make_unique<ReplaceNormalizer>(pat, is_regex, str(j, path, "content"));
    }
    if (t == "BertNormalizer") {
      const bool lowercase = flag(j, path, "lowercase", true);
      return std::make_unique<BertNormalizer>(flag(j, path, "clean_text", true),
                                              flag(j, path, "handle_chinese_chars", true),
                                              flag(j, path, "strip_accents", lowercase), lowercase);
    }
    if (t == "Precompiled") {
      const json& m = field(j, path, "precompiled_charsmap");
      if (m.is_null()) return nullptr;  // some converters write null: nothing to apply
      if (!m.is_string()) fail(path + ".precompiled_charsmap", "expected a base64 string");
      if (m.get_ref<const std::string&>().empty()) return nullptr;
      const std::string bytes =
          base64_decode(m.get_ref<const std::string&>(), path + ".precompiled_charsmap");
      return std::make_unique<PrecompiledNormalizer>(bytes);
    }
    if (t == "Sequence") {
      return std::make_unique<SequenceNormalizer>(steps<Normalizer>(
          j, path, "normalizers",
          [&](const json& item, const std::string& p) { return normalizer(item, p); }));
    }
    fail(path, "normalizer type '" + t +
                   "' is not supported (supported: NFC, NFD, NFKC, NFKD, "
                   "Lowercase, Prepend, Replace, Strip, BertNormalizer, Precompiled, Sequence)");
  }

  std::unique_ptr<PreTokenizer> pre_tokenizer(const json& j, const std::string& path,
                                              bool& byte_level) const {
    if (j.is_null()) return nullptr;
    const std::string t = type_of(j, path);
    if (t == "ByteLevel") {
      byte_level = true;
      return std::make_unique<ByteLevelPreTokenizer>(flag(j, path, "add_prefix_space", true),
                                                     flag(j, path, "use_regex", true));
    }
    if (t == "Split") {
      auto [pat, is_regex] = pattern(j, path);
      return std::make_unique<SplitPreTokenizer>(pat, is_regex, behavior(j, path, nullptr),
                                                 flag(j, path, "invert", false));
    }
    if (t == "Digits") {
      return std::make_unique<DigitsPreTokenizer>(flag(j, path, "individual_digits", false));
    }
    if (t == "Whitespace") return std::make_unique<WhitespacePreTokenizer>();
    if (t == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPreTokenizer>();
    if (t == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
    if (t == "Punctuation") {
      return std::make_unique<PunctuationPreTokenizer>(behavior(j, path, "Isolated"));
    }
    if (t == "Metaspace") {
      return std::make_unique<MetaspacePreTokenizer>(
          metaspace_replacement(j, path), metaspace_prepend(j, path), flag(j, path, "split", true));
    }
    if (t == "Sequence") {
      return std::make_unique<SequencePreTokenizer>(steps<PreTokenizer>(
          j, path, "pretokenizers", [&](const json& item, const std::string& p) {
            return pre_tokenizer(item, p, byte_level);
          }));
    }
    fail(path, "pre_tokenizer type '" + t +
                   "' is not supported (supported: ByteLevel, Split, Digits, Whitespace, "
                   "WhitespaceSplit, BertPreTokenizer, Punctuation, Metaspace, Sequence)");
  }

  std::unique_ptr<Model> model(const json& j, int32_t max_id) const {
    const std::string t = type_of(j, "model");
    if (t == "BPE") return bpe(j, max_id);
    if (t == "WordPiece") return wordpiece(j, max_id);
    if (t == "Unigram") return unigram(j);
    fail("model.type",
         "model type '" + t + "' is not supported (supported: BPE, WordPiece, Unigram)");
  }

  // model.vocab as [[piece, score], ...] (id = index), unk_id, byte_fallback.
  std::unique_ptr<Model> unigram(const json& j) const {
    const json& vocab = field(j, "model", "vocab");
    if (!vocab.is_array()) fail("model.vocab", "expected a list of [piece, score]");
    if (vocab.size() > kMaxVocab) fail("model.vocab", "too many entries");
    std::vector<std::pair<std::string, double>> v;
    v.reserve(vocab.size());
    for (size_t i = 0; i < vocab.size(); ++i) {
      const json& e = vocab[i];
      const std::string p = "model.vocab[" + std::to_string(i) + "]";
      if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number()) {
        fail(p, "expected [piece, score]");
      }
      v.emplace_back(e[0].get<std::string>(), e[1].get<double>());
    }
    UnigramOptions o;
    if (j.contains("unk_id") && !j["unk_id"].is_null()) {
      const json& u = j["unk_id"];
      if (!u.is_number_integer() || u.get<int64_t>() < 0 ||
          u.get<int64_t>() >= static_cast<int64_t>(v.size())) {
        fail("model.unk_id", "expected an id in [0, " + std::to_string(v.size()) + ")");
      }
      o.unk_id = static_cast<int32_t>(u.get<int64_t>());
    }
    o.byte_fallback = flag(j, "model", "byte_fallback", false);
    try {
      return std::make_unique<Unigram>(std::move(v), o);
    } catch (const Error& e) {
      fail("model", e.message());
    }
  }

  // model.vocab as {token: id}: ids unique and below max_id, not necessarily contiguous.
  StringMap<int32_t> vocab_map(const json& j, int32_t max_id) const {
    const json& vocab = field(j, "model", "vocab");
    if (!vocab.is_object()) fail("model.vocab", "expected an object of token: id");
    if (vocab.size() > kMaxVocab)
      fail("model.vocab", "has " + std::to_string(vocab.size()) + " entries, more than the limit " +
                              std::to_string(kMaxVocab));
    int32_t top = -1;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const int32_t i = id(it.value(), "model.vocab[\"" + it.key() + "\"]");
      if (i >= max_id) {
        fail("model.vocab[\"" + it.key() + "\"]",
             "id " + std::to_string(i) + " is past the largest id this tokenizer may have, " +
                 std::to_string(max_id - 1));
      }
      top = std::max(top, i);
    }
    StringMap<int32_t> v;
    v.reserve(vocab.size());
    std::vector<uint8_t> seen(static_cast<size_t>(top + 1), 0);
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const int32_t i = it.value().get<int32_t>();
      if (seen[i])
        fail("model.vocab[\"" + it.key() + "\"]",
             "id " + std::to_string(i) + " is used by two tokens");
      if (it.key().empty()) fail("model.vocab", "an empty token (id " + std::to_string(i) + ")");
      seen[i] = 1;
      v.emplace(it.key(), i);
    }
    return v;
  }

  std::unique_ptr<Model> wordpiece(const json& j, int32_t max_id) const {
    WordPieceOptions o;
    if (auto unk = opt_str(j, "model", "unk_token")) o.unk_token = *unk;
    if (auto prefix = opt_str(j, "model", "continuing_subword_prefix")) {
      o.continuing_subword_prefix = *prefix;
    }
    if (j.contains("max_input_chars_per_word") && !j["max_input_chars_per_word"].is_null()) {
      const json& m = j["max_input_chars_per_word"];
      if (!m.is_number_integer() || m.get<int64_t>() <= 0) {
        fail("model.max_input_chars_per_word", "expected a positive integer");
      }
      o.max_input_chars_per_word = m.get<int64_t>();
    }
    StringMap<int32_t> v = vocab_map(j, max_id);
    try {
      return std::make_unique<WordPiece>(std::move(v), std::move(o));
    } catch (const Error& e) {
      fail("model", e.message());
    }
  }

  std::unique_ptr<Model> bpe(const json& j, int32_t max_id) const {
    if (j.contains("dropout") && !j["dropout"].is_null() &&
        !(j["dropout"].is_number() && j["dropout"].get<double>() == 0.0)) {
      fail("model.dropout", "BPE dropout (random merges) is not supported; set it to null");
    }
    StringMap<int32_t> v = vocab_map(j, max_id);
    const json& merges = field(j, "model", "merges");
    if (!merges.is_array()) fail("model.merges", "expected a list");
    std::vector<std::pair<std::string, std::string>> m;
    m.reserve(merges.size());
    for (size_t r = 0; r < merges.size(); ++r) {
      const json& e = merges[r];
      const std::string p = "model.merges[" + std::to_string(r) + "]";
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
          fail(p, "expected \"left right\", got \"" + s + "\"");
        }
        m.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        m.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
      } else {
        fail(p, "expected \"left right\" or [\"left\", \"right\"]");
      }
    }
    BpeOptions o;
    o.unk_token = opt_str(j, "model", "unk_token");
    o.continuing_subword_prefix = opt_str(j, "model", "continuing_subword_prefix");
    o.end_of_word_suffix = opt_str(j, "model", "end_of_word_suffix");
    if (o.continuing_subword_prefix && o.continuing_subword_prefix->empty())
      o.continuing_subword_prefix.reset();
    if (o.end_of_word_suffix && o.end_of_word_suffix->empty()) o.end_of_word_suffix.reset();
    o.fuse_unk = flag(j, "model", "fuse_unk", false);
    o.byte_fallback = flag(j, "model", "byte_fallback", false);
    o.ignore_merges = flag(j, "model", "ignore_merges", false);
    try {
      return std::make_unique<Bpe>(std::move(v), m, std::move(o), max_id);
    } catch (const Error& e) {
      fail("model", e.message());
    }
  }

  // One template (TemplateProcessing's single or pair): items {"Sequence": {"id": "A"|"B",
  // "type_id": n}} or {"SpecialToken": {"id": name, "type_id": n}} (or HF's string forms
  // "$A", "$B:1", "[CLS]", "[SEP]:1"), special names resolved through special_tokens.
  std::vector<TemplateItem> template_items(const json& list, const json& specials,
                                           const std::string& path, bool pair) const {
    if (!list.is_array()) fail(path, "expected a list");
    std::vector<TemplateItem> out;
    bool seen[2] = {false, false};
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string p = path + "[" + std::to_string(i) + "]";
      const json& item = list[i];
      std::string name;
      int32_t type_id = 0;
      bool is_sequence = false;
      if (item.is_object() && item.contains("Sequence")) {
        is_sequence = true;
        name = str(item["Sequence"], p + ".Sequence", "id");
        type_id = id(field(item["Sequence"], p + ".Sequence", "type_id"), p + ".Sequence.type_id");
      } else if (item.is_object() && item.contains("SpecialToken")) {
        name = str(item["SpecialToken"], p + ".SpecialToken", "id");
        type_id = id(field(item["SpecialToken"], p + ".SpecialToken", "type_id"),
                     p + ".SpecialToken.type_id");
      } else if (item.is_string()) {
        name = item.get<std::string>();
        if (const size_t colon = name.rfind(':'); colon != std::string::npos && colon > 0) {
          const std::string t = name.substr(colon + 1);
          if (t.empty() || t.size() > 9 || t.find_first_not_of("0123456789") != std::string::npos)
            fail(p, "bad type id in \"" + name + "\"");
          type_id = std::stoi(t);
          name.resize(colon);
        }
        if (!name.empty() && name[0] == '$') {
          is_sequence = true;
          name = name.size() == 1 ? "A" : name.substr(1);
          if (name == "a" || name == "b") name = name == "a" ? "A" : "B";
          if (name.size() <= 9 && name.find_first_not_of("0123456789") == std::string::npos) {
            type_id = std::stoi(name);  // "$1": sequence A with type id 1
            name = "A";
          }
        }
      } else {
        fail(p, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
      TemplateItem t;
      t.type_id = type_id;
      if (is_sequence) {
        if (name != "A" && name != "B") fail(p, "sequence id '" + name + "' is not A or B");
        t.sequence = name == "A" ? 0 : 1;
        if (t.sequence == 1 && !pair) fail(p, "the single template uses the pair's sequence B");
        seen[t.sequence] = true;
      } else {
        if (!specials.is_object() || !specials.contains(name)) {
          fail(path, "special token '" + name + "' has no entry in special_tokens");
        }
        const std::string sp = path.substr(0, path.rfind('.')) + ".special_tokens." + name;
        const json& ids = field(specials[name], sp, "ids");
        if (!ids.is_array() || ids.size() > 64) fail(sp + ".ids", "expected a list of ids");
        for (size_t k = 0; k < ids.size(); ++k) {
          t.ids.push_back(id(ids[k], sp + ".ids[" + std::to_string(k) + "]"));
        }
      }
      out.push_back(std::move(t));
    }
    if (pair && out.empty()) return out;  // no pair template: pairs are refused when encoded
    if (!seen[0] || (pair && !seen[1])) {
      fail(path, pair ? "the pair template must use both $A and $B" : "the template must use $A");
    }
    return out;
  }

  // The post-processor: a template for single sequences and one for pairs. ByteLevel only
  // adjusts offsets; a Sequence may hold at most one processor that adds tokens.
  void post_processor(const json& j, const std::string& path, Tokenizer::Impl& t) const {
    if (j.is_null()) return;
    const std::string type = type_of(j, path);
    if (type == "ByteLevel") return;
    if (type == "Sequence") {
      const json& list = field(j, path, "processors");
      if (!list.is_array()) fail(path + ".processors", "expected a list");
      for (size_t i = 0; i < list.size(); ++i) {
        post_processor(list[i], path + ".processors[" + std::to_string(i) + "]", t);
      }
      return;
    }
    if (t.post) fail(path, "a second post-processor that adds tokens is not supported");
    auto pair_id = [&](const char* key) {
      const json& p = field(j, path, key);
      if (!p.is_array() || p.size() != 2) fail(path + "." + key, "expected [token, id]");
      return id(p[1], path + "." + key + "[1]");
    };
    PostProcessor post;
    if (type == "BertProcessing" || type == "RobertaProcessing") {
      const int32_t cls = pair_id("cls"), sep = pair_id("sep");
      const bool bert = type == "BertProcessing";
      const int32_t b = bert ? 1 : 0;  // RoBERTa: every type id is 0
      post.single = {{-1, {cls}, 0}, {0, {}, 0}, {-1, {sep}, 0}};
      post.pair = {{-1, {cls}, 0}, {0, {}, 0}, {-1, {sep}, 0}};
      if (!bert) post.pair.push_back({-1, {sep}, 0});
      post.pair.push_back({1, {}, b});
      post.pair.push_back({-1, {sep}, b});
      post.plain = bert ? PostProcessor::Plain::kZeroOne : PostProcessor::Plain::kAllZero;
      t.post = std::move(post);
      return;
    }
    if (type == "TemplateProcessing") {
      const json& specials = field(j, path, "special_tokens");
      post.single = template_items(field(j, path, "single"), specials, path + ".single", false);
      post.pair = template_items(field(j, path, "pair"), specials, path + ".pair", true);
      t.post = std::move(post);
      return;
    }
    fail(path, "post_processor type '" + type +
                   "' is not supported (supported: ByteLevel, "
                   "TemplateProcessing, BertProcessing, RobertaProcessing, Sequence)");
  }

  std::unique_ptr<Decoder> decoder(const json& j, const std::string& path) const {
    if (j.is_null()) return nullptr;
    const std::string type = type_of(j, path);
    if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
    if (type == "Replace") {
      auto [pat, is_regex] = pattern(j, path);
      return std::make_unique<ReplaceDecoder>(pat, is_regex, str(j, path, "content"));
    }
    if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
    if (type == "Fuse") return std::make_unique<FuseDecoder>();
    if (type == "Strip") {
      const std::string c = str(j, path, "content");
      if (c.empty() || find_invalid_utf8(c) != std::string::npos ||
          utf8_length(static_cast<unsigned char>(c[0])) != c.size()) {
        fail(path + ".content", "expected exactly one character, got \"" + c + "\"");
      }
      return std::make_unique<StripDecoder>(utf8_decode(c, 0), count(j, path, "start"),
                                            count(j, path, "stop"));
    }
    if (type == "Metaspace") {
      return std::make_unique<MetaspaceDecoder>(
          metaspace_replacement(j, path), metaspace_prepend(j, path) != MetaspacePrepend::kNever);
    }
    if (type == "WordPiece") {
      const auto prefix = opt_str(j, path, "prefix");
      return std::make_unique<WordPieceDecoder>(prefix.value_or("##"),
                                                flag(j, path, "cleanup", true));
    }
    if (type == "Sequence") {
      return std::make_unique<SequenceDecoder>(
          steps<Decoder>(j, path, "decoders",
                         [&](const json& item, const std::string& p) { return decoder(item, p); }));
    }
    fail(path, "decoder type '" + type +
                   "' is not supported (supported: ByteLevel, Replace, ByteFallback, Fuse, "
                   "Strip, Metaspace, WordPiece, Sequence)");
  }

  // A non-negative count (Strip's start/stop), bounded: no allocation follows from it.
  size_t count(const json& j, const std::string& path, const char* key) const {
    const json& v = field(j, path, key);
    if (!v.is_number_unsigned() || v.get<uint64_t>() > (uint64_t{1} << 31)) {
      fail(path + "." + key, "expected a count (a non-negative integer)");
    }
    return static_cast<size_t>(v.get<uint64_t>());
  }

  std::unique_ptr<Tokenizer::Impl> load(const json& root) const {
    if (!root.is_object()) fail("(root)", "expected a JSON object");
    for (const char* key : {"truncation", "padding"}) {
      if (root.contains(key) && !root[key].is_null()) {
        std::fprintf(stderr,
                     "hfrun: note: %s: the %s section is ignored (hfrun sets sequence lengths "
                     "itself)\n",
                     file_.c_str(), key);
      }
    }
    auto t = std::make_unique<Tokenizer::Impl>();
    t->source = file_;
    // Added tokens first: together with the vocab they bound every id.
    if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
      const json& list = root["added_tokens"];
      if (!list.is_array()) fail("added_tokens", "expected a list");
      if (list.size() > kMaxVocab) fail("added_tokens", "too many entries");
      for (size_t i = 0; i < list.size(); ++i) {
        const std::string p = "added_tokens[" + std::to_string(i) + "]";
        AddedToken a;
        a.content = str(list[i], p, "content");
        if (a.content.empty()) fail(p + ".content", "empty token");
        if (find_invalid_utf8(a.content) != std::string::npos)
          fail(p + ".content", "not valid UTF-8");
        a.id = id(field(list[i], p, "id"), p + ".id");
        a.special = flag(list[i], p, "special", false);
        a.single_word = flag(list[i], p, "single_word", false);
        a.lstrip = flag(list[i], p, "lstrip", false);
        a.rstrip = flag(list[i], p, "rstrip", false);
        a.normalized = flag(list[i], p, "normalized", !a.special);
        t->added.push_back(std::move(a));
      }
    }
    const json& model = field(root, "(root)", "model");
    const json& vocab = field(model, "model", "vocab");
    if (!vocab.is_object() && !vocab.is_array())
      fail("model.vocab", "expected an object or a list");
    // Ids need not be contiguous (GPT-4o's tokenizer.json leaves 199998 and 200000-200017
    // unused; HF's models take any id), but stay within a slack of the number of tokens: every
    // table sized by an id (the id -> token list; vocab_size() = the largest id + 1, which sizes
    // a model's embedding by default) stays proportional to the file, so a few bytes cannot ask
    // for gigabytes.
    const size_t count = vocab.size() + t->added.size();
    const auto max_id =
        static_cast<int32_t>(std::min(count + std::max<size_t>(kIdSlack, count / 8), kMaxVocab));
    t->model = model_or_fail(model, max_id);
    assign_added_ids(*t, static_cast<int32_t>(t->model->vocab().size()));

    bool byte_level = false;
    t->normalizer = in_context(
        "normalizer", [&] { return normalizer(root.value("normalizer", json()), "normalizer"); });
    t->pre_tokenizer = in_context("pre_tokenizer", [&] {
      return pre_tokenizer(root.value("pre_tokenizer", json()), "pre_tokenizer", byte_level);
    });
    post_processor(root.value("post_processor", json()), "post_processor", *t);
    t->decoder =
        in_context("decoder", [&] { return decoder(root.value("decoder", json()), "decoder"); });

    // Ids -> tokens; an added token may reuse a vocab id only for the same string.
    int32_t size = 0;
    for (const auto& [tok, i] : t->model->vocab()) size = std::max(size, i + 1);
    for (const AddedToken& a : t->added) size = std::max(size, a.id + 1);
    t->id_to_token.assign(size, std::string());
    t->is_special.assign(size, 0);
    for (const auto& [tok, i] : t->model->vocab()) t->id_to_token[i] = tok;
    for (AddedToken& a : t->added) {
      a.match = a.content;
      if (a.normalized && t->normalizer) t->normalizer->apply(a.match);
      t->id_to_token[a.id] = a.match;
      t->is_special[a.id] = a.special;
    }
    // The post-processor adds only tokens the tokenizer has (a model's embedding is sized by
    // the vocabulary).
    if (t->post) {
      for (const auto* items : {&t->post->single, &t->post->pair}) {
        for (const TemplateItem& item : *items) {
          for (int32_t id : item.ids) {
            if (id >= size || t->id_to_token[static_cast<size_t>(id)].empty()) {
              fail("post_processor", "special token id " + std::to_string(id) +
                                         " is not in the vocabulary (size " + std::to_string(size) +
                                         ")");
            }
          }
        }
      }
    }
    if (byte_level) {
      std::string missing;
      for (int b = 0; b < 256; ++b) {
        if (!t->model->token_to_id(byte_to_char(static_cast<uint8_t>(b)))) {
          missing += (missing.empty() ? "" : ", ") + std::to_string(b);
        }
      }
      if (!missing.empty()) {
        fail("model.vocab", "byte-level tokenizer lacks the base tokens of bytes " + missing +
                                " (every byte must be encodable)");
      }
    }
    std::vector<const AddedToken*> raw, normalized;
    for (const AddedToken& a : t->added)
      (a.normalized && t->normalizer ? normalized : raw).push_back(&a);
    t->raw_matcher.build(raw);
    t->normalized_matcher.build(normalized);
    for (const char* name : {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|end|>"}) {
      if (t->eot) break;
      for (const AddedToken& a : t->added) {
        if (a.content == name) t->eot = a.id;
      }
      if (!t->eot) {
        if (auto i = t->model->token_to_id(name)) t->eot = *i;
      }
    }
    return t;
  }

 private:
  // Ids of added tokens as HF assigns them when it loads a tokenizer.json (the "id" fields only
  // order them): a token already in the model vocab takes its vocab id, a repeated token keeps
  // its first id, a new one gets max(largest added id + 1, model vocab size).
  static void assign_added_ids(Tokenizer::Impl& t, int32_t model_vocab_size) {
    std::stable_sort(t.added.begin(), t.added.end(),
                     [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
    std::vector<AddedToken> unique;
    int32_t max_added = -1;
    for (AddedToken& a : t.added) {
      auto same = std::find_if(unique.begin(), unique.end(),
                               [&](const AddedToken& u) { return u.content == a.content; });
      if (same != unique.end()) continue;
      if (auto vid = t.model->token_to_id(a.content)) {
        a.id = *vid;
      } else {
        a.id = max_added < 0 ? model_vocab_size : std::max(max_added + 1, model_vocab_size);
      }
      max_added = std::max(max_added, a.id);
      unique.push_back(std::move(a));
    }
    t.added = std::move(unique);
  }

  std::unique_ptr<Model> model_or_fail(const json& j, int32_t max_id) const {
    return model(j, max_id);
  }
  std::string file_;
};

}  // namespace

Tokenizer Tokenizer::from_json(std::string_view text, const std::string& source_name) {
  check_nesting(text, source_name);
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {  // parse errors, numbers out of range, ...
    HF_CHECK_INPUT(false, source_name, ": not valid JSON: ", e.what());
  }
  return Tokenizer(Loader(source_name).load(root));
}

}  // namespace hfrun::data
