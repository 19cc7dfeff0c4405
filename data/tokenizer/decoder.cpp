#include "data/tokenizer/decoder.h"

#include <cstdlib>

#include "data/tokenizer/byte_level.h"
#include "data/tokenizer/utf8.h"

namespace hfrun::data {
namespace {

// The code points of valid UTF-8 text.
std::u32string code_points(std::string_view s) {
  std::u32string out;
  for (size_t i = 0; i < s.size(); i += utf8_length(static_cast<unsigned char>(s[i]))) {
    out.push_back(utf8_decode(s, i));
  }
  return out;
}

std::string to_utf8(std::u32string_view cps) {
  std::string out;
  for (char32_t c : cps) utf8_append(out, c);
  return out;
}

// The byte a "<0xNN>" token stands for (two hex digits), or -1.
int byte_token(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  auto hex = [](char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace

void ByteLevelDecoder::decode_chain(std::vector<std::string>& tokens) const {
  // Each token's characters back to bytes; a token with a character outside the byte alphabet
  // (an added token, say) contributes its own UTF-8 bytes.
  std::string bytes;
  for (const std::string& t : tokens) {
    if (!byte_level_decode_token(t, bytes)) bytes.append(t);
  }
  tokens.assign(1, utf8_lossy(bytes));
}

void ByteFallbackDecoder::decode_chain(std::vector<std::string>& tokens) const {
  std::vector<std::string> out;
  std::string pending;  // bytes of the current run of byte tokens
  auto flush = [&] {
    if (pending.empty()) return;
    if (find_invalid_utf8(pending) == std::string::npos) {
      out.push_back(pending);
    } else {
      for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");  // U+FFFD
    }
    pending.clear();
  };
  for (std::string& t : tokens) {
    const int b = byte_token(t);
    if (b >= 0) {
      pending.push_back(static_cast<char>(b));
      continue;
    }
    flush();
    out.push_back(std::move(t));
  }
  flush();
  tokens = std::move(out);
}

void FuseDecoder::decode_chain(std::vector<std::string>& tokens) const {
  std::string all;
  for (const std::string& t : tokens) all += t;
  tokens.assign(1, std::move(all));
}

void StripDecoder::decode_chain(std::vector<std::string>& tokens) const {
  for (std::string& t : tokens) {
    const std::u32string cps = code_points(t);
    size_t begin = 0, end = cps.size();
    while (begin < end && begin < start_ && cps[begin] == content_) ++begin;
    for (size_t n = 0; n < stop_ && end > begin && cps[end - 1] == content_; ++n) --end;
    if (begin != 0 || end != cps.size())
      t = to_utf8(std::u32string_view(cps).substr(begin, end - begin));
  }
}

void MetaspaceDecoder::decode_chain(std::vector<std::string>& tokens) const {
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::u32string out;
    for (char32_t c : code_points(tokens[i])) {
      // Every replacement in the first token goes (HF drops them all, not just a leading one).
      if (c != replacement_) {
        out.push_back(c);
      } else if (!(i == 0 && prepend_)) {
        out.push_back(U' ');
      }
    }
    tokens[i] = to_utf8(out);
  }
}

void WordPieceDecoder::decode_chain(std::vector<std::string>& tokens) const {
  static const std::pair<const char*, const char*> kCleanup[] = {
      {" .", "."},   {" ?", "?"},     {" !", "!"},    {" ,", ","},
      {" ' ", "'"},  {" n't", "n't"}, {" 'm", "'m"},  {" do not", " don't"},
      {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::string& t = tokens[i];
    if (i != 0) {
      if (t.compare(0, prefix_.size(), prefix_) == 0) {
        t.erase(0, prefix_.size());
      } else {
        t = " " + t;  // (insert(0, " ") trips a GCC 12 -Wrestrict false positive)
      }
    }
    if (!cleanup_) continue;
    for (const auto& [from, to] : kCleanup) {
      const std::string_view f(from), r(to);
      std::string s;
      size_t prev = 0;
      for (size_t at = t.find(f); at != std::string::npos; at = t.find(f, at + f.size())) {
        s.append(t, prev, at - prev);
        s.append(r);
        prev = at + f.size();
      }
      if (prev == 0) continue;
      s.append(t, prev, std::string::npos);
      t = std::move(s);
    }
  }
}

}  // namespace hfrun::data
