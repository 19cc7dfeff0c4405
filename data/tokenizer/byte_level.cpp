#include "data/tokenizer/byte_level.h"

#include <vector>

#include "data/tokenizer/utf8.h"

namespace hfrun::data {
namespace {

struct Alphabet {
  std::array<std::string, 256> chars;
  std::vector<int16_t> byte_of;  // indexed by code point (< 512)

  Alphabet() : byte_of(512, -1) {
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xa1; b <= 0xac; ++b) direct[b] = true;
    for (int b = 0xae; b <= 0xff; ++b) direct[b] = true;
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      char32_t cp = direct[b] ? static_cast<char32_t>(b) : static_cast<char32_t>(next++);
      utf8_append(chars[b], cp);
      byte_of[cp] = static_cast<int16_t>(b);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

}  // namespace

const std::string& byte_to_char(uint8_t b) {
  return alphabet().chars[b];
}

void byte_level_encode(std::string_view bytes, std::string& out) {
  const Alphabet& a = alphabet();
  for (char c : bytes) out += a.chars[static_cast<uint8_t>(c)];
}

int char_to_byte(char32_t cp) {
  const Alphabet& a = alphabet();
  return cp < a.byte_of.size() ? a.byte_of[cp] : -1;
}

bool byte_level_decode_token(std::string_view token, std::string& out) {
  const size_t mark = out.size();
  for (size_t i = 0; i < token.size(); i += utf8_length(static_cast<unsigned char>(token[i]))) {
    int b = char_to_byte(utf8_decode(token, i));
    if (b < 0) {
      out.resize(mark);
      return false;
    }
    out.push_back(static_cast<char>(b));
  }
  return true;
}

}  // namespace hfrun::data
