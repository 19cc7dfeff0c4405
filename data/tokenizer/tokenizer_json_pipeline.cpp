// tokenizer.json's normalizer, pre_tokenizer and decoder sections.
#include <string>

#include "data/tokenizer/precompiled.h"
#include "data/tokenizer/tokenizer_json_loader.h"
#include "data/tokenizer/utf8.h"

namespace hfrun::data::detail {

std::pair<std::string, bool> JsonLoader::pattern(const json& obj, const std::string& path) const {
  const json& p = field(obj, path, "pattern");
  if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) return {p["Regex"], true};
  if (p.is_object() && p.contains("String") && p["String"].is_string()) return {p["String"], false};
  fail(path + ".pattern", "expected {\"String\": ...} or {\"Regex\": ...}");
}

SplitBehavior JsonLoader::behavior(const json& j, const std::string& path, const char* dflt) const {
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

char32_t JsonLoader::metaspace_replacement(const json& j, const std::string& path) const {
  const std::string r = str(j, path, "replacement");
  if (r.empty() || find_invalid_utf8(r) != std::string::npos ||
      utf8_length(static_cast<unsigned char>(r[0])) != r.size()) {
    fail(path + ".replacement", "expected exactly one character, got \"" + r + "\"");
  }
  return utf8_decode(r, 0);
}

MetaspacePrepend JsonLoader::metaspace_prepend(const json& j, const std::string& path) const {
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

template <typename T, typename One>
std::vector<std::unique_ptr<T>> JsonLoader::steps(const json& j, const std::string& path,
                                                  const char* key, One&& one) const {
  const json& list = field(j, path, key);
  if (!list.is_array()) fail(path + "." + key, "expected a list");
  std::vector<std::unique_ptr<T>> out;
  for (size_t i = 0; i < list.size(); ++i) {
    auto step = one(list[i], path + "." + key + "[" + std::to_string(i) + "]");
    if (step) out.push_back(std::move(step));
  }
  return out;
}

std::unique_ptr<Normalizer> JsonLoader::normalizer(const json& j, const std::string& path) const {
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

std::unique_ptr<PreTokenizer> JsonLoader::pre_tokenizer(const json& j, const std::string& path,
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
    return std::make_unique<SequencePreTokenizer>(
        steps<PreTokenizer>(j, path, "pretokenizers", [&](const json& item, const std::string& p) {
          return pre_tokenizer(item, p, byte_level);
        }));
  }
  fail(path, "pre_tokenizer type '" + t +
                 "' is not supported (supported: ByteLevel, Split, Digits, Whitespace, "
                 "WhitespaceSplit, BertPreTokenizer, Punctuation, Metaspace, Sequence)");
}

std::unique_ptr<Decoder> JsonLoader::decoder(const json& j, const std::string& path) const {
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

size_t JsonLoader::count(const json& j, const std::string& path, const char* key) const {
  const json& v = field(j, path, key);
  if (!v.is_number_unsigned() || v.get<uint64_t>() > (uint64_t{1} << 31)) {
    fail(path + "." + key, "expected a count (a non-negative integer)");
  }
  return static_cast<size_t>(v.get<uint64_t>());
}

}  // namespace hfrun::data::detail
