// UTF-8 helpers for the tokenizer: validation (with the offset of the first bad byte),
// code point iteration and encoding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace hfrun::data {

// Offset of the first byte that does not start a valid UTF-8 sequence (overlong forms,
// surrogates and values above U+10FFFF are invalid), or npos when the text is valid.
size_t find_invalid_utf8(std::string_view text);

// Length in bytes of the (valid) UTF-8 sequence starting with byte b.
inline size_t utf8_length(unsigned char b) {
  return b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xe ? 3 : 4;
}

// Decodes the code point at text[i] (text must be valid UTF-8).
char32_t utf8_decode(std::string_view text, size_t i);
void utf8_append(std::string& out, char32_t cp);

// Replaces each invalid UTF-8 sequence by U+FFFD (as Rust's String::from_utf8_lossy).
std::string utf8_lossy(std::string_view bytes);

}  // namespace hfrun::data
